#!/bin/bash
# EMR bootstrap action: runs as hadoop on every node before Spark starts. Installs fruitlens's
# dependencies, pinned for EMR 7.x (requirements-emr7.txt: Python 3.11, NumPy < 2 for Spark 3.5),
# into a virtual environment at /opt/fruitlens/venv. fruitlens itself travels with each job
# (--py-files fruitlens.zip); Spark and PySpark are EMR's own.
#
# Usage (set by `fruitlens emr up`):
#   bootstrap.sh s3://BUCKET/PREFIX/artifacts             # nodes with internet: pip installs from PyPI
#   bootstrap.sh s3://BUCKET/PREFIX/artifacts --offline   # no internet: wheels and model files from
#                                                         # ARTIFACTS/wheels and ARTIFACTS/models only
# ARTIFACTS may also be a local folder with the same layout (the tests run the install that way);
# FRUITLENS_VENV, FRUITLENS_MODELS, FRUITLENS_PYTHON and FRUITLENS_SUDO override the defaults.
set -euo pipefail
ARTIFACTS="${1:?usage: bootstrap.sh s3://BUCKET/PREFIX/artifacts [--offline]}"
MODE="${2:-online}"
VENV="${FRUITLENS_VENV:-/opt/fruitlens/venv}"
MODELS="${FRUITLENS_MODELS:-/opt/fruitlens/models}"
PYTHON="${FRUITLENS_PYTHON:-python3.11}"
SUDO="${FRUITLENS_SUDO-sudo}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

get() {  # get NAME DEST: a file, or a folder when NAME ends in /, from ARTIFACTS
    if [[ "$ARTIFACTS" == s3://* ]]; then
        if [[ "$1" == */ ]]; then aws s3 cp --only-show-errors --recursive "$ARTIFACTS/$1" "$2"
        else aws s3 cp --only-show-errors "$ARTIFACTS/$1" "$2"; fi
    else
        if [[ "$1" == */ ]]; then mkdir -p "$2" && cp -R "$ARTIFACTS/$1." "$2"
        else cp "$ARTIFACTS/$1" "$2"; fi
    fi
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    $SUDO dnf install -y -q python3.11 python3.11-pip   # from the Amazon Linux repositories
fi
$SUDO mkdir -p "$(dirname "$VENV")"
$SUDO "$PYTHON" -m venv "$VENV"
get requirements.txt "$WORK/requirements.txt"
if [[ "$MODE" == "--offline" ]]; then
    get wheels/ "$WORK/wheels/"
    $SUDO "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$WORK/wheels" \
        --no-deps -r "$WORK/requirements.txt"
    get models/ "$WORK/models/"
    $SUDO mkdir -p "$MODELS"
    $SUDO cp "$WORK/models/"* "$MODELS/"
    $SUDO chmod -R a+rX "$MODELS"
else
    $SUDO "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$WORK/requirements.txt"
fi
"$VENV/bin/python" - <<'PY'
import numpy, pyarrow, pandas, PIL, s3fs, ai_edge_litert  # noqa: F401  the job's imports work
assert int(numpy.__version__.split(".")[0]) < 2, f"NumPy {numpy.__version__}: Spark 3.5 needs NumPy < 2"
print(f"fruitlens bootstrap done: NumPy {numpy.__version__}, pyarrow {pyarrow.__version__}")
PY
