"""Who may call the service and how much: API keys, a rate limit per key or client address, and a
JSON 503 when more requests are in flight than the service takes.

- **Keys** (`--api-keys FILE`): one key per line as `sha256:<hex> NAME` (the file holds only the
  keys' SHA-256, never a key; `fruitlens keys add FILE NAME` makes a key, prints it once and
  appends its hash; the file is read again when it changes). A request presents its key as
  `Authorization: Bearer KEY` or `X-API-Key: KEY`. A wrong key is a 401. Requests without a key
  are served at the client address's rate, or refused (401) with `--require-key`.
- **Rate limit** (`--rate-limit N`, per minute; `--key-rate-limit N` for key holders): the `limits`
  library's moving window per key or client address over the routes that run the model (identify,
  feedback), counted in `--limits-storage` (`memory://`: this process; `redis://HOST:PORT`: every
  process and machine pointed at it; unreachable: a JSON 503, never unlimited). Every
  such answer says where the client stands in `RateLimit-Limit`, `RateLimit-Remaining`,
  `RateLimit-Reset` (seconds) and `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers); past
  the limit a 429 with `Retry-After`.
- **Capacity** (`--max-connections N`): requests beyond N in flight get a JSON 503 with
  `Retry-After: 1`, so a client can tell "busy, retry" from a failure (uvicorn's own limit, 4N,
  stays as a last resort against floods).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sys
import threading
import time

from limits import RateLimitItemPerSecond
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .. import FruitlensError

WINDOW_S = 60
STORAGE_SCHEMES = ("memory", "redis", "rediss", "valkey", "valkeys")


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class ApiKeys:
    """The keys of a file, read again when it changes (checked at most once a second): a key added
    with `fruitlens keys add` or a line removed takes effect in every process reading the file,
    without a restart. A file that becomes unreadable or malformed keeps the keys last read (and
    says so once on stderr)."""

    def __init__(self, hashes: dict[str, str], path: str | None = None):
        self.hashes = hashes  # "sha256:<hex>" -> name
        self.path = path
        self._stamp = _stamp(path)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.hashes)

    def _refresh(self) -> None:
        if self.path is None or time.monotonic() - self._checked < 1.0:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self.hashes = ApiKeys.load(self.path).hashes
            except FruitlensError as exc:
                print(f"[serve] keys: {exc}; keeping the {len(self.hashes)} key(s) read before", file=sys.stderr)

    @classmethod
    def load(cls, path: str) -> ApiKeys:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise FruitlensError(
                f"--api-keys: no file at {path} (make one with `fruitlens keys add {path} NAME`)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FruitlensError(f"--api-keys: cannot read {path}: {exc}") from None
        hashes = {}
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            digest, _, name = line.partition(" ")
            if not (
                digest.startswith("sha256:") and len(digest) == 71 and all(c in "0123456789abcdef" for c in digest[7:])
            ):
                raise FruitlensError(
                    f"--api-keys {path}, line {n}: expected `sha256:<64 hex digits> NAME` "
                    "(the file holds keys' hashes, never keys)"
                )
            hashes[digest] = name.strip() or f"key {n}"
        if not hashes:
            raise FruitlensError(f"--api-keys: {path} holds no key")
        return cls(hashes, path)

    def name_of(self, key: str) -> str | None:
        """The key's name, or None for a key that is not in the file. Looked up by its SHA-256: a
        lookup's timing tells nothing of a key, only of a hash nobody can invert."""
        self._refresh()
        return self.hashes.get(key_hash(key))


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None


def add_key(path: str, name: str) -> str:
    """A new random key: its hash appended to `path` (created with owner-only permissions); the key
    returned, to be shown once."""
    if not name or any(c.isspace() for c in name):
        raise FruitlensError("a key's NAME is one word (who holds it)")
    key = "fl_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{key_hash(key)} {name}\n")
    return key


class LimitsUnavailable(FruitlensError):
    """The limits' storage (Redis) cannot be reached: the request is refused (503), not let through."""


def limits_storage(uri: str) -> Storage:
    """The `limits` storage of `--limits-storage`: `memory://` (this process only) or
    `redis://HOST:PORT[/DB]` (`rediss://` with TLS; Valkey speaks the same), shared by every
    process pointed at it. Checked at once: a one-line FruitlensError when it cannot be used."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme not in STORAGE_SCHEMES:
        raise FruitlensError(f"--limits-storage {uri}: use memory:// or redis://HOST:PORT (rediss:// with TLS)")
    try:
        store = (
            storage_from_string(uri, socket_timeout=2, socket_connect_timeout=2)
            if scheme != "memory"
            else MemoryStorage()
        )
    except ConfigurationError as exc:
        if "prerequisite" in str(exc) or "redis" in str(exc).lower():
            raise FruitlensError(
                f"--limits-storage {scheme}:// needs the Redis client: pip install 'fruitlens[redis]'"
            ) from None
        raise FruitlensError(f"--limits-storage {uri}: {exc}") from None
    if not store.check():
        raise FruitlensError(f"--limits-storage: cannot reach {_shown(uri)} (is the Redis/Valkey server running?)")
    return store


def _shown(uri: str) -> str:
    """The URI without its password, to be printed."""
    head, sep, tail = uri.partition("://")
    return head + sep + tail.rsplit("@", 1)[-1] if "@" in tail else uri


class RateLimiter:
    """`limit` requests per `window_s` seconds for each client: the `limits` library's moving
    window, counted in `storage` (this process's memory, or Redis shared by every process)."""

    def __init__(self, limit: int, storage: Storage | None = None, name: str = "address", window_s: int = WINDOW_S):
        self.limit, self.window = limit, window_s
        self.item = RateLimitItemPerSecond(limit, window_s, namespace=f"fruitlens-{name}")
        self.strategy = MovingWindowRateLimiter(storage if storage is not None else MemoryStorage())

    def take(self, who: str) -> tuple[bool, int, float]:
        """Count one request of `who`: (allowed, remaining, seconds until a request is free again).
        Raises LimitsUnavailable when the shared storage cannot be reached."""
        try:
            allowed = self.strategy.hit(self.item, who)
            stats = self.strategy.get_window_stats(self.item, who)
        except Exception as exc:  # noqa: BLE001 - the storage's client errors (redis.ConnectionError, timeouts)
            raise LimitsUnavailable(f"the rate limits' storage is unreachable ({type(exc).__name__})") from None
        return allowed, max(0, stats.remaining), max(0.0, stats.reset_time - time.time())

    def headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(reset)),
            "RateLimit-Policy": f"{self.limit};w={int(self.window)}",
        }
