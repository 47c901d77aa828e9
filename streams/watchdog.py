"""Restart the worker when Faust stops fetching one of its partitions.

Why: faust-streaming has an open bug (faust-streaming/faust#629) where, after a rebalance, a
partition can stay assigned to a worker that never sends a fetch request for it again: its
messages wait forever while the worker looks healthy. We saw it in the two-worker test (lag
stuck on an internal topic for minutes, nothing in the logs).

How: every ``CHECK_SECONDS`` the watchdog reads, for the internal partitions assigned to this
worker, the group's committed offset and the partition's end offset. A partition with messages
waiting whose committed offset has not moved for ``STUCK_SECONDS``, or for
``LEFT_BEHIND_SECONDS`` while another partition of its topic on this worker did move (the bug's
own signature: the worker is busy, one partition is never fetched; seen at the start of a
backfill, which then lost 45 s), means the worker is stuck (never judged while a rebalance or
table recovery is under way); it then replaces itself with a fresh process
(``exec``: same pid, so ``lpt up``'s pid file and a supervisor stay valid). A restart is safe at
any moment: it is exactly the SIGKILL recovery the stream tests check (state in RocksDB and the
changelogs, at-least-once input made exact by the ledgers and watermarks).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from lpt.kafka import offsets_of
from lpt.logs import get_logger

log = get_logger(__name__)

CHECK_SECONDS = 5.0
#: No partition of the topic moved either: the whole stage may just be slow (a long batch, the
#: broker or a disk being slow), so wait long before restarting.
STUCK_SECONDS = 45.0
#: Its siblings moved: the stage works, this partition is not being fetched.
LEFT_BEHIND_SECONDS = 15.0


class StuckPartitionWatchdog:
    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Collection[str],
        assigned: Callable[[], set[TopicPartition] | None],
    ) -> None:
        """``assigned`` returns this worker's partitions, or None while a rebalance or table
        recovery is under way (nothing is judged then)."""
        self.bootstrap = bootstrap
        self.group = group
        self.topics = set(topics)
        self.assigned = assigned
        #: partition -> (committed offset, when it was first seen with messages waiting)
        self.waiting: dict[TopicPartition, tuple[int, float]] = {}
        #: partition -> (committed offset, when it was first seen at that offset)
        self.moved: dict[TopicPartition, tuple[int, float]] = {}
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def check(self) -> None:
        """One check (called from a timer); restarts the process if a partition is stuck."""
        mine = self.assigned()
        tps = sorted(tp for tp in mine or () if tp.topic in self.topics)
        if not tps:
            self.waiting.clear()
            self.moved.clear()
            return
        if self.admin is None or self.consumer is None:
            self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await self.admin.start()
            await self.consumer.start()
        committed = await self.admin.list_consumer_group_offsets(self.group)
        _, ends = await offsets_of(self.consumer, tps)
        now = time.monotonic()
        offsets: dict[TopicPartition, int] = {}
        for tp in tps:
            meta = committed.get(tp)
            offsets[tp] = meta.offset if meta is not None and meta.offset >= 0 else 0
            last = self.moved.get(tp)
            if last is None or last[0] != offsets[tp]:
                self.moved[tp] = (offsets[tp], now)
        seen: dict[TopicPartition, tuple[int, float]] = {}
        for tp, done in offsets.items():
            if ends.get(tp, 0) <= done:
                continue
            before = self.waiting.get(tp)
            since = before[1] if before is not None and before[0] == done else now
            seen[tp] = (done, since)
            siblings_moved = any(
                at > since for other, (_, at) in self.moved.items() if other.topic == tp.topic
            )
            limit = LEFT_BEHIND_SECONDS if siblings_moved else STUCK_SECONDS
            if now - since >= limit:
                self.restart(tp, done, ends[tp])
        self.waiting = seen
        self.moved = {tp: self.moved[tp] for tp in tps}

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()
        if self.consumer is not None:
            await self.consumer.stop()
        self.admin = self.consumer = None

    def restart(self, tp: TopicPartition, committed: int, end: int) -> None:
        log.error(
            "streams.partition_stuck_restarting",
            topic=tp.topic,
            partition=tp.partition,
            committed=committed,
            end=end,
            stuck_seconds=round(time.monotonic() - self.waiting.get(tp, (0, time.monotonic()))[1]),
        )
        restart_process()


def restart_process() -> None:
    """Replace this process with a fresh one running the same command (same pid, so ``lpt
    up``'s pid file, a supervisor and the children's death signal stay valid)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "lpt.cli", *sys.argv[1:]])
