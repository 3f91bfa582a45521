"""The ASGI middlewares in front of the app (pure ASGI: they answer before FastAPI parses anything),
outermost first:

- `Language`: the request's language for every error's `message`.
- `SecurityHeaders`: every answer carries a Content-Security-Policy (the page's own files only; the
  API's answers may load nothing), X-Content-Type-Options, X-Frame-Options and Referrer-Policy.
- `Callers`: API keys and rate limits checked from the request's headers, before a byte of the
  body is read (`deps.admit`): a 401 or 429 costs the service a few header lookups.
- `UploadLimit`: the upload routes' bodies, read within the body deadlines (`BodyClock`), refused
  when too large (413), of the wrong type (415), or when too many are arriving at once (503).
- `Capacity`: at most `limit` requests at work (their bodies read); beyond, a JSON 503.

Every refusal is one line of JSON (`errors.error`); one sent before the body is read closes the
connection (`Connection: close`) after reading at most `DRAIN_BYTES` of it.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs

from .deps import RATE_STATE, Refused, admit, language
from .errors import LANG, REASONS, error

DRAIN_BYTES = 1024 * 1024  # read (and dropped) of a body refused from its headers, so the answer arrives
MIN_BODY_RATE = 500  # bytes/s a body must average past its first --body-timeout (Apache mod_reqtimeout's MinRate)
CLOSE = {"Connection": "close"}

# The page's policy: its own script, style, images, and the thumbnails it makes (blob:, and data: for
# those of the last answers kept in localStorage); nothing
# inline, no frames, forms and fetches to itself only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"  # JSON and images
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """Pure ASGI middleware: the security headers on every answer (the API's errors included)."""

    def __init__(self, app, api_prefix: str):
        self.app, self.api_prefix = app, api_prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = (API_CSP if scope["path"].startswith(self.api_prefix) else PAGE_CSP).encode()

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in ((b"content-security-policy", csp), *SECURITY_HEADERS) if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class Callers:
    """Pure ASGI middleware: who calls, from the headers (`deps.admit`), before the body is read.
    `keyed`: the path prefixes keys cover (identify and feedback: what runs the model or keeps a
    person's photo; the catalogue's species and images stay open, as the page's <img> cannot send a
    key); `counted`:
    the (method, path)s that run the model, counted against the caller's rate limit. What it
    admits, its RateLimit headers, is left in scope["state"] for the route's answer."""

    def __init__(self, app, service, keyed: tuple[str, ...], counted: set[tuple[str, str]]):
        self.app, self.service, self.keyed, self.counted = app, service, keyed, counted

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.keyed):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        counted = (scope["method"], path) in self.counted
        client = scope.get("client")
        try:
            rate = admit(self.service, headers, client[0] if client else None, counted)
        except Refused as refused:
            if not expects_continue(headers):
                await drain(receive, DRAIN_BYTES, 2.0)
            answer = error(refused.status, REASONS[refused.status], refused.detail, {**refused.headers, **CLOSE})
            return await answer(scope, receive, send)
        scope.setdefault("state", {})[RATE_STATE] = rate
        return await self.app(scope, receive, send)


class BodyClock:
    """The body's deadlines: each chunk within `chunk_s` of the one before, and the whole body at
    `MIN_BODY_RATE` bytes/s on average past its first `chunk_s` (a client that trickles a byte every
    few seconds is cut off, one on a slow phone network is not)."""

    def __init__(self, chunk_s: float):
        self.chunk_s, self.start, self.received = chunk_s, time.monotonic(), 0

    async def next(self, receive):
        """The next message, or None when a deadline passed."""
        allowed = self.start + self.chunk_s + self.received / MIN_BODY_RATE - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, min(self.chunk_s, allowed)))
        except TimeoutError:
            return None
        self.received += len(message.get("body", b""))
        return message


class UploadLimit:
    """Pure ASGI middleware in front of the upload routes: refuses a body over the limit (413)
    before it is parsed or spooled, whether it says its length or streams in chunks, anything but
    the route's content types (415), a body that arrives too slowly (408, `BodyClock`) and more
    than `max_receiving` bodies arriving at once (503)."""

    def __init__(self, app, paths: dict[str, tuple[str, ...]], max_bytes: int, body_timeout: float, max_receiving: int):
        self.app, self.paths, self.max_bytes = app, paths, max_bytes  # path -> the content types it takes
        self.body_timeout, self.max_receiving, self.receiving = body_timeout, max_receiving, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.receiving >= self.max_receiving:
            if not expects_continue({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}):
                await drain(receive, DRAIN_BYTES, 1.0)
            busy = error(
                503,
                "busy",
                f"more than {self.max_receiving} uploads arriving at once: retry in a second",
                {"Retry-After": "1", **CLOSE},
            )
            return await busy(scope, receive, send)
        self.receiving += 1
        try:
            body = await self._read(scope, receive, send)
        finally:
            self.receiving -= 1
        if body is None:
            return None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _read(self, scope, receive, send) -> bytes | None:
        """The whole body, or None once a refusal was sent (or the client left)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in self.paths[scope["path"]]:
            await drain(receive, self.max_bytes, self.body_timeout)
            refusal = error(
                415,
                "unsupported media type",
                f"send the photo as multipart/form-data (field 'photo'), not {ctype or 'no content type'}",
            )
            await refusal(scope, receive, send)
            return None
        length = headers.get("content-length")
        limit = self.max_bytes + 64 * 1024  # room for the multipart framing
        too_large = error(413, "too large", f"uploads are limited to {self.max_bytes:,} bytes", CLOSE)
        if length is not None and (not length.isdigit() or int(length) > limit):
            if length.isdigit() and int(length) <= 8 * limit:
                await drain(receive, 8 * limit, self.body_timeout)  # a clean answer the client can read
            await too_large(scope, receive, send)
            return None
        chunks, total, clock = [], 0, BodyClock(self.body_timeout)
        while True:
            message = await clock.next(receive)
            if message is None:
                slow = error(
                    408,
                    "too slow",
                    f"the upload stalled: each part of it within {self.body_timeout:g} s, "
                    f"at least {MIN_BODY_RATE} bytes/s past the first {self.body_timeout:g} s",
                    CLOSE,
                )
                await slow(scope, receive, send)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                await drain(receive, 8 * limit, self.body_timeout)
                await too_large(scope, receive, send)
                return None
            if not message.get("more_body"):
                return b"".join(chunks)


def expects_continue(headers: dict[str, str]) -> bool:
    """The client waits for "100 Continue" before it sends the body: a refusal needs no draining
    (and reading would make uvicorn invite the body)."""
    return headers.get("expect", "").lower() == "100-continue"


async def drain(receive, cap: int, chunk_s: float) -> None:
    """Read and drop the rest of a refused body (up to `cap` bytes, within the body deadlines), so
    the client, still sending, gets the answer rather than a reset connection."""
    total, clock = 0, BodyClock(chunk_s)
    while total <= cap:
        message = await clock.next(receive)
        if message is None or message["type"] != "http.request":
            return
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            return


class Capacity:
    """Pure ASGI middleware: at most `limit` HTTP requests at work (an upload counts once its body
    is in: `UploadLimit` is in front); the others get a JSON 503 with Retry-After at once."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await error(
                503, "busy", f"more than {self.limit} requests at once: retry in a second", {"Retry-After": "1"}
            )(scope, receive, send)
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1


class Language:
    """Pure ASGI middleware: the request's language (`lang`, else Accept-Language, else English)
    for the errors' `message`, whoever answers them (a route, a handler, the middlewares inside)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"accept-language"), None)
        token = LANG.set(language((query.get("lang") or [None])[0], accept))
        try:
            return await self.app(scope, receive, send)
        finally:
            LANG.reset(token)
