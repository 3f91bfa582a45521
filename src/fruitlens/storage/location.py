"""Storage locations: a local path, file:// or s3:// URI resolved once into a `Location` (its
normalised URI, its scheme and its S3 options), which every layer then uses as it is; and one
clear line for the storage failures a user meets.

A `Location` is picklable: it travels into Spark tasks as it is and builds its filesystem lazily
there, so S3 options are never re-configured in a closure. S3 goes through s3fs/botocore in Python
(driver and tasks), never through Spark's JVM: PyPI's PySpark has no S3 connector, and this path
works the same on a laptop, a standalone cluster and EMR. Credentials come only from the standard
AWS chain (environment, shared config/profiles, container or instance role); fruitlens never reads,
passes or prints them.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from urllib.parse import urlparse

import fsspec
from fsspec.core import url_to_fs

from .. import FruitlensError

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

    def fs_kwargs(self) -> dict:
        client = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        return {
            "use_listings_cache": False,  # a long-lived process must see objects written since
            "client_kwargs": client,
            "config_kwargs": {
                "retries": {"max_attempts": self.max_attempts, "mode": "adaptive"},
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
            },
        }


def _normalize(uri: str) -> tuple[str, str]:
    """(scheme, normalised URI): an absolute path for local inputs, the URI without a trailing /
    for remote ones."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else uri
        return "", os.path.abspath(os.path.expanduser(path))
    if parsed.scheme not in REMOTE_SCHEMES:
        raise FruitlensError(f"unsupported location {uri!r}: use a local path, file:// or s3://")
    if not parsed.netloc:
        raise FruitlensError(f"no bucket in {uri!r}: use s3://BUCKET/PREFIX")
    return parsed.scheme, uri.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A folder or file on local disk or in an object store, resolved once.

    `uri` is normalised (absolute local path, or s3://bucket/key without a trailing /); `path` is
    the same place inside `fs` (fsspec's own form). Join with `/`: ``out / "embeddings"``.
    """

    uri: str
    scheme: str
    s3: S3Options = field(default_factory=S3Options, compare=False)

    @classmethod
    def of(cls, uri: str | Location, s3: S3Options | None = None) -> Location:
        if isinstance(uri, Location):
            return uri if s3 is None or s3 == uri.s3 else cls(uri.uri, uri.scheme, s3)
        scheme, normalized = _normalize(str(uri))
        return cls(normalized, scheme, s3 or S3Options())

    # -- identity -------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    @property
    def bucket(self) -> str:
        return "" if self.is_local else urlparse(self.uri).netloc

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(os.path.dirname(self.uri.rstrip(os.sep)) or os.sep, self.scheme, self.s3)
        head = self.uri.rsplit("/", 1)[0]
        return Location(head if "://" in head and head.split("://", 1)[1] else self.uri, self.scheme, self.s3)

    @property
    def spark_uri(self) -> str:
        """The URI Spark's Hadoop layer should read or write."""
        return "file://" + self.uri if self.is_local else self.uri

    def __truediv__(self, part: str) -> Location:
        joined = os.path.join(self.uri, part) if self.is_local else posixpath.join(self.uri, part)
        return Location(joined, self.scheme, self.s3)

    def child(self, fs_path: str) -> Location:
        """The Location of a path returned by this location's filesystem (find, ls)."""
        uri = fs_path if self.is_local else self.fs.unstrip_protocol(fs_path)
        return Location(uri, self.scheme, self.s3)

    def __str__(self) -> str:
        return self.uri

    # -- filesystem (built lazily, per process; never pickled) ----------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        cached = self.__dict__.get("_fs")
        if cached is None:
            kwargs = self.s3.fs_kwargs() if not self.is_local else {}
            try:
                cached, path = url_to_fs(self.uri, **kwargs)
            except (ImportError, ValueError) as exc:
                raise FruitlensError(f"unsupported location {self.uri!r}: {exc}") from None
            object.__setattr__(self, "_fs", cached)
            object.__setattr__(self, "_path", path)
        return cached

    @property
    def path(self) -> str:
        if "_path" not in self.__dict__:
            self.fs  # noqa: B018 - resolves both
        return self.__dict__["_path"]

    def __getstate__(self):
        return {"uri": self.uri, "scheme": self.scheme, "s3": self.s3}

    def __setstate__(self, state):
        for key, value in state.items():
            object.__setattr__(self, key, value)

    # -- small operations -----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def read_bytes(self) -> bytes:
        if self.is_local:
            with open(self.path, "rb") as f:
                return f.read()
        return self.fs.cat_file(self.path)

    def read_json(self):
        return json.loads(self.read_bytes())

    def write_bytes(self, data: bytes) -> None:
        if self.is_local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fs.pipe_file(self.path, data)

    def write_json(self, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=2, default=str).encode() + b"\n")

    def makedirs(self) -> None:
        if self.is_local:
            os.makedirs(self.path, exist_ok=True)

    def open(self, mode: str = "rb"):
        if self.is_local and "w" in mode:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return self.fs.open(self.path, mode)

    def rm(self, recursive: bool = False) -> None:
        if recursive:
            self.fs.rm(self.path, recursive=True)
        else:
            self.fs.rm_file(self.path)


def describe(exc: BaseException, where: Location) -> str | None:
    """One line for the storage failures a user meets, or None for anything else."""
    name = type(exc).__name__
    text = str(exc)
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    if "NoSuchBucket" in (code + text) or "bucket does not exist" in text:
        return f"bucket not found: s3://{where.bucket}"
    if (
        isinstance(exc, PermissionError)
        or code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")
        or "AccessDenied" in text
        or "Forbidden" in text
    ):
        return f"access denied to {where.uri} (check the AWS credentials, profile or role in use)"
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials found (environment, ~/.aws config/profile, or instance/container role)"
    if (
        name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError")
        or "Could not connect to the endpoint" in text
    ):
        endpoint = (
            where.s3.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or "AWS S3"
        )
        return f"cannot reach the S3 endpoint {endpoint}"
    return None


@contextlib.contextmanager
def storage_errors(where: Location, what: str):
    """Turn storage failures on `where` into a FruitlensError with one clear line."""
    try:
        yield
    except FruitlensError:
        raise
    except Exception as exc:  # classified below, else re-raised
        message = describe(exc, where)
        if message is None:
            if isinstance(exc, OSError):
                message = f"{exc.strerror or type(exc).__name__}: {where.uri}"
            else:
                raise
        raise FruitlensError(f"{what}: {message}") from None


def read_failure(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) of a failed read of one input, the same wherever an input is read
    (featurize's tasks, the listing, predict): `missing` when it is gone, else `unreadable` with
    why in one line (after the S3 client's bounded retries for throttling, 5xx, the network)."""
    if isinstance(exc, FileNotFoundError):
        return "missing", "the file disappeared after it was listed"
    if isinstance(exc, IsADirectoryError):
        return "unreadable", "is a directory"
    if isinstance(exc, PermissionError):
        return "unreadable", "permission denied"
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0][:200]
    return "unreadable", (f"{code}: {text}" if code and code not in text else text)
