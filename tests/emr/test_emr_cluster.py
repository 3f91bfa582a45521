"""A job run the EMR way on a real Spark standalone cluster (master + 2 workers on loopback):
spark-submit of the entry point `fruitlens emr up` uploads, with fruitlens only in the
--py-files zip it uploads. Neither the driver's Python nor the executors' has fruitlens
installed, as on EMR's nodes (the bootstrap installs the dependencies only). The cluster's own
executor JVM options (EMR puts its own in spark.executor.extraJavaOptions) reach the executors
unchanged, no JVM option points into the zip, the zip is not shipped a second time, and the
shuffle partitions come from the cluster rather than a fixed 8."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from conftest import MODELS, REPO, copy_sample, shared
from local_cluster import SPARK_HOME, StandaloneCluster

from fruitlens.emr import artifacts

pytestmark = shared

EMR_LIKE_OPTIONS = "-XX:+UseG1GC -Dfruitlens.test.cluster.option=kept"  # what EMR's spark-defaults carry


@pytest.fixture(scope="module")
def node_python(tmp_path_factory) -> str:
    """A Python with fruitlens's locked dependencies and NOT fruitlens, like an EMR node's venv."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "uv is a dev dependency (scripts/setup.sh)"
    venv = tmp_path_factory.mktemp("node-env") / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    reqs = subprocess.run(
        [uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-dev", "--quiet"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (venv / "requirements.txt").write_text(reqs)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(venv / "requirements.txt"),
        ],
        check=True,
    )
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import fruitlens"], capture_output=True, cwd="/").returncode != 0
    return python


def test_a_job_with_fruitlens_only_on_py_files(node_python, tmp_path):
    data = copy_sample(tmp_path / "data", classes=3, train=6, test=2)
    out, events, job = tmp_path / "out", tmp_path / "events", tmp_path / "job"
    events.mkdir()
    job.mkdir()
    for name, body in artifacts.artifact_files().items():  # exactly what `up` puts in ARTIFACTS
        (job / name).write_bytes(body)
    (job / "spark-defaults.conf").write_text(
        f"spark.executor.extraJavaOptions {EMR_LIKE_OPTIONS}\n"
        "spark.ui.enabled false\nspark.eventLog.enabled true\n"
        f"spark.eventLog.dir file://{events}\nspark.eventLog.compress false\nspark.eventLog.rolling.enabled false\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        PYSPARK_PYTHON=node_python,
        PYSPARK_DRIVER_PYTHON=node_python,
        FRUITLENS_MODEL_DIR=str(MODELS),
    )
    (tmp_path / "cluster").mkdir()
    with StandaloneCluster(tmp_path / "cluster") as cluster:
        res = subprocess.run(
            [
                str(SPARK_HOME / "bin" / "spark-submit"),
                "--master",
                cluster.url,
                "--properties-file",
                str(job / "spark-defaults.conf"),
                "--py-files",
                str(job / "fruitlens.zip"),
                str(job / "fruitlens_submit.py"),
                "featurize",
                str(data),
                str(out),
                "--images-per-partition",
                "4",
            ],
            cwd=job,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        # what each executor JVM was started with, as its worker logged it, and what it was sent
        commands, shipped = [], []
        for work in cluster.worker_dirs:
            for stderr in work.glob("app-*/*/stderr"):
                commands += [line for line in stderr.read_text().splitlines() if "Spark Executor Command" in line]
            shipped += [p for p in work.glob("app-*/*/*.zip")]
    assert "24 with embeddings" in res.stdout
    found = ds.dataset(str(out / "embeddings")).to_table(columns=["path"]).column("path").to_pylist()
    assert sorted(found) == sorted(str(p) for p in data.rglob("*.jpg"))
    assert len(commands) == 2  # one executor per worker
    for command in commands:
        assert "-Dfruitlens.test.cluster.option=kept" in command and "-XX:+UseG1GC" in command
        assert "log4j2.configurationFile" not in command and ".zip/" not in command
    # the executors got fruitlens once, from --py-files, complete (not an empty zip beside it)
    assert shipped and {p.name for p in shipped} == {"fruitlens.zip"}
    for path in shipped:
        names = zipfile.ZipFile(path).namelist()
        assert "fruitlens/__init__.py" in names and "fruitlens/chain/runner.py" in names
    # the driver's own view: the submitted options unchanged, fruitlens's shuffle partitions from the cluster
    log = next(p for p in events.rglob("*") if p.is_file() and not p.name.startswith("."))
    env_update = next(
        json.loads(line)
        for line in log.read_text().splitlines()
        if json.loads(line)["Event"] == "SparkListenerEnvironmentUpdate"
    )
    props = env_update["Spark Properties"]
    props = dict(props) if isinstance(props, list) else props
    executor_options = props["spark.executor.extraJavaOptions"]  # Spark 4 puts its own module flags first
    assert executor_options.endswith(EMR_LIKE_OPTIONS) and "log4j" not in executor_options
    shuffles = {
        json.loads(line).get("Properties", {}).get("spark.sql.shuffle.partitions")
        for line in log.read_text().splitlines()
        if json.loads(line)["Event"] == "SparkListenerJobStart"
    }
    assert shuffles - {None} == {"200"}  # a cluster whose size Spark does not know at start: not 8
