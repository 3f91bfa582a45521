"""URIs everywhere: one place that turns a local path, file:// or s3:// URI into a filesystem."""

from __future__ import annotations

import json
import os
import posixpath
from urllib.parse import urlparse

import fsspec
from fsspec.core import url_to_fs

from . import FruitlensError


def normalize(uri: str) -> str:
    """Absolute local path for local inputs (no scheme), the URI unchanged for remote ones."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = parsed.path if parsed.scheme == "file" else uri
        return os.path.abspath(os.path.expanduser(path))
    return uri.rstrip("/")


def is_local(uri: str) -> bool:
    return urlparse(normalize(uri)).scheme == ""


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI."""
    try:
        return url_to_fs(normalize(uri))
    except (ImportError, ValueError) as exc:
        raise FruitlensError(f"unsupported location {uri!r}: {exc}") from None


def join(base: str, *parts: str) -> str:
    base = normalize(base)
    if is_local(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def spark_uri(uri: str) -> str:
    """The URI Spark's Hadoop layer should read or write."""
    uri = normalize(uri)
    return "file://" + uri if is_local(uri) else uri


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path) if not is_local(uri) else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=False, default=str).encode() + b"\n")


def read_json(uri: str):
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return json.load(f)
