"""``lpt`` commands explain an unreachable Kafka or PostgreSQL in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lpt.cli import unreachable
from lpt.settings import get_settings


def lpt(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lpt.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "server"),
    [(["cells", "--res", "9"], "PostgreSQL at 127.0.0.1:1"), (["topics"], "Kafka at 127.0.0.1:2")],
)
def test_an_unreachable_server_is_named_without_a_traceback(
    command: list[str], server: str
) -> None:
    done = lpt(
        *command,
        LPT_DATABASE_URL="postgresql://lpt:secret@127.0.0.1:1/lpt",
        LPT_KAFKA_BOOTSTRAP="127.0.0.1:2",
    )
    assert done.returncode == 1
    assert f"lpt {command[0]}: cannot reach {server}." in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr  # the database URL's password is never printed


def test_other_errors_are_not_explained_away() -> None:
    settings = get_settings()
    assert unreachable(FileNotFoundError("no such file: crimes.csv"), settings) is None
    assert unreachable(ValueError("bad row"), settings) is None
