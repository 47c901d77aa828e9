"""``lpt worker``: one stream worker = three processes: input, stages and scorer.

Why processes: each part is CPU-bound Python, and one process uses one core. The input source
(decode and validate, ~20% of the pipeline's CPU) shares no state with the stages, so it runs
beside them as a plain aiokafka program; the scorer keeps the whole force in memory.

Roles (``--role``):

* ``all`` (default): run the stages (ledger, cells) here, and the input source and the scorer
  in child processes, each restarted if it exits. The children die with this process
  (``PR_SET_PDEATHSIG``), so a SIGKILL or a watchdog ``exec`` never leaves an orphan behind.
* ``input`` / ``stages`` / ``scorer``: one part only, for deployments that scale them apart.

The children run at a lower CPU priority (``LPT_STREAM_CHILD_NICE``, default 5). Why: in a
backfill the stages are the slowest part, and on a machine with fewer free cores than busy
processes the input source would otherwise race ahead (it only fills the ``entities`` backlog)
and the scorer re-rank more often than needed (a scorer given less CPU takes bigger batches,
and its work per batch is per force, not per event). Live, the machine has room and the
priority changes nothing.

Each process on a host takes its own slot directory under ``$LPT_HOME/streams/<app id>`` (a file
lock), so several workers can share a machine and a restarted worker finds its state again.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import faust

from lpt.kafka import ensure_topics
from lpt.logs import get_logger
from lpt.metrics import GC_PAUSE_SECONDS
from lpt.metrics_server import worker_metrics
from lpt.settings import Settings, get_settings
from streams.app import (
    app_id,
    create_app,
    ensure_internal_topics,
    internal_topics,
    scorer_app_id,
)
from streams.scorer_app import create_scorer_app
from streams.source import InputSource

log = get_logger(__name__)

#: The child processes of ``--role all``, with the offset of each one's metrics port from
#: ``LPT_METRICS_PORT`` (when that is set; else each picks a free port).
CHILDREN = {"scorer": 1, "input": 2}
_PR_SET_PDEATHSIG = 1
#: Environment variable naming the parent of a child process (it exits if the parent is gone).
PARENT_ENV = "LPT_WORKER_PARENT"


def take_slot(root: Path) -> tuple[Path, TextIO]:
    """The first free slot directory under ``root`` (held by an flock for our lifetime)."""
    root.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        path = root / f"slot-{slot}"
        path.mkdir(exist_ok=True)
        handle = open(path / "lock", "w")  # noqa: SIM115 - held open until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        return path, handle


def die_with_parent(parent: int) -> bool:
    """Arm SIGKILL for when the thread that started this process ends; False if the parent
    ``parent`` is already gone (it died before the signal was armed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent


class ChildProcess:
    """Runs ``lpt worker --role <role>`` beside this process and restarts it if it exits.

    The child is started from this thread and arms its death signal at start-up
    (:func:`die_with_parent`), which ties it to this thread: it ends with the process (SIGKILL,
    ``exec``) and when :meth:`stop` returns."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{role}-child", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        port = self.settings.metrics_port
        env["LPT_METRICS_PORT"] = str(port + CHILDREN[self.role] if port else 0)
        return subprocess.Popen(
            [sys.executable, "-m", "lpt.cli", "worker", "--role", self.role],
            env=env,
        )

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            self.proc = self._spawn()
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.warning("streams.child_exited", role=self.role, code=code)
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            self._stopping.wait(delay)

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(5)


def _time_gc() -> None:
    """Record each collection's pause in ``lpt_gc_pause_seconds`` (a full collection walks
    every live object: with a year of cell states that is the longest pause a worker has)."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            GC_PAUSE_SECONDS.labels(generation=str(info["generation"])).observe(pause)

    gc.callbacks.append(callback)


def _tune_gc() -> None:
    # The stages allocate millions of small, short-lived lists and dicts; Python's default
    # collector thresholds make it scan them every 700 allocations. Start-up objects (modules,
    # reference data) are frozen out of the scans, and young collections run less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    _time_gc()


async def _run_input(settings: Settings) -> None:
    """The input source alone (``--role input``), until SIGTERM/SIGINT."""
    source = InputSource(settings, app_id(settings), internal_topics(settings)["entities"])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, source.stop)
    async with worker_metrics(settings, "input"):
        await source.run()


def _lower_priority(nice: int) -> None:
    """Run this child at a lower CPU priority than the stages (see the module docstring)."""
    try:
        os.nice(nice)
    except OSError as exc:  # a negative value needs privileges: run as we are
        log.warning("streams.child_nice_refused", nice=nice, error=str(exc))


def _run_app(app: faust.App) -> int:
    _tune_gc()
    worker = faust.Worker(app, loglevel="WARN", redirect_stdouts=False, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cli(args: argparse.Namespace) -> int:
    """Run one stream worker in the foreground until SIGTERM/SIGINT."""
    role = getattr(args, "role", "all")
    settings = get_settings()
    parent = os.environ.pop(PARENT_ENV, None)
    if parent and not die_with_parent(int(parent)):
        return 0
    if parent:
        _lower_priority(settings.stream_child_nice)
    asyncio.run(ensure_topics(settings))
    asyncio.run(ensure_internal_topics(settings))
    if role == "input":  # stateless: no slot directory
        log.info("streams.worker_starting", app_id=app_id(settings), role=role)
        _tune_gc()
        asyncio.run(_run_input(settings))
        return 0
    ident = scorer_app_id(settings) if role == "scorer" else app_id(settings)
    datadir, lock = take_slot(settings.home / "streams" / ident)
    children = [ChildProcess(settings, r) for r in CHILDREN] if role == "all" else []
    log.info("streams.worker_starting", app_id=ident, role=role, datadir=str(datadir))
    try:
        for child in children:
            child.start()
        if role == "scorer":
            app, _ = create_scorer_app(settings, datadir)
        else:
            app = create_app(settings, datadir)
        return _run_app(app)
    finally:
        for child in children:
            child.stop()
        lock.close()
