#!/usr/bin/env bash
# Sets up fruitlens and runs every test (real Spark in local mode, real files, models from ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
