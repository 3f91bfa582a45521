#!/usr/bin/env bash
# Runs the Spark tests again in EMR 7's Python environment: the pinned set the EMR bootstrap
# installs (src/fruitlens/emr/requirements-emr7.txt: NumPy < 2 ...) plus PySpark at the Spark
# version of the default EMR release, so the versions CI tests are the ones the cluster runs.
# The main environment (.venv, uv.lock) stays on PySpark 4.x and NumPy 2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=.venv-spark35
PINS=src/fruitlens/emr/requirements-emr7.txt
SPARK=$(.venv/bin/python -c 'from fruitlens.emr.settings import EMR_SPARK_VERSION; print(EMR_SPARK_VERSION)')
PY4J=0.10.9.7  # what PyPI's pyspark 3.5.6 requires (Requires-Dist: py4j==0.10.9.7)
STAMP="$(sha256sum "$PINS" | cut -c1-16)-pyspark-$SPARK-py4j-$PY4J-no-deps"
if [ "$(cat "$VENV/.emr-pins" 2>/dev/null)" != "$STAMP" ]; then  # pins changed: start clean, no leftovers
    rm -rf "$VENV"
    uv venv --quiet --python "$(.venv/bin/python -c 'import sys; print(sys.executable)')" "$VENV"
    # exactly the pinned set (no resolution: nothing the nodes would not have) plus PySpark and its py4j
    VIRTUAL_ENV="$VENV" uv pip install --quiet --compile-bytecode --no-deps -r "$PINS" "pyspark==$SPARK" "py4j==$PY4J"
    # then the test tools, never moving a pinned version
    VIRTUAL_ENV="$VENV" uv pip install --quiet --compile-bytecode -c "$PINS" pytest psutil "moto[server]" boto3 scikit-image
    echo "$STAMP" > "$VENV/.emr-pins"
fi
VIRTUAL_ENV="$VENV" uv pip install --quiet --no-deps -e .
"$VENV/bin/python" - "$PINS" "$SPARK" "$PY4J" <<'PY'
import re, sys
from importlib.metadata import version
pins, spark = open(sys.argv[1]).read(), sys.argv[2]
for name, pinned in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", pins, re.M):
    assert version(name) == pinned, f"{name} {version(name)} != pinned {pinned}"
assert version("pyspark") == spark, version("pyspark")
assert version("py4j") == sys.argv[3], version("py4j")
print(f"EMR 7 environment: PySpark {version('pyspark')}, NumPy {version('numpy')}, pandas {version('pandas')}, pyarrow {version('pyarrow')}")
PY
exec "$VENV/bin/python" -m pytest -q tests/chain/test_pipeline.py tests/chain/test_incremental.py tests/engine/test_engine.py tests/reduction/test_sparkml.py "$@"
