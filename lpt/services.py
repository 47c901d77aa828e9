"""``lpt up`` / ``down`` / ``status``: the local stack in the background, state in LPT_HOME.

Kafka and PostgreSQL are started by the scripts in ``infra/`` unless the settings point at
existing servers. The project's own processes (web service, stream workers, consumers) run as
``lpt <command>`` children with pid files in ``$LPT_HOME/run`` and logs in ``$LPT_HOME/logs``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lpt import mailsink
from lpt.settings import PROJECT_ROOT, Settings, get_settings

INFRA = PROJECT_ROOT / "infra"


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    argv: tuple[str, ...]


def managed_processes(settings: Settings) -> list[ManagedProcess]:
    """The project's own long-running processes that ``lpt up`` starts."""
    procs = [ManagedProcess("web", ("serve",)), ManagedProcess("notify", ("notify",))]
    if mailsink.runs_sink(settings):  # demo mode only: a local server that keeps the mails
        procs.insert(0, ManagedProcess(mailsink.PROCESS_NAME, ("mail-sink",)))
    if importlib.util.find_spec("streams.app") is None:  # stream workers not built yet
        return procs
    for i in range(settings.stream_workers):
        procs.append(ManagedProcess(f"stream-worker-{i}", ("worker",)))
    return procs


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LPT_HOME"] = str(settings.home)
    env["LPT_KAFKA_PORT"] = str(settings.kafka_port)
    env["LPT_KAFKA_CONTROLLER_PORT"] = str(settings.kafka_controller_port)
    env["LPT_PG_PORT"] = str(settings.pg_port)
    return env


def run_script(script: str, *args: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    subprocess.run(["bash", str(INFRA / script), *args], check=True, env=_env(settings))


def start_backing_services(settings: Settings | None = None) -> None:
    """Start local Kafka and PostgreSQL unless external servers are configured."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.local_kafka:
        run_script("kafka.sh", "start", settings=settings)
    if settings.local_postgres:
        run_script("postgres.sh", "start", settings=settings)
    if settings.local_kafka:
        run_script("kafka.sh", "wait", settings=settings)
    if settings.local_postgres:
        run_script("postgres.sh", "wait", settings=settings)


async def prepare(settings: Settings | None = None) -> None:
    """Wait for both servers, apply migrations, create topics."""
    from lpt.db import migrate, wait_for_postgres
    from lpt.kafka import ensure_topics, wait_for_kafka

    settings = settings or get_settings()
    await wait_for_kafka(settings)
    await wait_for_postgres(settings)
    applied = await migrate(settings)
    created = await ensure_topics(settings)
    print(f"migrations applied: {len(applied)}; topics created: {len(created)}")


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.home / "run" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_pid(settings: Settings, name: str) -> int | None:
    path = _pid_file(settings, name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if _alive(pid) else None


def start_process(settings: Settings, proc: ManagedProcess) -> int:
    if (pid := process_pid(settings, proc.name)) is not None:
        return pid
    (settings.home / "run").mkdir(parents=True, exist_ok=True)
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    log = open(settings.home / "logs" / f"{proc.name}.log", "ab")  # noqa: SIM115
    child = subprocess.Popen(
        [sys.executable, "-m", "lpt.cli", *proc.argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(settings),
        start_new_session=True,
    )
    _pid_file(settings, proc.name).write_text(str(child.pid))
    return child.pid


def stop_process(settings: Settings, name: str, timeout: float = 15.0) -> bool:
    pid = process_pid(settings, name)
    _pid_file(settings, name).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout:.0f}s")
        time.sleep(0.3)


def up(import_sample: bool = False, workers: bool = True) -> str:
    settings = get_settings()
    start_backing_services(settings)
    asyncio.run(prepare(settings))
    from reference.loaders import load_reference_if_empty

    asyncio.run(load_reference_if_empty(settings))
    if import_sample:
        from producers.police_uk import import_sample_if_needed

        asyncio.run(import_sample_if_needed(settings))
    for proc in managed_processes(settings):
        if proc.name not in ("web", mailsink.PROCESS_NAME) and not workers:
            continue
        start_process(settings, proc)
    wait_http(settings.base_url + "/healthz")
    for line in demo_notes(settings):
        print(line)
    return settings.base_url + "/"


def demo_notes(settings: Settings) -> list[str]:
    """What ``lpt up`` tells a demo user beyond the address (where the e-mails go)."""
    if not mailsink.runs_sink(settings):
        return []
    return [
        f"Demo mail: every e-mail sent is kept in {mailsink.mail_dir(settings)} (.eml files) "
        f"and shown at {settings.base_url}/demo/mail"
    ]


def down() -> None:
    settings = get_settings()
    for proc in reversed(managed_processes(settings)):
        if stop_process(settings, proc.name):
            print(f"{proc.name}: stopped")
    # Started in demo mode, stopped even when `lpt down` runs without LPT_DEMO.
    if stop_process(settings, mailsink.PROCESS_NAME):
        print(f"{mailsink.PROCESS_NAME}: stopped")
    if settings.local_postgres:
        run_script("postgres.sh", "stop", settings=settings)
    if settings.local_kafka:
        run_script("kafka.sh", "stop", settings=settings)


def status() -> int:
    settings = get_settings()
    problems = 0
    for script, local in (
        ("kafka.sh", settings.local_kafka),
        ("postgres.sh", settings.local_postgres),
    ):
        if local:
            rc = subprocess.run(
                ["bash", str(INFRA / script), "status"], env=_env(settings)
            ).returncode
            problems += rc != 0
        else:
            print(
                f"{script[:-3]}: external ({settings.bootstrap_servers if 'kafka' in script else 'LPT_DATABASE_URL'})"
            )
    for proc in managed_processes(settings):
        pid = process_pid(settings, proc.name)
        print(f"{proc.name}: {f'running (pid {pid})' if pid else 'stopped'}")
        problems += pid is None
    print(f"url: {settings.base_url}/")
    return 0 if problems == 0 else 3
