"""Stream worker health against the real broker: the stuck-partition watchdog
(streams/watchdog.py), the lag ``lpt wait-idle`` waits on, and the worker's child processes
(input source, scorer)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from lpt.kafka import make_producer, topic_name
from lpt.settings import Settings
from schemas.topics import CRIME, NOTIFICATIONS_REQUESTED, SETUPS
from streams import watchdog as wd
from streams.lag import group_lag, stream_groups
from tests.streams_helpers import Worker, child_roles, proc_stat


class Recording(wd.StuckPartitionWatchdog):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.restarts: list[tuple[TopicPartition, int, int]] = []

    def restart(self, tp: TopicPartition, committed: int, end: int) -> None:
        self.restarts.append((tp, committed, end))


async def _commit(settings: Settings, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def _produce(settings: Settings, topic: str, counts: dict[int, int]) -> None:
    """``counts[p]`` messages into partition ``p`` of ``topic``."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for partition, n in counts.items():
            for i in range(n):
                await producer.send_and_wait(topic, b"x%d" % i, partition=partition)
    finally:
        await producer.stop()


async def test_a_partition_whose_commit_does_not_move_is_judged_stuck(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings
    monkeypatch.setattr(wd, "STUCK_SECONDS", 1.0)
    topic = topic_name(CRIME, settings)
    waiting, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await _produce(settings, topic, {0: 5})
    group = f"{settings.topic_prefix}watchdog"
    await _commit(settings, group, waiting, 2)
    rebalancing = False

    def assigned() -> set[TopicPartition] | None:
        return None if rebalancing else {waiting, empty}

    dog = Recording(settings.bootstrap_servers, group, [topic], assigned)
    try:
        await dog.check()
        assert dog.restarts == []  # first sight of the waiting messages
        await asyncio.sleep(1.2)
        await _commit(settings, group, waiting, 3)  # progress resets the clock
        await dog.check()
        assert dog.restarts == []
        rebalancing = True
        await asyncio.sleep(1.2)
        await dog.check()  # nothing is judged during a rebalance, and it forgets what it saw
        assert dog.restarts == []
        rebalancing = False
        await dog.check()
        await asyncio.sleep(1.2)
        await dog.check()
        # Only the partition with messages waiting behind an unmoving commit; never the empty one.
        assert dog.restarts == [(waiting, 3, 5)]
    finally:
        await dog.close()


async def test_a_partition_left_behind_by_its_siblings_is_judged_stuck_sooner(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust#629's signature: the stage works (a sibling partition's commit moves) while one
    partition is never fetched. That restarts after ``LEFT_BEHIND_SECONDS``, not
    ``STUCK_SECONDS``."""
    settings = isolated_settings
    monkeypatch.setattr(wd, "STUCK_SECONDS", 60.0)
    monkeypatch.setattr(wd, "LEFT_BEHIND_SECONDS", 1.0)
    topic = topic_name(CRIME, settings)
    left, busy = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await _produce(settings, topic, {0: 5, 1: 5})
    group = f"{settings.topic_prefix}watchdog"
    await _commit(settings, group, left, 0)
    await _commit(settings, group, busy, 1)
    dog = Recording(settings.bootstrap_servers, group, [topic], lambda: {left, busy})
    try:
        await dog.check()
        await asyncio.sleep(1.2)
        await dog.check()
        assert dog.restarts == []  # both still, nothing moved: the long limit applies
        await _commit(settings, group, busy, 3)
        await dog.check()
        assert dog.restarts == [(left, 0, 5)]  # its sibling moved while it waited
    finally:
        await dog.close()


async def test_stream_input_lag_counts_only_the_topics_the_stream_reads(
    isolated_settings: Settings,
) -> None:
    """A set-up or a notification request (input topics of other consumers) is never lag of the
    stream worker's input group: ``lpt wait-idle`` would wait for ever."""
    settings = isolated_settings
    producer = make_producer(settings)
    await producer.start()
    try:
        for spec in (SETUPS, NOTIFICATIONS_REQUESTED):
            await producer.send_and_wait(topic_name(spec, settings), b"{}")
        groups = stream_groups(settings)
        assert (await group_lag(settings, groups))[groups[0]] == 0
        await producer.send_and_wait(topic_name(CRIME, settings), b"{}")
        assert (await group_lag(settings, groups))[groups[0]] == 1
    finally:
        await producer.stop()


def _nice(pid: int) -> int | None:
    fields = proc_stat(pid)
    return None if fields is None else int(fields[16])


def _alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


async def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_the_child_processes_are_restarted_and_die_with_their_worker(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """``lpt worker`` runs the input source and the scorer as child processes: a crashed child
    comes back, and a SIGKILLed worker leaves no orphan in the groups (an orphan scorer would
    score beside the next one, an orphan input source would hold partitions). The children
    run at the lower CPU priority ``LPT_STREAM_CHILD_NICE`` sets."""
    worker = Worker(isolated_settings, tmp_path / "home")
    roles = {"input", "scorer"}
    try:
        await _until(lambda: set(child_roles(worker.proc.pid)) == roles, "the two child processes")
        first = child_roles(worker.proc.pid)
        base = _nice(worker.proc.pid)
        assert base is not None
        expected = base + isolated_settings.stream_child_nice
        await _until(
            lambda: all(_nice(pid) == expected for pid in first.values()),
            f"the children at nice {expected}",
        )
        assert isolated_settings.stream_child_nice > 0 and _nice(worker.proc.pid) == base
        for pid in first.values():
            os.kill(pid, signal.SIGKILL)
        await _until(
            lambda: set(child_roles(worker.proc.pid, first.values())) == roles,
            "two new child processes",
        )
        second = child_roles(worker.proc.pid, first.values())
        assert worker.proc.poll() is None, worker.tail()
        worker.kill()
        await _until(
            lambda: not any(_alive(pid) for pid in second.values()), "the children to die", 10
        )
    finally:
        worker.kill()


def test_wait_idle_says_which_server_it_cannot_reach(stack: Settings) -> None:
    """``lpt wait-idle`` with Kafka unreachable: it keeps waiting (a broker restart is no reason
    to give up), says so while it waits, and at the timeout exits 1 naming the address, with
    no traceback and no unclosed Kafka clients."""
    import subprocess
    import sys

    env = dict(os.environ)
    env.update(LPT_DATABASE_URL=stack.dsn, LPT_KAFKA_BOOTSTRAP="127.0.0.1:1", LPT_LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-m", "lpt.cli", "wait-idle", "--timeout", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert '"server": "kafka"' in done.stderr and "streams.wait_idle_unreachable" in done.stderr
    assert "lpt wait-idle: cannot reach Kafka at 127.0.0.1:1." in done.stderr
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr
