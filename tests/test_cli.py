"""The `fruitlens` command as a user runs it: help, clear one-line errors, the whole chain."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import MODELS, copy_sample, shared

pytestmark = shared

FRUITLENS = [sys.executable, "-m", "fruitlens"]


def fruitlens(*args, env=None, timeout=600):
    full_env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS), **(env or {})}
    return subprocess.run([*FRUITLENS, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.mark.parametrize("command", [[], ["run"], ["featurize"], ["reduce"]])
def test_help_for_every_command_and_option(command):
    res = fruitlens(*command, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout
    if command:
        for option in ("--master", "--conf", "--quiet"):
            assert option in res.stdout
    if command in (["run"], ["featurize"]):
        for option in ("--backbone-file", "--batch-size", "--threads", "--backbone", "--max-pixels"):
            assert option in res.stdout
    if command in (["run"], ["reduce"]):
        assert "--variance" in res.stdout and "--k" in res.stdout


# What [tool.ruff.lint.flake8-tidy-imports] keeps off the modules' tops: none of it may load with the command
# line, predict or the service, and the jobs (the driver solver trains without a JVM) load no Spark either.
HEAVY = ("pyspark", "py4j", "scipy", "matplotlib", "uvicorn", "usearch", "ai_edge_litert", "flatbuffers", "botocore")


def test_the_light_paths_import_nothing_heavy():
    probe = (
        "import sys\n"
        "import fruitlens.cli, fruitlens.engine.predict, fruitlens.serve.app\n"
        f"heavy = {HEAVY + ('pyarrow.dataset', 'fruitlens.jobs', 'fruitlens.emr.kit')!r}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import fruitlens.jobs\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "['fruitlens.jobs']"]


def assert_one_line_error(res, pattern):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert any(pattern in line for line in lines), res.stderr
    assert len(lines) <= 3, res.stderr  # click's usage errors add a usage and a hint line


def test_missing_input_is_one_line_and_non_zero(tmp_path):
    res = fruitlens("run", tmp_path / "nowhere", tmp_path / "out")
    assert_one_line_error(res, "INPUT not found")
    assert res.returncode == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "many"], "many"),
        (["--variance", "1.5"], "--variance must be in (0, 1]"),
        (["--k", "5", "--variance", "0.9"], "either --k or --variance"),
        (["--backbone", "resnet"], "resnet"),
        (["--conf", "novalue"], "KEY=VALUE"),
    ],
)
def test_bad_options_are_clear(tmp_path, args, message):
    (tmp_path / "in").mkdir()
    res = fruitlens("run", tmp_path / "in", tmp_path / "out", *args)
    assert_one_line_error(res, message)


def test_output_that_is_a_file_is_refused_before_work(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").write_text("x")
    assert_one_line_error(fruitlens("featurize", tmp_path / "in", tmp_path / "out"), "not a folder")


def test_reduce_of_something_that_is_not_embeddings(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(fruitlens("reduce", tmp_path / "empty", tmp_path / "out"), "no Parquet data")
    assert_one_line_error(fruitlens("reduce", tmp_path / "nope", tmp_path / "out"), "EMBEDDINGS not found")


@pytest.mark.parametrize(
    "command,option", [("featurize", "--backbone-file"), ("run", "--backbone-file"), ("featurize", "--model")]
)  # its name before 0.2: still accepted
def test_missing_backbone_file_is_refused_before_spark_starts_and_nothing_is_staged(tmp_path, command, option):
    (tmp_path / "in" / "Apple").mkdir(parents=True)
    (tmp_path / "in" / "Apple" / "a.jpg").write_bytes(b"not looked at")
    java = tmp_path / "jdk" / "bin" / "java"  # a `java` that only says it ran
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\ntouch {tmp_path / 'java-ran'}\necho 'openjdk version \"17.0.9\"' >&2\n")
    java.chmod(0o755)
    res = fruitlens(
        command,
        tmp_path / "in",
        tmp_path / "out",
        option,
        tmp_path / "no-such-model.tflite",
        env={"JAVA_HOME": str(tmp_path / "jdk")},
    )
    assert_one_line_error(res, "--backbone-file: no backbone file at")
    assert ("--model is now --backbone-file" in res.stderr) == (option == "--model")
    assert not (tmp_path / "java-ran").exists()  # Spark was never started
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nothing staged


@pytest.mark.spark  # the listing runs in Spark
def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "in" / "docs").mkdir(parents=True)
    (tmp_path / "in" / "docs" / "a.txt").write_text("x")
    res = fruitlens("featurize", tmp_path / "in", tmp_path / "out")
    assert_one_line_error(res, "no images")


@pytest.mark.spark
def test_featurize_then_reduce_then_run_from_the_command_line(tmp_path):
    data = copy_sample(tmp_path / "data", classes=4, train=10, test=5, start=3)
    emb = tmp_path / "emb"
    res = fruitlens("featurize", f"file://{data}", emb, "--batch-size", "8")
    assert res.returncode == 0, res.stderr
    assert "60 with embeddings" in res.stdout and "60 new" in res.stdout
    assert pq.read_table(emb / "embeddings").num_rows == 60

    res = fruitlens("reduce", emb, tmp_path / "red", "--k", "7")
    assert res.returncode == 0, res.stderr
    assert "k = 7" in res.stdout
    report = json.loads((tmp_path / "red" / "report.json").read_text())
    assert report["reduce"]["k"] == 7 and report["reduce"]["fit_rows"] == 40
    assert (tmp_path / "red" / "scree.png").stat().st_size > 1000

    res = fruitlens("run", data, tmp_path / "all", "--variance", "0.8")
    assert res.returncode == 0, res.stderr
    for name in ("embeddings", "errors", "features", "pca", "report.json", "scree.png"):
        assert (tmp_path / "all" / name).exists(), name
    assert "Traceback" not in res.stderr
