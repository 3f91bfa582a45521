"""The same job on a real Spark standalone cluster (master + 2 workers on loopback, 1 core each):
`fruitlens run --master spark://…`, `spark-submit`, tasks on both workers, and a killed executor
that loses nothing. Executors run a Python environment that has the dependencies but NOT
fruitlens: the package reaches them with the job, the model with SparkContext.addFile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from conftest import MODELS, REPO, copy_sample, shared
from local_cluster import SPARK_HOME, StandaloneCluster

pytestmark = shared


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory) -> str:
    """A virtual environment with fruitlens's locked dependencies, without fruitlens itself."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "uv is a dev dependency (scripts/setup.sh)"
    venv = tmp_path_factory.mktemp("worker-env") / "venv"
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
    probe = subprocess.run([python, "-c", "import fruitlens"], capture_output=True, cwd="/")
    assert probe.returncode != 0  # really not installed there
    return python


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StandaloneCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


def job_env(worker_python: str) -> dict:
    return {
        **os.environ,
        "FRUITLENS_MODEL_DIR": str(MODELS),
        "PYSPARK_PYTHON": worker_python,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


def event_log_conf(path: Path) -> list[str]:
    path.mkdir(exist_ok=True)
    return [
        "--conf",
        "spark.eventLog.enabled=true",
        "--conf",
        f"spark.eventLog.dir=file://{path}",
        "--conf",
        "spark.eventLog.compress=false",
        "--conf",
        "spark.eventLog.rolling.enabled=false",
    ]


def executors_that_ran_tasks(event_dir: Path) -> set[str]:
    ids = set()
    for log in (p for p in event_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("Event") == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
                ids.add(event["Task Info"]["Executor ID"])
    return ids


def assert_exactly_once(out: Path, expected: set[str]) -> None:
    emb = ds.dataset(str(out / "embeddings")).to_table(columns=["path"]).column("path").to_pylist()
    err = ds.dataset(str(out / "errors")).to_table(columns=["path"]).column("path").to_pylist()
    assert len(emb) + len(err) == len(set(emb) | set(err))  # no duplicates
    assert set(emb) | set(err) == expected  # no loss
    manifest = json.loads((out / "embeddings" / "_SUCCESS").read_text())
    assert manifest["rows"] == len(emb)
    assert sorted(f["path"] for f in manifest["files"]) == sorted(
        p.name for p in (out / "embeddings").glob("*.parquet")
    )


def test_run_on_the_cluster_uses_both_workers(cluster, worker_python, tmp_path):
    data = copy_sample(tmp_path / "data", classes=6, train=10, test=4)
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fruitlens",
            "run",
            str(data),
            str(out),
            "--master",
            cluster.url,
            "--k",
            "8",
            "--images-per-partition",
            "8",
            *event_log_conf(tmp_path / "events"),
        ],
        env=job_env(worker_python),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert_exactly_once(out, {str(p) for p in data.rglob("*.jpg")})
    report = json.loads((out / "report.json").read_text())
    assert report["spark"]["master"] == cluster.url
    assert report["featurize"]["backbone"]["loads"] <= 2  # one Python worker per 1-core executor
    assert len(executors_that_ran_tasks(tmp_path / "events")) == 2


def test_spark_submit(cluster, worker_python, tmp_path):
    data = copy_sample(tmp_path / "data", classes=3, train=6, test=3)
    out = tmp_path / "out"
    res = subprocess.run(
        [
            str(SPARK_HOME / "bin" / "spark-submit"),
            "--master",
            cluster.url,
            "--conf",
            "spark.ui.enabled=false",
            str(REPO / "src" / "fruitlens" / "emr" / "fruitlens_submit.py"),
            "featurize",
            str(data),
            str(out),
        ],
        env={**job_env(worker_python), "SPARK_HOME": str(SPARK_HOME)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "27 with embeddings" in res.stdout
    assert json.loads((out / "report.json").read_text())["spark"]["master"] == cluster.url
    assert_exactly_once(out, {str(p) for p in data.rglob("*.jpg")})


def test_killed_executor_loses_nothing(cluster, worker_python, tmp_path):
    data = copy_sample(tmp_path / "data", classes=40, train=20, test=0)  # 800 images
    out = tmp_path / "out"
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fruitlens",
            "featurize",
            str(data),
            str(out),
            "--master",
            cluster.url,
            "--images-per-partition",
            "20",
            "--quiet",
            *event_log_conf(tmp_path / "events"),
        ],
        env=job_env(worker_python),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    staging = out / "_staging"
    deadline = time.monotonic() + 300
    killed = None
    while time.monotonic() < deadline and killed is None:  # once some parts are written, kill worker 1's executor
        parts = list(staging.rglob("*.parquet")) if staging.exists() else []
        victims = cluster.executors(1)
        if len(parts) >= 6 and victims:
            killed = victims[0].pid
            for p in victims[0].children(recursive=True) + [victims[0]]:
                p.kill()
        time.sleep(0.2)
    stdout, stderr = job.communicate(timeout=600)
    assert killed, "no executor to kill"
    assert job.returncode == 0, stderr[-3000:]
    assert_exactly_once(out, {str(p) for p in data.rglob("*.jpg")})
    report = json.loads((out / "report.json").read_text())
    assert report["featurize"]["ok"] == 800
    assert not (out / "_staging").exists()
