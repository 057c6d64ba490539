#!/usr/bin/env bash
# Create ./.venv (if missing) and install this project with its test, hand-landmark, serve, tracking and docs extras.
# Idempotent.
# The headless-browser test of `serve` also needs a Chromium: `apt-get install chromium` (skipped without one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch/torchvision pinned to releases pyproject admits (the CPU machines here carry these wheels locally).
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" -e '.[test,hands,serve,track,docs]'
