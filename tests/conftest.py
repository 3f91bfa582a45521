"""Shared fixtures: real Spark (local mode), real sample images and models from ../shared.

Tests of code that needs no real images or model (decoding, listing, publishing, the partition
runner) run without ../shared; the others are skipped when it is missing (set FRUITLENS_SHARED
to point elsewhere, e.g. FRUITLENS_SHARED=/nonexistent to check which tests need it)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FRUITLENS_SHARED") or REPO.parent / "shared")
SAMPLE = SHARED / "data" / "fruits-360-sample"
MODELS = SHARED / "models"

# Tests never download: the model comes from ../shared (the download code is tested against a
# local HTTP server in test_model_store.py).
os.environ["FRUITLENS_MODEL_DIR"] = str(MODELS)
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's request log
HAVE_SHARED = (SAMPLE / "Training").is_dir() and MODELS.is_dir()


# Modules that read the sample or the models: `pytestmark = shared` at their top.
shared = pytest.mark.skipif(not HAVE_SHARED, reason=f"needs the sample images and models in {SHARED}")


def needs_shared() -> None:
    if not HAVE_SHARED:
        pytest.skip(f"needs the sample images and models in {SHARED}")


def copy_sample(dest: Path, classes: int, train: int, test: int, start: int = 0) -> Path:
    """A few hundred real images in Fruits-360 layout: `classes` classes, evenly spread."""
    needs_shared()
    names = sorted(p.name for p in (SAMPLE / "Training").iterdir())
    step = max(1, len(names) // classes)
    chosen = names[start::step][:classes]
    for split, count in (("Training", train), ("Test", test)):
        for name in chosen:
            files = sorted((SAMPLE / split / name).iterdir())[:count]
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy(f, dest / split / name / f.name)
    return dest


SECRET = "fruitlens-test-SECRET-must-not-leak"


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto) on loopback, reached through the standard AWS environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="fruitlens-test-key",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")


from local_cluster import free_port  # noqa: E402


@pytest.fixture(scope="session")
def spark(s3_server):
    # s3_server first: Spark's Python workers inherit the AWS environment from the JVM.
    needs_shared()
    from fruitlens.config import SparkConfig
    from fruitlens.spark.session import get_session

    session = get_session(SparkConfig(master="local[2]", extra_conf={"spark.ui.enabled": "false"}))
    yield session
    session.stop()


# -- markers ------------------------------------------------------------------------------------
# Registered in pyproject.toml (--strict-markers) and set here, from what a test uses, so a test
# moved to another file keeps them: `spark` (the Spark session fixture, or a module that starts a
# standalone cluster), `s3` (the S3 server fixture, other than through the Spark fixture), `cluster`
# (tests/local_cluster.StandaloneCluster), `browser` (the Playwright `browser` fixture). `slow` and
# `spark` for tests that start Spark in a subprocess (the CLI) are written on the tests themselves.
# The fast tests: pytest -m "not spark and not s3 and not cluster and not browser and not slow".
def _fixtures_requested(item, without: str) -> set[str]:
    """The fixtures `item` uses, directly or through other fixtures, other than through `without`."""
    defs = item._fixtureinfo.name2fixturedefs
    seen: set[str] = set()
    todo = [name for name in item._fixtureinfo.argnames if name != without]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [arg for d in defs.get(name, ()) for arg in d.argnames if arg != without]
    return seen


def pytest_collection_modifyitems(items):
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        uses = set(item.fixturenames)
        if "spark" in uses:
            item.add_marker(pytest.mark.spark)
        if "s3_server" in _fixtures_requested(item, without="spark"):
            item.add_marker(pytest.mark.s3)
        if getattr(item.module, "StandaloneCluster", None) is not None:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.spark)
        if "browser" in uses:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """10 classes x (16 Training + 6 Test) real images = 220 images."""
    return copy_sample(tmp_path_factory.mktemp("sample"), classes=10, train=16, test=6)
