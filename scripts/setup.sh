#!/usr/bin/env bash
# Create ./.venv (if missing) and install this project with its test and hand-landmark extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch/torchvision pinned to releases pyproject admits (the CPU machines here carry these wheels locally).
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" -e '.[test,hands]'
