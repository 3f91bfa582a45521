#!/usr/bin/env bash
# Sets up fruitlens and runs the whole chain (Spark local mode) on the Fruits-360 sample in
# ../shared when it is there. Usage: scripts/demo.sh [INPUT] [OUTPUT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

SAMPLE=../shared/data/fruits-360-sample
INPUT="${1:-$SAMPLE}"
OUTPUT="${2:-out/demo}"
if [ ! -d "$INPUT" ]; then
  cat >&2 <<MSG
fruitlens: no input folder at $INPUT.
  Get the Fruits-360 dataset (https://github.com/fruits-360 or https://www.kaggle.com/moltean/fruits),
  then run:  scripts/demo.sh PATH/TO/fruits-360 out/demo
  or:        .venv/bin/fruitlens run PATH/TO/fruits-360 out/demo
MSG
  exit 2
fi
# Use the reference models in ../shared when present; otherwise fruitlens downloads the model
# from its public URL once (sha256-checked) into the user cache.
if [ -z "${FRUITLENS_MODEL_DIR:-}" ] && [ -d ../shared/models ]; then
  export FRUITLENS_MODEL_DIR="$(cd ../shared/models && pwd)"
fi
exec .venv/bin/fruitlens run "$INPUT" "$OUTPUT"
