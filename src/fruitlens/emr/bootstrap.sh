#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts. Installs fruitlens's dependencies,
# at the versions of uv.lock, into a virtual environment at /opt/fruitlens/venv. fruitlens itself
# travels with each job (--py-files); Spark (3.5) and PySpark are EMR's own.
# Usage (set by `fruitlens emr up`): bootstrap.sh s3://BUCKET/PREFIX/artifacts
set -euo pipefail
ARTIFACTS="${1:?usage: bootstrap.sh s3://BUCKET/PREFIX/artifacts}"
VENV=/opt/fruitlens/venv

sudo dnf install -y -q python3.11 python3.11-pip
sudo mkdir -p /opt/fruitlens
sudo python3.11 -m venv "$VENV"
aws s3 cp --only-show-errors "$ARTIFACTS/requirements.txt" /tmp/fruitlens-requirements.txt
sudo "$VENV/bin/pip" install --quiet --upgrade pip
sudo "$VENV/bin/pip" install --quiet --no-deps -r /tmp/fruitlens-requirements.txt
# EMR's Spark libraries for this Python (PYTHONPATH is set by Spark for its own processes).
echo "export PYSPARK_PYTHON=$VENV/bin/python" | sudo tee /etc/profile.d/fruitlens.sh >/dev/null
echo "fruitlens bootstrap done: $("$VENV/bin/python" --version)"
