"""URIs everywhere: one place that turns a local path, file:// or s3:// URI into a filesystem,
and translates storage failures into one clear line.

S3 goes through s3fs/botocore in Python (driver and tasks), never through Spark's JVM: PyPI's
PySpark has no S3 connector, and this path works the same on a laptop, a standalone cluster and
EMR. Credentials come only from the standard AWS chain (environment, shared config/profiles,
container or instance role); fruitlens never reads, passes or prints them.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlparse

import fsspec
from fsspec.core import url_to_fs

from . import FruitlensError

REMOTE_SCHEMES = ("s3", "s3a")


@dataclass(frozen=True)
class S3Options:
    """Non-secret S3 client settings; None = botocore's own resolution (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, profiles)."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 10  # per request, with adaptive backoff on throttling (503 SlowDown)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


_s3 = S3Options()


def configure(options: S3Options) -> None:
    """Set the S3 options of this process (the driver, and each task before it reads or writes)."""
    global _s3
    _s3 = options


def s3_options() -> S3Options:
    return _s3


def _fs_kwargs(scheme: str) -> dict:
    if scheme not in REMOTE_SCHEMES:
        return {}
    client = {}
    if _s3.endpoint_url:
        client["endpoint_url"] = _s3.endpoint_url
    if _s3.region:
        client["region_name"] = _s3.region
    return {
        "client_kwargs": client,
        "config_kwargs": {
            "retries": {"max_attempts": _s3.max_attempts, "mode": "adaptive"},
            "connect_timeout": _s3.connect_timeout,
            "read_timeout": _s3.read_timeout,
        },
    }


def normalize(uri: str) -> str:
    """Absolute local path for local inputs (no scheme), the URI without trailing / for remote ones."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else uri
        return os.path.abspath(os.path.expanduser(path))
    if parsed.scheme not in REMOTE_SCHEMES:
        raise FruitlensError(f"unsupported location {uri!r}: use a local path, file:// or s3://")
    if not parsed.netloc:
        raise FruitlensError(f"no bucket in {uri!r}: use s3://BUCKET/PREFIX")
    return uri.rstrip("/")


def scheme(uri: str) -> str:
    return urlparse(normalize(uri)).scheme


def is_local(uri: str) -> bool:
    return scheme(uri) == ""


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI."""
    uri = normalize(uri)
    try:
        return url_to_fs(uri, **_fs_kwargs(scheme(uri)))
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
    if is_local(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, default=str).encode() + b"\n")


def describe(exc: BaseException, uri: str) -> str | None:
    """One line for the storage failures a user meets, or None for anything else."""
    name = type(exc).__name__
    text = str(exc)
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    bucket = urlparse(normalize(uri)).netloc if not is_local(uri) else ""
    if "NoSuchBucket" in (code + text) or "bucket does not exist" in text:
        return f"bucket not found: s3://{bucket}"
    if isinstance(exc, PermissionError) or code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") \
            or "AccessDenied" in text or "Forbidden" in text:
        return f"access denied to {uri} (check the AWS credentials, profile or role in use)"
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials found (environment, ~/.aws config/profile, or instance/container role)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError") \
            or "Could not connect to the endpoint" in text:
        endpoint = _s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        return f"cannot reach the S3 endpoint {endpoint}"
    return None


@contextlib.contextmanager
def storage_errors(uri: str, what: str):
    """Turn storage failures on `uri` into a FruitlensError with one clear line."""
    try:
        yield
    except FruitlensError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below, else re-raised
        message = describe(exc, uri)
        if message is None:
            if isinstance(exc, OSError):
                message = f"{exc.strerror or type(exc).__name__}: {uri}"
            else:
                raise
        raise FruitlensError(f"{what}: {message}") from None
