"""``/metrics`` of the web service: its own metrics, consumer lag, and every worker's metrics.

Design (the simplest that stays correct as workers come and go):

* Each worker serves its own ``/metrics`` (``lpt/metrics_server.py``) and registers its URL in
  ``ops_workers`` with a heartbeat.
* ``GET /metrics`` on the web service refreshes the lag and offset gauges (``api.ops.lag``),
  then returns its own registry plus a scrape of every live registered worker, each sample
  labelled ``lpt_process`` (``web`` or the worker's name) so series never collide. One scrape
  target therefore sees the whole system: what a single Prometheus job, or a person with curl,
  needs.
* ``GET /metrics?scope=local`` returns only this process's registry (with lag). Use it when
  Prometheus scrapes the workers directly (``infra/prometheus/prometheus.yml`` does, with DNS
  discovery) or when several web replicas run, so nothing is counted twice.

``_created`` samples are dropped from the aggregate: the text parser turns them into gauge
families of their own, which would clash with the counters they belong to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lpt.logs import get_logger
from lpt.metrics import REGISTRY, WORKER_HEARTBEAT_AGE, WORKER_UP
from lpt.metrics_server import STALE_AFTER_SECONDS

from .workers import WorkerRow

log = get_logger(__name__)

PROCESS_LABEL = "lpt_process"
SCRAPE_TIMEOUT_S = 3.0


class _Families:
    """A collector over already-built metric families (for ``generate_latest``)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge(parts: Iterable[tuple[str, str]]) -> bytes:
    """Merge Prometheus text expositions, labelling each sample with the process it came from."""
    families: dict[str, Metric] = {}
    for process, text in parts:
        for fam in text_string_to_metric_families(text):
            if fam.name.endswith("_created"):
                continue
            target = families.get(fam.name)
            if target is None:
                target = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            elif target.type != fam.type:
                continue  # a process with another catalogue version: keep the first meaning
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                labels = {**s.labels, PROCESS_LABEL: process}
                target.samples.append(Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


def export_heartbeats(workers: list[WorkerRow]) -> None:
    """``lpt_worker_heartbeat_age_seconds`` of every worker not stopped cleanly."""
    WORKER_HEARTBEAT_AGE.clear()
    for w in workers:
        if w.stopped_at is None:
            WORKER_HEARTBEAT_AGE.labels(w.name, w.kind).set(w.heartbeat_age_s)


async def scrape_workers(
    session: aiohttp.ClientSession, workers: list[WorkerRow]
) -> list[tuple[str, str]]:
    """Scrape every live worker; sets ``lpt_worker_up`` for each."""
    WORKER_UP.clear()
    live = [w for w in workers if w.stopped_at is None]

    async def one(w: WorkerRow) -> tuple[str, str] | None:
        if w.heartbeat_age_s > STALE_AFTER_SECONDS:
            WORKER_UP.labels(w.name, w.kind).set(0)
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
            async with session.get(w.url, timeout=timeout) as resp:
                resp.raise_for_status()
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("ops.worker_scrape_failed", worker=w.name, error=type(exc).__name__)
            WORKER_UP.labels(w.name, w.kind).set(0)
            return None
        WORKER_UP.labels(w.name, w.kind).set(1)
        return w.name, text

    results = await asyncio.gather(*(one(w) for w in live))
    return [r for r in results if r is not None]


def local_response() -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def aggregate_response(worker_texts: list[tuple[str, str]]) -> web.Response:
    own = generate_latest(REGISTRY).decode()
    body = merge([("web", own), *worker_texts])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
