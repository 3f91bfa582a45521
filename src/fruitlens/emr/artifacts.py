"""What `up` uploads to ARTIFACTS (s3://BUCKET/PREFIX/artifacts/), all from the installed package:
the bootstrap script, the pinned dependency set, fruitlens itself (the zip each step ships with
--py-files) and the steps' entry point; with --offline-nodes also the wheels of the pinned set,
for every CPU architecture of the cluster's nodes, and the backbones' model files."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from .. import FruitlensError
from ..embedding.backbone_file import resolve
from ..embedding.backbones import SPECS, get_spec
from ..spark.packaging import package_zip
from .settings import EmrSettings

REQUIREMENTS = "requirements-emr7.txt"  # pinned for EMR 7.x: Python 3.11, Spark 3.5, NumPy < 2
# Wheel tags of EMR 7.x nodes: Amazon Linux 2023 (glibc 2.34), CPython 3.11, on x86_64 or on
# Graviton (aarch64). pip does not expand an explicit --platform to older glibc versions, so every
# one is listed.
WHEEL_PLATFORMS = {
    "x86_64": tuple(f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1))
    + ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"),
    "aarch64": tuple(f"manylinux_2_{minor}_aarch64" for minor in range(34, 16, -1)) + ("manylinux2014_aarch64",),
}

_package = resources.files("fruitlens.emr")


def bootstrap_script() -> str:
    return _package.joinpath("bootstrap.sh").read_text()


def pinned_requirements() -> str:
    """The pinned dependency set for EMR 7.x nodes (package data, made with `uv pip compile`)."""
    return _package.joinpath(REQUIREMENTS).read_text()


def artifact_files() -> dict[str, bytes]:
    """What every cluster needs under ARTIFACTS."""
    return {
        "bootstrap.sh": bootstrap_script().encode(),
        "requirements.txt": pinned_requirements().encode(),
        "fruitlens.zip": Path(package_zip()).read_bytes(),
        "fruitlens_submit.py": _package.joinpath("fruitlens_submit.py").read_bytes(),
    }


def model_files(backbones: tuple[str, ...] = ()) -> list[Path]:
    """Verified local copies (cache, $FRUITLENS_MODEL_DIR or download) of the named backbones'
    files, each file once (several specs share one: mobilenet_v2 and its multiscale variant, the
    EfficientNet-Lite2 pooled and multiscale ones); no names: every backbone's."""
    specs = [get_spec(name) for name in backbones] if backbones else list(SPECS.values())
    files = {spec.file.filename: spec.file for spec in specs}
    return [resolve(file) for file in files.values()]


def pip_command() -> list[str]:
    """pip: this Python's, else uv's."""
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not uv:
        raise FruitlensError("--offline-nodes downloads wheels with pip: install pip or uv, or pass --wheels DIR")
    return [uv, "tool", "run", "--from", "pip", "pip"]


def node_target(arch: str) -> list[str]:
    """pip's options for the interpreter of EMR 7.x nodes of `arch` (manylinux, CPython 3.11)."""
    platforms = [x for p in WHEEL_PLATFORMS[arch] for x in ("--platform", p)]
    return [*platforms, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]


def pip_download_command(requirements: Path, dest: Path, arch: str = "x86_64") -> list[str]:
    """`pip download` of the pinned set as EMR 7.x nodes of `arch` install it."""
    return [
        *pip_command(),
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        *node_target(arch),
        "-r",
        str(requirements),
        "-d",
        str(dest),
    ]


def download_wheels(dest: Path, archs: tuple[str, ...] = ("x86_64",)) -> Path:
    """Every wheel of the pinned set for each architecture into `dest` (pure-Python wheels once)."""
    dest.mkdir(parents=True, exist_ok=True)
    reqs = dest / "requirements.txt"
    reqs.write_text(pinned_requirements())
    try:
        for arch in archs:
            out = subprocess.run(pip_download_command(reqs, dest, arch), capture_output=True, text=True)
            if out.returncode != 0:
                raise FruitlensError(f"pip download of the pinned wheels for {arch} failed: {_last_line(out.stderr)}")
    finally:
        reqs.unlink()
    return dest


def wheel_fits_emr7(filename: str, arch: str = "x86_64") -> bool:
    """Whether a wheel installs on EMR 7.x nodes of `arch` (CPython 3.11, manylinux with glibc <=
    2.34), from its file name's tags (name-version[-build]-python-abi-platform.whl, each tag set
    '.'-joined)."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        return False
    pythons, abis, platforms = (set(t.split(".")) for t in parts[-3:])
    linux = any(p == "any" or p in WHEEL_PLATFORMS[arch] for p in platforms)
    if "cp311" in abis:
        return linux and "cp311" in pythons
    if "abi3" in abis:
        return linux and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= 11 for p in pythons)
    return linux and "none" in abis and bool(pythons & {"py3", "py311", "cp311"})


def check_wheels(wheels: Path, archs: tuple[str, ...] = ("x86_64",), complete: bool = True) -> None:
    """Every wheel in the folder fits EMR 7's nodes of one of `archs`, and (`complete`) for each
    architecture every pinned name==version has one (what `pip --no-index` will need on each node)."""
    names = sorted(w.name for w in wheels.glob("*.whl"))
    wrong = [n for n in names if not any(wheel_fits_emr7(n, a) for a in archs)]
    if wrong:
        raise FruitlensError(
            f"--wheels {wheels}: not for EMR 7's nodes (CPython 3.11, manylinux "
            f"{' or '.join(archs)}): {', '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        )
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", pinned_requirements(), re.M)
    for arch in archs if complete else ():
        have = {f"{_canonical(n.split('-')[0])}=={n.split('-')[1]}" for n in names if wheel_fits_emr7(n, arch)}
        missing = [f"{n}=={v}" for n, v in pins if f"{_canonical(n)}=={v}" not in have]
        if missing:
            raise FruitlensError(
                f"--wheels {wheels}: no {arch} wheel for {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def upload_artifacts(
    settings: EmrSettings, s3, wheels: Path | None = None, archs: tuple[str, ...] = ("x86_64",)
) -> list[str]:
    """bootstrap.sh, the pinned requirements, fruitlens itself and the step entry point; with
    --offline-nodes also every wheel of the pinned set for each of `archs`, and the model files."""
    files: dict[str, bytes | Path] = dict(artifact_files())
    if settings.offline_nodes:
        with contextlib.ExitStack() as stack:
            if wheels is None:
                wheels = download_wheels(Path(stack.enter_context(tempfile.TemporaryDirectory())), archs)
            check_wheels(wheels, archs)
            files.update({f"wheels/{w.name}": w for w in sorted(wheels.glob("*.whl"))})
            files.update({f"models/{m.name}": m for m in model_files(settings.offline_backbones)})
            return put_all(settings, s3, files)
    return put_all(settings, s3, files)


def put_all(settings: EmrSettings, s3, files: dict[str, bytes | Path]) -> list[str]:
    prefix = f"{settings.key_prefix}/artifacts"
    for name, body in files.items():
        if isinstance(body, Path):
            try:
                with body.open("rb") as f:  # one PUT: the largest wheel is tens of MB, far below 5 GB
                    s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/{name}", Body=f)
            except OSError as exc:
                raise FruitlensError(f"cannot read {body}: {exc.strerror or exc}") from None
        else:
            s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/{name}", Body=body)
    return [f"{settings.artifacts}/{name}" for name in files]
