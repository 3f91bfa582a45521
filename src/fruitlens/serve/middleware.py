"""The ASGI middlewares in front of the app (pure ASGI: they answer before FastAPI parses anything):
`UploadLimit` on the upload routes, `Capacity` on every request."""

from __future__ import annotations

from urllib.parse import parse_qs

from .deps import language
from .errors import LANG, error


class UploadLimit:
    """Pure ASGI middleware in front of the upload routes: refuses a body over the limit (413)
    before it is parsed or spooled, whether it says its length or streams in chunks, and anything
    but multipart/form-data (415)."""

    def __init__(self, app, paths: dict[str, tuple[str, ...]], max_bytes: int):
        self.app, self.paths, self.max_bytes = app, paths, max_bytes  # path -> the content types it takes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in self.paths[scope["path"]]:
            await self._drain(receive, self.max_bytes)
            refusal = error(
                415,
                "unsupported media type",
                f"send the photo as multipart/form-data (field 'photo'), not {ctype or 'no content type'}",
            )
            return await refusal(scope, receive, send)
        length = headers.get("content-length")
        limit = self.max_bytes + 64 * 1024  # room for the multipart framing
        if length is not None and (not length.isdigit() or int(length) > limit):
            if length.isdigit() and int(length) <= 8 * limit:
                await self._drain(receive, 8 * limit)  # a clean answer the client can read
            return await error(413, "too large", f"uploads are limited to {self.max_bytes:,} bytes")(
                scope, receive, send
            )
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                await self._drain(receive, 8 * limit)
                return await error(413, "too large", f"uploads are limited to {self.max_bytes:,} bytes")(
                    scope, receive, send
                )
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive, cap: int) -> None:
        """Read and drop the rest of a refused body (up to `cap` bytes), so the client, still
        sending, gets the answer rather than a reset connection."""
        total = 0
        while total <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                return


class Capacity:
    """Pure ASGI middleware: at most `limit` HTTP requests in flight; the others get a JSON 503
    with Retry-After at once (uvicorn's plain-text 503 only beyond 4x that)."""

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
