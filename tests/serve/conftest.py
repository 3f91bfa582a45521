"""The serve tests' fixtures: a small real model and index (trained once for the whole package), the
real `fruitlens serve` on it, and an HTTP client."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from conftest import SAMPLE, needs_shared

from fruitlens.config import FeaturizeConfig, TrainConfig
from fruitlens.jobs import run_featurize, run_train

from .support import CHROMIUM, CLASSES, FEEDBACK_ARGS, META, NO_META, SPARK, Server


@pytest.fixture(scope="package")
def built(spark, tmp_path_factory):
    """6 classes x (16 train + 4 test) real images, featurized and trained once (lr_pca)."""
    needs_shared()
    root = tmp_path_factory.mktemp("serve")
    for split, step, count in (("Training", 5, 16), ("Test", 7, 4)):
        for name in CLASSES:
            (root / "images" / split / name).mkdir(parents=True)
            for f in sorted((SAMPLE / split / name).iterdir())[::step][:count]:
                shutil.copy(f, root / "images" / split / name / f.name)
    run_featurize(
        FeaturizeConfig(input=str(root / "images"), output=str(root / "index")), SPARK, spark=spark, quiet=True
    )
    run_train(
        TrainConfig(input=str(root / "index"), output=str(root / "model"), models=("lr_pca",), max_iter=100),
        SPARK,
        spark=spark,
        quiet=True,
    )
    shutil.copytree(META, root / "meta", ignore=shutil.ignore_patterns("*.pdf"))
    shutil.rmtree(root / "meta" / "Meta" / f"{NO_META} 1")
    return root


@pytest.fixture(scope="package")
def server(built, tmp_path_factory):
    s = Server(
        built, tmp_path_factory.mktemp("serve-log") / "serve.log", *(a.format(root=built) for a in FEEDBACK_ARGS)
    )
    yield s
    alive = s.proc.poll() is None
    s.stop()
    assert alive, "the service died during the tests"


@pytest.fixture(scope="package")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="package")
def browser():
    """Debian's chromium, headless, driven by Playwright (one for the package's page tests)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        b.close()
