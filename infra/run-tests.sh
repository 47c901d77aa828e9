#!/usr/bin/env bash
# Runs the whole suite against real Kafka and PostgreSQL (tests/conftest.py starts them).
# pytest's exit code 5 ("no tests collected") is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
