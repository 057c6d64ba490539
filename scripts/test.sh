#!/usr/bin/env bash
# Set up, then run the whole test suite (slow tests included; real data from ../shared/data when present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
