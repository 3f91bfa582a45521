"""Backbone files (the pretrained network's .tflite): resolve a local override, else download once
from the public URL into the user cache, always verifying the published sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from .. import FruitlensError

MODEL_DIR_ENV = "FRUITLENS_MODEL_DIR"  # a folder holding backbone files under their published names
CACHE_DIR_ENV = "FRUITLENS_CACHE_DIR"  # where downloads are cached (default: the user cache dir)
BASE_URL_ENV = "FRUITLENS_MODEL_BASE_URL"  # a mirror serving the files under their published names
# Backbone files the project converts itself (EfficientNet-Lite2) are published as the assets of
# this release: exactly the files whose sha256 the specs pin, so a download is checked like any other.
RELEASES = "https://github.com/fruitlens/fruitlens/releases/download/backbones-1/"


@dataclass(frozen=True)
class BackboneFile:
    filename: str
    url: str
    sha256: str
    license: str


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or user_cache_dir("fruitlens")) / "models"


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(file: BackboneFile, override: str | None = None) -> Path:
    """Local path of a verified copy of `file`.

    Order: `override` (a file, or a folder holding `file.filename`), then $FRUITLENS_MODEL_DIR,
    then the cache, then a download from the public URL (or $FRUITLENS_MODEL_BASE_URL).
    """
    if override:
        candidate = Path(override).expanduser()
        if candidate.is_dir():
            candidate = candidate / file.filename
        if not candidate.is_file():
            raise FruitlensError(f"--backbone-file: no backbone file at {candidate}")
        return _verified(candidate, file, origin="--backbone-file")
    env_dir = os.environ.get(MODEL_DIR_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / file.filename
        if not candidate.is_file():
            raise FruitlensError(f"{MODEL_DIR_ENV}={env_dir} has no {file.filename}")
        return _verified(candidate, file, origin=MODEL_DIR_ENV)
    cached = cache_dir() / file.filename
    if cached.is_file() and sha256_of(cached) == file.sha256:
        return cached
    return download(file, cached)


def download(file: BackboneFile, dest: Path) -> Path:
    base = os.environ.get(BASE_URL_ENV)
    url = f"{base.rstrip('/')}/{file.filename}" if base else file.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.filename}.", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != file.sha256:
            raise FruitlensError(
                f"downloaded {file.filename} from {url} has sha256 {h.hexdigest()}, "
                f"expected {file.sha256}; not using it"
            )
        os.replace(tmp, dest)  # atomic: a reader never sees a partial file
        return dest
    except (urllib.error.URLError, OSError) as exc:
        raise FruitlensError(
            f"cannot download {file.filename} from {url} ({exc}); "
            f"pass --backbone-file PATH or set {MODEL_DIR_ENV} to a folder holding it"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _verified(path: Path, file: BackboneFile, origin: str) -> Path:
    digest = sha256_of(path)
    if digest != file.sha256:
        raise FruitlensError(f"{origin}: {path} has sha256 {digest}, expected {file.sha256} for {file.filename}")
    return path
