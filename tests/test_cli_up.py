"""``lpt up`` / ``status`` on the real stack: the web service comes up and is reported."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from lpt.services import process_pid, stop_process
from lpt.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_starts_web_and_status_reports_it(stack: Settings) -> None:
    port = _free_port()
    env = {**os.environ, "LPT_HTTP_PORT": str(port)}
    settings_env = [sys.executable, "-m", "lpt.cli"]
    up = subprocess.run(
        [*settings_env, "up", "--no-workers"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        assert f"Open http://127.0.0.1:{port}/" in up.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=10) as resp:
            assert resp.status == 200
        status = subprocess.run(
            [*settings_env, "status"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert "kafka: running" in status.stdout
        assert "postgres: running" in status.stdout
        assert "web: running" in status.stdout
    finally:
        assert stop_process(stack, "web")
    assert process_pid(stack, "web") is None
