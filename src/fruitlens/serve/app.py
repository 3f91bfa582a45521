"""The HTTP API and the page, built from a loaded `Service` (no loading here: testable as it is).

Every error is JSON on one line: `{"ok": false, "reason": ..., "detail": ...}` with a 4xx status
for what the client sent (a photo that cannot be used keeps decode's reason and detail), so a bad
upload never costs a 500 and the service keeps serving. Images are served by their id in the
index only; no client-sent string becomes a path.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal, Optional

from fastapi import FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..embedding.decode import DecodeError
from .metadata import ATTRIBUTION
from .service import Service

API = "/api/v1"
STATIC = resources.files("fruitlens.serve") / "static"


# -- response models (the OpenAPI schema) ------------------------------------------------------
class ErrorBody(BaseModel):
    ok: Literal[False] = False
    reason: str
    detail: str


class Attribution(BaseModel):
    text: str
    author: str
    dataset: str
    source: str
    license: str
    license_url: str
    changes: str


class Attribute(BaseModel):
    attribute: str
    value: str
    code: int


class SpeciesInfo(BaseModel):
    name: str
    has_information: bool
    metadata_class: Optional[str]
    attributes: list[Attribute]
    note: Optional[str]


class SpeciesAnswer(BaseModel):
    species: SpeciesInfo
    attribution: Attribution


class SpeciesItem(BaseModel):
    name: str
    has_information: bool
    metadata_class: Optional[str]
    url: str


class SpeciesList(BaseModel):
    count: int
    species: list[SpeciesItem]
    attribution: Attribution


class TopItem(BaseModel):
    label: str
    probability: float


class Similar(BaseModel):
    id: str
    label: Optional[str]
    split: Optional[str]
    similarity: float
    url: str


class Identified(BaseModel):
    ok: Literal[True] = True
    predicted: str
    probability: float
    not_sure: bool
    why_not_sure: Optional[str]
    novelty: float
    top5: list[TopItem]
    species: SpeciesInfo
    similar: list[Similar]
    search: str
    timing_ms: dict[str, float]
    attribution: Attribution


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    classes: int
    indexed_images: int
    search: str
    interpreters: int


def _error(status: int, reason: str, detail: str) -> JSONResponse:
    detail = " ".join(str(detail).split())[:300]
    return JSONResponse({"ok": False, "reason": reason, "detail": detail}, status_code=status)


ERRORS = {400: {"model": ErrorBody, "description": "malformed request"},
          422: {"model": ErrorBody, "description": "invalid parameter, or a photo that cannot be used"}}
NOT_FOUND = {404: {"model": ErrorBody, "description": "no such resource"}}
REASONS = {400: "bad request", 404: "not found", 405: "method not allowed", 406: "not acceptable",
           411: "length required", 413: "too large", 415: "unsupported media type", 422: "invalid request"}


class UploadLimit:
    """Pure ASGI middleware in front of the upload route: refuses a body over the limit (413)
    before it is parsed or spooled, whether it says its length or streams in chunks, and anything
    but multipart/form-data (415)."""

    def __init__(self, app, path: str, max_bytes: int):
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            await self._drain(receive, self.max_bytes)
            return await _error(415, "unsupported media type",
                                f"send the photo as multipart/form-data (field 'photo'), not {ctype or 'no content type'}")(
                scope, receive, send)
        length = headers.get("content-length")
        limit = self.max_bytes + 64 * 1024  # room for the multipart framing
        if length is not None and (not length.isdigit() or int(length) > limit):
            if length.isdigit() and int(length) <= 8 * limit:
                await self._drain(receive, 8 * limit)  # a clean answer the client can read
            return await _error(413, "too large", f"uploads are limited to {self.max_bytes:,} bytes")(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                await self._drain(receive, 8 * limit)
                return await _error(413, "too large", f"uploads are limited to {self.max_bytes:,} bytes")(
                    scope, receive, send)
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


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="fruitlens", version=__version__,
                  description="Identify a fruit from a photo: top-5 species, 'not sure', the species' information "
                              "(Fruits-360 metadata by Mihai Oltean, CC BY-SA 4.0) and the most similar indexed images.",
                  openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None)
    index, catalog, cfg = service.index, service.catalog, service.cfg

    # -- errors: one line of JSON, never a traceback ---------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, REASONS.get(exc.status_code, "error"), exc.detail or "")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {'missing' if e.get('type') == 'missing' else e.get('msg', 'invalid')}")
        return _error(422, "invalid request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: still one line
        return _error(500, "internal error", type(exc).__name__)

    # -- routes ------------------------------------------------------------------------------------
    def species_json(name: str) -> dict:
        s = catalog.get(name)
        return s.to_json()

    @app.post(f"{API}/identify", response_model=Identified, tags=["identify"],
              responses={**ERRORS, 413: {"model": ErrorBody, "description": "upload too large"},
                         415: {"model": ErrorBody, "description": "not multipart/form-data, or not an image part"}})
    async def identify(photo: UploadFile = File(..., description="the photo: JPEG, PNG, WebP, BMP or GIF"),
                       k: int = Query(cfg.neighbours, ge=0, le=50, description="how many similar images")):
        """Identify the fruit in a photo (multipart field `photo`)."""
        ptype = (photo.content_type or "").split(";")[0].strip().lower()
        if ptype and not (ptype.startswith("image/") or ptype == "application/octet-stream"):
            return _error(415, "unsupported media type", f"the photo part is {ptype}: send an image")
        data = await photo.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            return _error(413, "too large", f"uploads are limited to {cfg.max_upload_bytes:,} bytes")
        try:
            result = await run_in_threadpool(service.identify, data)
        except DecodeError as exc:
            return _error(422, exc.reason, exc.detail)
        p = result.prediction
        similar = [{"id": n.entry.id, "label": n.entry.label, "split": n.entry.split,
                    "similarity": round(n.similarity, 6), "url": f"{API}/images/{n.entry.id}"}
                   for n in index.search(result.inputs, k)]
        return {**p.to_json(), "ok": True, "species": species_json(p.predicted), "similar": similar,
                "search": index.kind, "timing_ms": result.timing_ms, "attribution": ATTRIBUTION}

    @app.get(f"{API}/species", response_model=SpeciesList, tags=["species"])
    async def species_list():
        """Every class the model knows, and whether the metadata has information on it."""
        items = [{"name": s.name, "has_information": s.metadata_class is not None,
                  "metadata_class": s.metadata_class, "url": f"{API}/species/{_quote(s.name)}"}
                 for s in catalog.species.values()]
        return {"count": len(items), "species": items, "attribution": ATTRIBUTION}

    @app.get(f"{API}/species/{{name}}", response_model=SpeciesAnswer, tags=["species"], responses={**NOT_FOUND, **ERRORS})
    async def species(name: str = Path(..., description="a class name, as in the species list")):
        """One species' information, in the dictionary's words."""
        if catalog.get(name) is None:
            raise HTTPException(404, "no such species (see /api/v1/species)")
        return {"species": species_json(name), "attribution": ATTRIBUTION}

    @app.get(f"{API}/images/{{image_id}}", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}, "image/bmp": {},
                                          "image/gif": {}, "application/octet-stream": {}},
                              "description": "the image's bytes"}, **NOT_FOUND, **ERRORS})
    async def image(image_id: str = Path(..., description="an id from `similar[].id`")):
        """An image of the index, by its id (16 hex digits)."""
        entry = index.entry(image_id)
        if entry is None:
            raise HTTPException(404, "no such image")
        try:
            data, media = await run_in_threadpool(index.read_image, entry)
        except (OSError, ValueError):
            raise HTTPException(404, "the image is no longer readable") from None
        except Exception:  # noqa: BLE001 - S3 failures after retries
            raise HTTPException(404, "the image is no longer readable") from None
        return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400",
                                                          "X-Content-Type-Options": "nosniff"})

    @app.get(f"{API}/health", response_model=Health, tags=["service"])
    async def health():
        return {"status": "ok", "version": __version__, "classes": len(service.model.classes),
                "indexed_images": len(index), "search": index.kind, "interpreters": service.interpreters}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(UploadLimit, path=f"{API}/identify", max_bytes=cfg.max_upload_bytes)
    return app


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")

