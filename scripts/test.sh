#!/usr/bin/env bash
# Set up, then run the whole test suite (slow tests included; real data from ../shared/data when present) on two
# workers (pytest-xdist; each file's tests share a worker, so a file's fixtures run once, and the trained models the
# files share are built once for both workers: tests/conftest.py's `trained`), listing the 25 slowest tests.
# Arguments go to pytest: `-n 0` runs in one process, `-m "not slow"` the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile --durations=25 "$@"
