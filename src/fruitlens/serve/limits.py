"""Who may call the service and how much: API keys, a rate limit per key or client address, and a
JSON 503 when more requests are in flight than the service takes.

- **Keys** (`--api-keys FILE`): one key per line as `sha256:<hex> NAME` (the file holds only the
  keys' SHA-256, never a key; `fruitlens keys add FILE NAME` makes a key, prints it once and
  appends its hash). A request presents its key as `Authorization: Bearer KEY` or `X-API-Key: KEY`.
  A wrong key is a 401. Requests without a key are served at the client address's rate, or
  refused (401) with `--require-key`.
- **Rate limit** (`--rate-limit N`, per minute; `--key-rate-limit N` for key holders): a sliding
  window per key or client address over the routes that run the model (identify, feedback). Every
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
import threading
import time
from collections import deque

from .. import FruitlensError

WINDOW_S = 60.0


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class ApiKeys:
    def __init__(self, hashes: dict[str, str]):
        self.hashes = hashes  # "sha256:<hex>" -> name

    def __len__(self) -> int:
        return len(self.hashes)

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
        return cls(hashes)

    def name_of(self, key: str) -> str | None:
        """The key's name, or None for a key that is not in the file. Looked up by its SHA-256: a
        lookup's timing tells nothing of a key, only of a hash nobody can invert."""
        return self.hashes.get(key_hash(key))


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


class RateLimiter:
    """A sliding window of `limit` requests per `WINDOW_S` seconds for each client."""

    def __init__(self, limit: int, window_s: float = WINDOW_S):
        self.limit, self.window = limit, window_s
        self._hits: dict[str, deque] = {}
        self._lock = threading.Lock()

    def take(self, who: str, now: float | None = None) -> tuple[bool, int, float]:
        """Count one request of `who`: (allowed, remaining, seconds until a request is free again)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(who, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False, 0, max(0.0, hits[0] + self.window - now)
            hits.append(now)
            if len(self._hits) > 100_000:  # forget idle clients: memory stays bounded
                for k in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window][:50_000]:
                    del self._hits[k]
            reset = hits[0] + self.window - now
            return True, self.limit - len(hits), reset

    def headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(reset)),
            "RateLimit-Policy": f"{self.limit};w={int(self.window)}",
        }
