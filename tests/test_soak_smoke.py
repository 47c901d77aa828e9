"""The soak benchmark's command line parses (the benchmark itself runs minutes; it is run by
hand, never in the suite: ``benchmarks/soak.py --minutes 1`` for a quick check)."""

from __future__ import annotations

import subprocess
import sys

from tests.streams_helpers import ROOT


def test_soak_help_lists_its_options() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--minutes", "--rate", "--workers", "--http-rate", "--no-progress"):
        assert option in done.stdout
