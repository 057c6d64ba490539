#!/usr/bin/env bash
# Set up, then run all five stages on the embedded offline demo (sklearn digits, EfficientNet-Lite0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pipeline run --stages all "$@"
