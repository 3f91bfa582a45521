#!/usr/bin/env bash
# Sets up fruitlens, runs the whole chain (Spark local mode) on the Fruits-360 sample in ../shared,
# then trains the product model on both collections there (the sample's turntable frames and
# GroceryStore's shop photos) and saves the similar-images index of both collections for it.
# Usage: scripts/demo.sh [INPUT] [OUTPUT]      (INPUT: the Fruits-360 folder; OUTPUT: out/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

SAMPLE=../shared/data/fruits-360-sample
GROCERY=../shared/data/grocerystore
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
# Use the reference models in ../shared when present; otherwise fruitlens downloads the backbone
# from its public URL once (sha256-checked) into the user cache.
if [ -z "${FRUITLENS_MODEL_DIR:-}" ] && [ -d ../shared/models ]; then
  export FRUITLENS_MODEL_DIR="$(cd ../shared/models && pwd)"
fi
F=.venv/bin/fruitlens
# The product's backbone (EfficientNet-Lite2, int8: the best on GroceryStore val/, docs/benchmarks.md); the
# chain's own default is MobileNetV2 (faster). A model takes one backbone, so both collections use it.
B="--backbone lite2"
$F run "$INPUT" "$OUTPUT" --views 2 $B                        # the chain: embeddings (whole photo + centre crop), errors, features, pca

if [ ! -d "$GROCERY/train" ]; then
  cat >&2 <<MSG
fruitlens: no GroceryStore photos at $GROCERY: the product model (shop photos) is not trained.
  Get them from https://github.com/marcusklasson/GroceryStoreDataset (its dataset/ folder: train/, val/,
  classes.csv, iconic-images-and-descriptions/), then:
    $F featurize PATH/TO/GroceryStoreDataset/dataset out/grocery --views 12 --backbone lite2
    $F train out/grocery $OUTPUT out/product --catalogue builtin --target-precision 0.95
MSG
  exit 0
fi
$F featurize "$GROCERY" out/grocery --views 12 $B             # shop photos: the whole photo and 11 views each
$F train out/grocery "$OUTPUT" out/product --catalogue builtin --target-precision 0.95
$F index out/grocery "$OUTPUT" --model out/product >/dev/null # the similar photos of both collections, saved for serve --ann
INFO=""
for d in ../shared/data/fruits-360-meta "$GROCERY"; do [ -d "$d" ] && INFO="$INFO --info $d"; done
ENVP=""   # the backbone from ../shared, as above (otherwise fruitlens downloads it once)
[ -n "${FRUITLENS_MODEL_DIR:-}" ] && ENVP="FRUITLENS_MODEL_DIR=$FRUITLENS_MODEL_DIR "
cat <<MSG
fruitlens: the product model is out/product. Identify a photo, or start the service and open http://127.0.0.1:8000/:
  $ENVP$F predict --model out/product PHOTO.jpg
  $ENVP$F serve --model out/product --index out/grocery --index $OUTPUT --ann$INFO --feedback out/feedback
MSG
