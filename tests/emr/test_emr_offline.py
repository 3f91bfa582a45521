"""--offline-nodes: the pinned wheels (pip download for manylinux x86_64 / CPython 3.11) and the
model files are staged in the bucket, then the bootstrap installs from there alone (--no-index)
into a fresh virtual environment: here against the same layout downloaded back from the moto
bucket into a local folder (this machine is x86_64 Linux with CPython 3.11, like EMR 7's nodes).
A Graviton shape stages aarch64 wheels beside them; that pip resolves the whole pinned set for
aarch64 from the staged folder alone is checked with pip's own resolver (`--dry-run --platform`),
since this machine cannot run an aarch64 install."""

import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from conftest import REPO, shared

from fruitlens import FruitlensError
from fruitlens.emr import artifacts
from fruitlens.emr.settings import EmrSettings

pytestmark = shared

BUCKET = "fruits-offline"
SETTINGS = EmrSettings(bucket=BUCKET, prefix="off", region="us-east-1", offline_nodes=True)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the install check needs CPython 3.11, the Python of EMR 7's nodes")
    try:
        return artifacts.download_wheels(tmp_path_factory.mktemp("wheels"))
    except FruitlensError as exc:
        if "No matching distribution" in str(exc) or "no wheel" in str(exc):
            raise  # a real failure: the pinned set is not installable on EMR's nodes
        pytest.skip(f"PyPI not reachable for pip download: {exc}")


@pytest.mark.slow  # downloads the pinned set's wheels, installs them offline
def test_offline_nodes_stage_wheels_and_models_then_bootstrap_installs_with_no_index(s3_server, wheels, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    uploaded = artifacts.upload_artifacts(SETTINGS, s3, wheels)
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="off/artifacts/")
        for o in page.get("Contents", [])
    }
    assert keys == {u.removeprefix(f"s3://{BUCKET}/") for u in uploaded}
    names = {k.rsplit("/", 1)[1] for k in keys if "/wheels/" in k}
    assert any(n.startswith("numpy-1.26.4-cp311-cp311-manylinux") for n in names)
    assert any(n.startswith("pyarrow-25.") for n in names) and not any(n.startswith("pyspark") for n in names)
    assert {k.rsplit("/", 1)[1] for k in keys if "/models/" in k} == {
        "tf2_mobilenet_v2_1.0_224_ptq.tflite",
        "mobilenet_v2_1.0_224_quant.tflite",
        "efficientnet_lite2_ms_int8.tflite",
        "efficientnet_lite2_ms_fp32.tflite",
    }  # every backbone's file once (no --offline-backbone)

    # what a node fetches: the artifacts, brought back from the bucket into a local folder
    staged = tmp_path / "artifacts"
    for key in keys:
        dest = staged / key.removeprefix("off/artifacts/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, key, str(dest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        FRUITLENS_VENV=str(tmp_path / "venv"),
        FRUITLENS_MODELS=str(tmp_path / "models"),
        FRUITLENS_SUDO="",
        FRUITLENS_PYTHON=sys._base_executable,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",  # no index reachable: everything must come from wheels/
        PIP_NO_CACHE_DIR="1",
    )
    res = subprocess.run(
        ["bash", str(REPO / "src/fruitlens/emr/bootstrap.sh"), str(staged), "--offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fruitlens bootstrap done: NumPy 1.26.4" in res.stdout
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "efficientnet_lite2_ms_fp32.tflite",
        "efficientnet_lite2_ms_int8.tflite",
        "mobilenet_v2_1.0_224_quant.tflite",
        "tf2_mobilenet_v2_1.0_224_ptq.tflite",
    ]
    # the job's side: fruitlens (as the step ships it, a zip) finds the model in FRUITLENS_MODEL_DIR
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fruitlens.embedding.backbones import SPECS; "
        "from fruitlens.embedding.backbone_file import resolve; print(resolve(SPECS['mobilenet_v2'].file))"
    )
    res = subprocess.run(
        [str(tmp_path / "venv/bin/python"), "-c", probe, str(staged / "fruitlens.zip")],
        capture_output=True,
        text=True,
        env={**env, "FRUITLENS_MODEL_DIR": str(tmp_path / "models")},
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("models/tf2_mobilenet_v2_1.0_224_ptq.tflite"), res.stderr


def test_missing_wheels_are_refused_before_anything_is_uploaded(s3_server, tmp_path):
    (tmp_path / "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl").write_bytes(b"")
    with pytest.raises(FruitlensError, match="no x86_64 wheel for"):
        artifacts.upload_artifacts(SETTINGS, boto3.client("s3"), tmp_path)


def test_wheels_for_another_platform_are_refused_in_one_line(s3_server, tmp_path):
    for name in (
        "numpy-1.26.4-cp311-cp311-macosx_11_0_arm64.whl",
        "pyarrow-25.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        "x-1.0-cp311-cp311-manylinux_2_39_x86_64.whl",
        "y-1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
        "z-1.0-cp313-abi3-manylinux_2_17_x86_64.whl",
        "w-1.0-py2-none-any.whl",
    ):
        assert not artifacts.wheel_fits_emr7(name), name
    for name in (
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "six-1.17.0-py2.py3-none-any.whl",
        "cryptography-46.0.1-cp37-abi3-manylinux_2_34_x86_64.whl",
        "a-1.0-1build-py3-none-any.whl",
    ):
        assert artifacts.wheel_fits_emr7(name), name
    assert artifacts.wheel_fits_emr7("y-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", "aarch64")  # Graviton
    assert not artifacts.wheel_fits_emr7("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", "aarch64")
    (tmp_path / "numpy-1.26.4-cp311-cp311-macosx_11_0_arm64.whl").write_bytes(b"")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fruitlens",
            "emr",
            "up",
            "--bucket",
            BUCKET,
            "--offline-nodes",
            "--wheels",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("estimate: ")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "not for EMR 7's nodes" in errors[0] and "macosx_11_0_arm64" in errors[0]  # refused before any AWS call


@pytest.fixture(scope="module")
def arm_wheels(tmp_path_factory) -> Path:
    try:
        return artifacts.download_wheels(tmp_path_factory.mktemp("arm-wheels"), ("aarch64",))
    except FruitlensError as exc:
        if "No matching distribution" in str(exc):
            raise  # a real failure: the pinned set has no aarch64 wheel for some package
        pytest.skip(f"PyPI not reachable for pip download: {exc}")


@pytest.mark.slow  # downloads the pinned set's wheels for two platforms
def test_graviton_nodes_get_aarch64_wheels_that_resolve_the_whole_pinned_set(s3_server, wheels, arm_wheels, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    for folder in (wheels, arm_wheels):
        for w in folder.glob("*.whl"):
            (both / w.name).write_bytes(w.read_bytes())
    artifacts.check_wheels(both, ("x86_64", "aarch64"))
    assert any(
        w.name.startswith("numpy-1.26.4-cp311-cp311-manylinux") and "aarch64" in w.name for w in arm_wheels.glob("*")
    )
    with pytest.raises(FruitlensError, match="no aarch64 wheel for"):
        artifacts.check_wheels(wheels, ("x86_64", "aarch64"))
    # what `pip install --no-index` on a Graviton node would pick from the staged folder: every pin
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(artifacts.pinned_requirements())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_CONFIG_FILE="/dev/null")
    res = subprocess.run(
        [
            *artifacts.pip_command(),
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            str(tmp_path / "r.json"),
            "--no-index",
            "--find-links",
            str(both),
            "--no-deps",
            "--only-binary=:all:",
            "--target",
            str(tmp_path / "t"),
            *artifacts.node_target("aarch64"),
            "-r",
            str(reqs),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    chosen = {
        i["metadata"]["name"].lower(): i["download_info"]["url"]
        for i in json.loads((tmp_path / "r.json").read_text())["install"]
    }
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", artifacts.pinned_requirements(), re.M))
    assert {artifacts._canonical(n) for n in pins} == {artifacts._canonical(n) for n in chosen}
    assert "aarch64" in chosen["numpy"] and "x86_64" not in chosen["numpy"] and "aarch64" in chosen["pyarrow"]
    # staged for a Graviton shape: both architectures under ARTIFACTS/wheels/
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits-arm")
    settings = EmrSettings(
        bucket="fruits-arm", prefix="arm", region="us-east-1", core_type="m6g.xlarge", offline_nodes=True
    )
    uploaded = artifacts.upload_artifacts(settings, s3, both, ("x86_64", "aarch64"))
    staged = [u.rsplit("/", 1)[1] for u in uploaded if "/wheels/" in u]
    assert any("aarch64" in n for n in staged) and any("x86_64" in n for n in staged)


def test_offline_backbone_stages_only_the_files_the_named_backbones_need():
    from conftest import MODELS

    lite2 = artifacts.model_files(("lite2",))
    assert lite2 == [MODELS / "efficientnet_lite2_ms_int8.tflite"]  # the product's choice, not the fp32 file
    both = artifacts.model_files(("mobilenet_v2_multiscale", "mobilenet_v2", "efficientnet_lite2_pooled", "lite2"))
    assert sorted(p.name for p in both) == ["efficientnet_lite2_ms_int8.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"]
    assert len(artifacts.model_files()) == 4  # no names: every backbone's file, each once
    with pytest.raises(FruitlensError, match="unknown backbone 'resnet'"):
        EmrSettings(bucket=BUCKET, offline_nodes=True, offline_backbones=("resnet",)).validate()
