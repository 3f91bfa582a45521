#!/usr/bin/env bash
# Runs the Spark tests again on PySpark 3.5 (what EMR 7 ships), with every other dependency at its
# locked version. The main environment (.venv, uv.lock) stays on PySpark 4.x.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=.venv-spark35
[ -x "$VENV/bin/python" ] || uv venv --quiet --python "$(.venv/bin/python -c 'import sys; print(sys.executable)')" "$VENV"
uv export --frozen --no-hashes --no-emit-project --quiet | grep -v -E '^(pyspark|py4j)==' > "$VENV/requirements.txt"
VIRTUAL_ENV="$VENV" uv pip install --quiet -r "$VENV/requirements.txt" "pyspark>=3.5,<3.6"
VIRTUAL_ENV="$VENV" uv pip install --quiet --no-deps -e .
"$VENV/bin/python" -c 'import pyspark; assert pyspark.__version__.startswith("3.5"), pyspark.__version__; print("PySpark", pyspark.__version__)'
exec "$VENV/bin/python" -m pytest -q tests/test_pipeline.py tests/test_incremental.py tests/test_engine.py "$@"
