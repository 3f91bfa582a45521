"""`pip install "fruitlens[emr] @ file://…/fruitlens-0.1.0-py3-none-any.whl"` as a user would (the
README's route: fruitlens is not on PyPI), from the built wheel, into a fresh virtual
environment outside the checkout: `fruitlens emr up --dry-run`, `estimate`, and a real `up`
against moto, with everything it uploads coming from the installed package."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
import tomllib
from conftest import REPO

os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # AmazonEMRServicePolicy_v2 in moto's IAM
BUCKET = "fruits-wheel"


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        pytest.skip("needs uv")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user")
    dist = root / "dist"
    subprocess.run([uv(), "build", "--wheel", "--quiet", "-o", str(dist), str(REPO)], check=True, cwd=root)
    wheel = next(dist.glob("fruitlens-*.whl"))
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert wheel.name == f"fruitlens-{version}-py3-none-any.whl"  # the name the README's install line uses
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("bootstrap.sh", "requirements-emr7.txt", "requirements-emr7.in", "fruitlens_submit.py", "prices.json",
                 "policies/user-policy.json", "policies/service-role.json", "policies/ec2-trust.json"):
        assert f"fruitlens/emr/{name}" in names, name
    for name in ("bootstrap.sh", "requirements-emr7.txt", "policies/user-policy.json"):  # the source's, unchanged
        assert zipfile.ZipFile(wheel).read(f"fruitlens/emr/{name}") == (REPO / "src/fruitlens/emr" / name).read_bytes()
    # the lock's versions as constraints, so the install comes from uv's cache like the checkout's did
    lock = subprocess.run([uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--quiet"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    (root / "constraints.txt").write_text(lock)
    venv = root / "venv"
    subprocess.run([uv(), "venv", "--quiet", "--python", sys._base_executable, str(venv)], check=True, cwd=root)
    res = subprocess.run([uv(), "pip", "install", "--quiet", "--python", str(venv / "bin/python"),
                          "-c", "constraints.txt", f"fruitlens[emr] @ {wheel.as_uri()}"], cwd=root,
                         capture_output=True, text=True)
    if res.returncode != 0:
        why = f"cannot install the wheel's dependencies here: {res.stderr.strip()[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)  # CI has the index (or uv's cache): a failed install is a real failure there
        pytest.skip(why)
    return venv


def user_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def test_the_installed_wheel_runs_fruitlens_emr_without_a_checkout(installed, s3_server, tmp_path):
    fruitlens = str(installed / "bin/fruitlens")
    where = subprocess.run([str(installed / "bin/python"), "-c", "import fruitlens; print(fruitlens.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=user_env())
    assert str(installed) in where.stdout  # the installed package, not the checkout's
    res = subprocess.run([fruitlens, "emr", "estimate", "--bucket", BUCKET, "--images", "1000000"],
                         capture_output=True, text=True, cwd=tmp_path, env=user_env())
    assert res.returncode == 0 and "USD per million images" in res.stdout, res.stderr
    res = subprocess.run([fruitlens, "emr", "up", "--bucket", BUCKET, "--dry-run"], capture_output=True, text=True,
                         cwd=tmp_path, env=user_env())
    assert res.returncode == 0 and '"ReleaseLabel": "emr-7.13.0"' in res.stdout, res.stderr
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    res = subprocess.run([fruitlens, "emr", "up", "--bucket", BUCKET, "--tag-network", "--create-roles"],
                         capture_output=True, text=True, cwd=tmp_path, env=user_env(AWS_ENDPOINT_URL=s3_server))
    assert res.returncode == 0 and res.stdout.strip().startswith("j-"), res.stderr
    body = s3.get_object(Bucket=BUCKET, Key="fruitlens/artifacts/requirements.txt")["Body"].read()
    assert body == (REPO / "src/fruitlens/emr/requirements-emr7.txt").read_bytes()
    entry = s3.get_object(Bucket=BUCKET, Key="fruitlens/artifacts/fruitlens_submit.py")["Body"].read()
    assert b"from fruitlens.cli import entry" in entry
