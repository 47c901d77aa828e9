"""Small adapters between the batch stages and Faust: partition-bound table access, batched
sends that wait for acknowledgements, and dead letters.

Why ``bound_to``: a Faust table decides a key's store partition and changelog partition from
the *current event*, a context variable Faust sets only while iterating a stream one event at a
time. Batches (``take_events``) are processed outside that iteration, so each key is read and
written with the context bound to an event of the key's own partition.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faust
import orjson
import rocksdict
from faust.streams import _current_event
from faust.types import TP

from lpt.logs import get_logger
from streams.items import MAX_MESSAGE_BYTES, chunks

log = get_logger(__name__)


@contextmanager
def bound_to(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def table_get(table: faust.types.TableT[bytes, bytes], event: Any, key: str) -> Any:
    """JSON value of ``key`` read in ``event``'s partition (None when absent)."""
    with bound_to(event):
        raw = table.data.get(key.encode())
    return None if raw is None else json.loads(raw)


def read_many(
    table: faust.types.TableT[bytes, bytes], event: Any, keys: Sequence[str]
) -> list[bytes | None]:
    """Raw values of ``keys`` in ``event``'s partition, in one RocksDB multi-get (a batch reads
    thousands of keys; Faust's per-key path costs more than the read itself)."""
    store: Any = table.data
    raw_keys = [k.encode() for k in keys]
    db_for = getattr(store, "_db_for_partition", None)
    if db_for is None:  # a store without partition databases (memory): Faust's own path
        with bound_to(event):
            return [store.get(k) for k in raw_keys]
    values: list[bytes | None] = db_for(event.message.partition).get(raw_keys)
    return values


def table_put(table: faust.types.TableT[bytes, bytes], event: Any, key: str, value: Any) -> None:
    with bound_to(event):
        table[key.encode()] = json.dumps(value, separators=(",", ":")).encode()


def table_put_raw(
    table: faust.types.TableT[bytes, bytes], event: Any, key: str, value: bytes
) -> None:
    with bound_to(event):
        table[key.encode()] = value


def dumps(value: Any) -> bytes:
    """Compact JSON (orjson: ``-inf`` becomes null, see ``scoring.cellstate.thaw``)."""
    return orjson.dumps(value)


async def send_lines(
    topic: faust.types.TopicT, partition: int, parts: Sequence[bytes], pending: list[Any]
) -> None:
    """Queue newline-separated JSON documents (JSON text never holds a raw newline), so a
    reader can keep each document's bytes without encoding it again."""
    for group in chunks(parts):
        pending.append(await topic.send(value=b"\n".join(group), partition=partition))


class TableWriter:
    """Writes a batch of table values: the local store, then the changelog records in record
    batches straight to the producer (``create_batch``/``send_batch``), waiting for the acks.

    Why not ``table[key] = value``: Faust sends each changelog record through its producer
    buffer one ``send()`` at a time; at one write per event that buffer fills and Faust stops
    delivering messages until it drains (measured: the worker crawled at ~1k events/s, CPU
    spent on per-message futures). The records here are the ones Faust would write (same topic,
    partition, raw key and value), so Faust's own recovery restores them unchanged.
    """

    def __init__(self, app: faust.App, table: faust.types.TableT[bytes, bytes]) -> None:
        self.app = app
        self.table = table

    async def write(self, rows: Sequence[tuple[Any, str, bytes]]) -> None:
        """``rows``: (event of the key's partition, key, value bytes)."""
        if not rows:
            return
        by_partition: dict[int, list[tuple[Any, bytes, bytes]]] = {}
        for event, name, data in rows:
            by_partition.setdefault(event.message.partition, []).append(
                (event, name.encode(), data)
            )
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        topic = self.table.changelog_topic.get_topic_name()
        store: Any = self.table.data
        pending: list[tuple[int, int, Any]] = []
        db_for = getattr(store, "_db_for_partition", None)
        for partition, items in sorted(by_partition.items()):
            if db_for is None:
                with bound_to(items[0][0]):
                    for _, key, value in items:
                        store[key] = value
            else:
                local = rocksdict.WriteBatch(raw_mode=True)
                for _, key, value in items:
                    local.put(key, value)
                db_for(partition).write(local)
            batch, count = producer.create_batch(), 0
            for _, key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    fut = await producer.send_batch(batch, topic, partition=partition)
                    pending.append((partition, count, fut))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            pending.append(
                (partition, count, await producer.send_batch(batch, topic, partition=partition))
            )
        for partition, count, fut in pending:
            meta = await fut
            # What Faust's own changelog callback records: recovery resumes after it.
            store.set_persisted_offset(TP(topic, partition), meta.offset + count - 1)


def encode_lists(items: Sequence[Any], limit: int = MAX_MESSAGE_BYTES) -> Iterator[bytes]:
    """JSON arrays of consecutive ``items``, each under ``limit`` bytes (one item may exceed
    it), each encoded by one orjson call: a list too big is halved and encoded again, which
    costs less than encoding every item on its own to measure it."""
    data = orjson.dumps(items)
    if len(data) <= limit or len(items) <= 1:
        yield data
        return
    half = len(items) // 2
    yield from encode_lists(items[:half], limit)
    yield from encode_lists(items[half:], limit)


async def send_all(pending: list[Any]) -> None:
    """Wait until every send was acknowledged (raises on a failed send)."""
    if pending:
        await asyncio.gather(*pending)


async def send_chunked(
    topic: faust.types.TopicT,
    partition: int,
    head: bytes,
    items: Sequence[Any],
    pending: list[Any],
) -> None:
    """Queue ``head + [items...] + '}'`` messages: ``head`` opens a JSON object whose last
    member is the list (e.g. ``b'{"src":"l3","d":'``)."""
    for group in encode_lists(items, MAX_MESSAGE_BYTES - len(head) - 1):
        pending.append(await topic.send(value=head + group + b"}", partition=partition))
