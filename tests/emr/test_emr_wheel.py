"""`pip install "fruitlens[emr] @ file://…/fruitlens-VERSION-py3-none-any.whl"` as a user would (the
README's route: fruitlens is not on PyPI), from the built wheel, into a fresh virtual environment
outside the checkout, two ways: plain pip with this machine's package index and no constraints
(what a user types), and uv with the lock's versions as constraints (what the checkout has).
Then `fruitlens emr up --dry-run`, `estimate`, and a real `up` against moto, with everything it
uploads coming from the installed package."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from conftest import REPO

from fruitlens import __version__

os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # AmazonEMRServicePolicy_v2 in moto's IAM
BUCKET = "fruits-wheel"


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        pytest.skip("needs uv")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--wheel", "--quiet", "-o", str(dist), str(REPO)], check=True, cwd=dist)
    built = next(dist.glob("fruitlens-*.whl"))
    assert built.name == f"fruitlens-{__version__}-py3-none-any.whl"  # the name the README's install line finds
    names = set(zipfile.ZipFile(built).namelist())
    for name in (
        "bootstrap.sh",
        "requirements-emr7.txt",
        "requirements-emr7.in",
        "fruitlens_submit.py",
        "prices.json",
        "policies/user-policy.json",
        "policies/service-role.json",
        "policies/ec2-trust.json",
    ):
        assert f"fruitlens/emr/{name}" in names, name
    for name in ("bootstrap.sh", "requirements-emr7.txt", "policies/user-policy.json"):  # the source's, unchanged
        assert zipfile.ZipFile(built).read(f"fruitlens/emr/{name}") == (REPO / "src/fruitlens/emr" / name).read_bytes()
    return built


def unavailable(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(why)  # CI has the index (or uv's cache): a failed install is a real failure there
    pytest.skip(why)


@pytest.fixture(scope="module", params=["pip", "uv-locked"])
def installed(request, wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"user-{request.param}")
    venv = root / "venv"
    spec = f"fruitlens[emr] @ {wheel.as_uri()}"
    if request.param == "pip":
        # a user's plain pip: python -m venv, then pip with this machine's index configuration, no constraints
        subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, cwd=root)
        res = subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--progress-bar", "off", spec],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        if res.returncode != 0:
            if "ResolutionImpossible" in res.stderr or "conflict" in res.stderr.lower():
                pytest.fail(f"pip cannot resolve fruitlens[emr]: {res.stderr.strip()[-1500:]}")
            unavailable(f"cannot install the wheel's dependencies with pip here: {res.stderr.strip()[-300:]}")
        check = subprocess.run([str(venv / "bin/python"), "-m", "pip", "check"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr  # consistent: every requirement met
    else:
        # the lock's versions as constraints, so the install comes from uv's cache like the checkout's did
        lock = subprocess.run(
            [uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (root / "constraints.txt").write_text(lock)
        subprocess.run([uv(), "venv", "--quiet", "--python", sys._base_executable, str(venv)], check=True, cwd=root)
        res = subprocess.run(
            [uv(), "pip", "install", "--quiet", "--python", str(venv / "bin/python"), "-c", "constraints.txt", spec],
            cwd=root,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            unavailable(f"cannot install the wheel's dependencies here: {res.stderr.strip()[-300:]}")
    return venv


def user_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.mark.slow  # builds the wheel, installs it with its dependencies into two fresh environments
def test_the_installed_wheel_runs_fruitlens_emr_without_a_checkout(installed, s3_server, tmp_path):
    fruitlens = str(installed / "bin/fruitlens")
    where = subprocess.run(
        [str(installed / "bin/python"), "-c", "import fruitlens, botocore; print(fruitlens.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(),
    )
    assert str(installed) in where.stdout, where.stderr  # the installed package, not the checkout's
    res = subprocess.run(
        [fruitlens, "emr", "estimate", "--bucket", BUCKET, "--images", "1000000", "--offline-prices"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(),
    )
    assert res.returncode == 0 and "USD per million images" in res.stdout, res.stderr
    res = subprocess.run(
        [fruitlens, "emr", "up", "--bucket", BUCKET, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(),
    )
    assert res.returncode == 0 and '"ReleaseLabel": "emr-7.13.0"' in res.stdout, res.stderr
    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    res = subprocess.run(
        [fruitlens, "emr", "up", "--bucket", BUCKET, "--tag-network", "--create-roles"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(AWS_ENDPOINT_URL=s3_server),
    )
    assert res.returncode == 0 and res.stdout.strip().startswith("j-"), res.stderr
    body = s3.get_object(Bucket=BUCKET, Key="fruitlens/artifacts/requirements.txt")["Body"].read()
    assert body == (REPO / "src/fruitlens/emr/requirements-emr7.txt").read_bytes()
    entry = s3.get_object(Bucket=BUCKET, Key="fruitlens/artifacts/fruitlens_submit.py")["Body"].read()
    assert b'runpy.run_module("fruitlens", run_name="__main__"' in entry  # python -m fruitlens, not fruitlens.cli
    shipped = s3.get_object(Bucket=BUCKET, Key="fruitlens/artifacts/fruitlens.zip")["Body"].read()
    (tmp_path / "fruitlens.zip").write_bytes(shipped)
    names = zipfile.ZipFile(tmp_path / "fruitlens.zip").namelist()
    assert "fruitlens/__init__.py" in names and "fruitlens/chain/featurize.py" in names
