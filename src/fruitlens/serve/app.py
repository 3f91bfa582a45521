"""The HTTP API and the page, built from a loaded `Service` (no loading here: testable as it is).

Every error is JSON on one line: `{"ok": false, "reason": ..., "detail": ...}` with a 4xx status
for what the client sent (a photo that cannot be used keeps decode's reason and detail), a 429 past
the rate limit and a 503 past the service's capacity, both with `Retry-After`; a bad upload never
costs a 500 and the service keeps serving. Images are served by their id in the index only; no
client-sent string becomes a path. Names and information come in English or French (`lang`, else
the `Accept-Language` header, else English).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Literal, Optional

from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..catalogue import LANGUAGES
from ..embedding.decode import DecodeError
from .feedback import RECEIPT
from .metadata import FRUITS360
from .service import Service

API = "/api/v1"
STATIC = resources.files("fruitlens.serve") / "static"
PHOTO_ID = re.compile(r"^[0-9a-f]{32}$")


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
    display_name: str
    family: str
    family_name: str
    has_information: bool
    metadata_class: Optional[str]
    attributes: list[Attribute]
    description: Optional[str]
    note: Optional[str]
    sources: list[Attribution]


class SpeciesAnswer(BaseModel):
    species: SpeciesInfo
    lang: str
    attribution: Attribution
    attributions: list[Attribution]


class SpeciesItem(BaseModel):
    name: str
    display_name: str
    family: str
    family_name: str
    has_information: bool
    metadata_class: Optional[str]
    url: str


class SpeciesList(BaseModel):
    count: int
    lang: str
    species: list[SpeciesItem]
    attribution: Attribution
    attributions: list[Attribution]


class TopItem(BaseModel):
    label: str
    name: str
    probability: float


class Similar(BaseModel):
    id: str
    label: Optional[str]
    split: Optional[str]
    similarity: float
    url: str


class PhotoAnswer(BaseModel):
    id: str
    predicted: str
    probability: float
    not_sure: bool
    level: Optional[str]
    novelty: float


class Identified(BaseModel):
    ok: Literal[True] = True
    predicted: str
    probability: float
    not_sure: bool
    why_not_sure: Optional[str]
    novelty: float
    level: Optional[str]
    answer: Optional[str]
    answer_name: Optional[str]
    family: Optional[str]
    family_name: Optional[str]
    family_probability: Optional[float]
    top5: list[TopItem]
    species: SpeciesInfo
    photos: list[PhotoAnswer]
    combined: str
    similar: list[Similar]
    search: str
    timing_ms: dict[str, float]
    lang: str
    attribution: Attribution
    attributions: list[Attribution]


class FeedbackAnswer(BaseModel):
    ok: Literal[True] = True
    stored: bool
    receipt: Optional[str]
    confirmed: Optional[bool]
    keep_until: Optional[str]
    delete_url: Optional[str]
    message: str


class Deleted(BaseModel):
    ok: Literal[True] = True
    deleted: bool


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    classes: int
    indexed_images: int
    search: str
    interpreters: int
    feedback: bool
    languages: list[str]


def _error(status: int, reason: str, detail: str, headers: dict | None = None) -> JSONResponse:
    detail = " ".join(str(detail).split())[:300]
    return JSONResponse({"ok": False, "reason": reason, "detail": detail}, status_code=status, headers=headers)


ERRORS = {400: {"model": ErrorBody, "description": "malformed request"},
          422: {"model": ErrorBody, "description": "invalid parameter, or a photo that cannot be used"}}
NOT_FOUND = {404: {"model": ErrorBody, "description": "no such resource"}}
LIMITED = {401: {"model": ErrorBody, "description": "a missing or unknown API key (when keys are required)"},
           429: {"model": ErrorBody, "description": "past the rate limit: retry after Retry-After seconds"},
           503: {"model": ErrorBody, "description": "busy: retry after Retry-After seconds"}}
REASONS = {400: "bad request", 401: "unauthorized", 404: "not found", 405: "method not allowed", 406: "not acceptable",
           411: "length required", 413: "too large", 415: "unsupported media type", 422: "invalid request",
           429: "too many requests", 503: "busy"}


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


class Capacity:
    """Pure ASGI middleware: at most `limit` HTTP requests in flight; the others get a JSON 503
    with Retry-After at once (uvicorn's plain-text 503 only beyond 4x that)."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await _error(503, "busy", f"more than {self.limit} requests at once: retry in a second",
                                {"Retry-After": "1"})(scope, receive, send)
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1


def language(lang: Optional[str], accept: Optional[str]) -> str:
    """`lang` when it is one we have, else the first of Accept-Language's we have, else English."""
    if lang and lang.strip().lower()[:2] in LANGUAGES:
        return lang.strip().lower()[:2]
    ranked = []
    for i, part in enumerate((accept or "")[:500].split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        ranked.append((-q, i, tag.strip().lower()[:2]))
    for _, _, tag in sorted(ranked):
        if tag in LANGUAGES:
            return tag
    return "en"


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="fruitlens", version=__version__,
                  description="Identify a fruit from 1 to 5 photos of it: the species (or its family when only the "
                              "family is sure, or 'not sure'), its names and information in English or French, and "
                              "the most similar indexed images; corrections kept with consent.",
                  openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None)
    index, catalog, cfg, names = service.index, service.catalog, service.cfg, service.catalog.names
    attributions = catalog.attributions or [FRUITS360]

    # -- errors: one line of JSON, never a traceback ---------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, REASONS.get(exc.status_code, "error"), exc.detail or "",
                      getattr(exc, "headers", None))

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

    # -- who is calling, and how often -------------------------------------------------------------
    async def limited(request: Request) -> dict:
        """The caller (a key's name or the client address) counted against its rate limit; the
        RateLimit headers to send back. 401 for a wrong key (or none when keys are required), 429 past
        the limit."""
        presented = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not presented and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        limiter, who = service.address_limit, f"address {request.client.host if request.client else '?'}"
        if service.keys is not None and presented:
            name = service.keys.name_of(presented)
            if name is None:
                raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
            limiter, who = service.key_limit, f"key {name}"
        elif cfg.require_key:
            raise HTTPException(401, "this service needs an API key (Authorization: Bearer KEY or X-API-Key)",
                                headers={"WWW-Authenticate": "Bearer"})
        allowed, remaining, reset = limiter.take(who)
        headers = limiter.headers(remaining, reset)
        if not allowed:
            raise HTTPException(429, f"more than {limiter.limit} requests a minute: retry in {int(reset) + 1} s",
                                headers={**headers, "Retry-After": str(int(reset) + 1)})
        return headers

    def lang_of(request: Request, lang: Optional[str]) -> str:
        return language(lang, request.headers.get("accept-language"))

    def species_json(name: str, lang: str) -> dict:
        return catalog.get(name).to_json(names, lang)

    # -- routes ------------------------------------------------------------------------------------
    @app.post(f"{API}/identify", response_model=Identified, tags=["identify"],
              responses={**ERRORS, **LIMITED, 413: {"model": ErrorBody, "description": "upload too large"},
                         415: {"model": ErrorBody, "description": "not multipart/form-data, or not an image part"}})
    async def identify(request: Request,
                       photo: list[UploadFile] = File(..., description="1 to 5 photos of the same fruit (repeat the "
                                                                       "field): JPEG, PNG, WebP, BMP or GIF"),
                       k: int = Query(cfg.neighbours, ge=0, le=50, description="how many similar images"),
                       lang: Optional[str] = Query(None, max_length=35, description="names and information: en or fr "
                                                                                     "(else Accept-Language, else en)"),
                       rate: dict = Depends(limited)):
        """Identify the fruit in 1 to 5 photos of it (multipart field `photo`, repeated): one answer,
        each photo's probabilities averaged, at species level, at family level, or 'not sure'."""
        lang = lang_of(request, lang)
        if not 1 <= len(photo) <= cfg.max_photos:
            return _error(422, "invalid request", f"send 1 to {cfg.max_photos} photos of the same fruit, "
                                                  f"got {len(photo)}", rate)
        datas = []
        for i, part in enumerate(photo):
            ptype = (part.content_type or "").split(";")[0].strip().lower()
            if ptype and not (ptype.startswith("image/") or ptype == "application/octet-stream"):
                where = f"photo {i + 1} " if len(photo) > 1 else "the photo part "
                return _error(415, "unsupported media type", f"{where}is {ptype}: send an image", rate)
            data = await part.read(cfg.max_upload_bytes + 1)
            if len(data) > cfg.max_upload_bytes:
                return _error(413, "too large", f"photos are limited to {cfg.max_upload_bytes:,} bytes each", rate)
            datas.append(data)
        try:
            result = await run_in_threadpool(service.identify, datas)
        except DecodeError as exc:
            return _error(422, exc.reason, exc.detail, rate)
        p = result.prediction
        ids = [service.photos.put(d) for d in datas]
        alone = result.photos or [p]
        similar = [{"id": n.entry.id, "label": n.entry.label, "split": n.entry.split,
                    "similarity": round(n.similarity, 6), "url": f"{API}/images/{n.entry.id}"}
                   for n in index.search(result.inputs, k)]
        body = p.to_json()
        body["top5"] = [{**t, "name": names.name(t["label"], lang)} for t in body["top5"]]
        body.update({
            "ok": True, "answer_name": names.name(p.answer, lang) if p.answer else None,
            "family_name": names.name(p.family, lang) if p.family else None,
            "species": species_json(p.predicted, lang),
            "photos": [{"id": pid, "predicted": a.predicted, "probability": round(a.top[0][1], 6),
                        "not_sure": a.not_sure, "level": a.level, "novelty": round(a.novelty, 6)}
                       for pid, a in zip(ids, alone)],
            "combined": "the photos' probabilities averaged; unlike the training images only if every photo is"
                        if len(datas) > 1 else "one photo",
            "similar": similar, "search": index.kind, "timing_ms": result.timing_ms, "lang": lang,
            "attribution": attributions[0], "attributions": attributions})
        return JSONResponse(body, headers=rate)

    @app.get(f"{API}/species", response_model=SpeciesList, tags=["species"], responses=ERRORS)
    async def species_list(request: Request, lang: Optional[str] = Query(None, max_length=35)):
        """Every species the model knows, its names, and whether there is information on it."""
        lang = lang_of(request, lang)
        items = []
        for s in catalog.species.values():
            j = s.to_json(names, lang)
            items.append({k: j[k] for k in ("name", "display_name", "family", "family_name", "has_information",
                                            "metadata_class")} | {"url": f"{API}/species/{_quote(s.name)}"})
        return {"count": len(items), "lang": lang, "species": items, "attribution": attributions[0],
                "attributions": attributions}

    @app.get(f"{API}/species/{{name}}", response_model=SpeciesAnswer, tags=["species"], responses={**NOT_FOUND, **ERRORS})
    async def species(request: Request, name: str = Path(..., description="a species' name, as in the species list"),
                      lang: Optional[str] = Query(None, max_length=35)):
        """One species' names and information."""
        if catalog.get(name) is None:
            raise HTTPException(404, "no such species (see /api/v1/species)")
        lang = lang_of(request, lang)
        return {"species": species_json(name, lang), "lang": lang, "attribution": attributions[0],
                "attributions": attributions}

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

    @app.post(f"{API}/feedback", response_model=FeedbackAnswer, tags=["feedback"],
              responses={**ERRORS, **NOT_FOUND, **LIMITED, 413: {"model": ErrorBody, "description": "upload too large"},
                         415: {"model": ErrorBody, "description": "not multipart/form-data, or not an image part"}})
    async def feedback(request: Request,
                       said: str = Form(..., max_length=200, description="what the fruit is: a species of the "
                                                                         "catalogue, or free text"),
                       consent: bool = Form(False, description="true: the person agrees that the photo is kept "
                                                               "(without metadata) to train the next model"),
                       answered: Optional[str] = Form(None, max_length=200, description="what the app answered"),
                       photo_id: Optional[str] = Form(None, max_length=64, description="a photo's id from identify's "
                                                                                     "`photos[].id` (while cached)"),
                       photo: Optional[UploadFile] = File(None, description="the photo, when not by its id"),
                       rate: dict = Depends(limited)):
        """A correction ("it is a quince"). With consent, the photo is stored, stripped of its
        metadata, where the next training reads it; a receipt id deletes it. Without consent nothing
        is stored."""
        if service.feedback is None:
            return _error(404, "not found", "this service keeps no feedback (started without --feedback)", rate)
        said = " ".join("".join(c for c in said if c.isprintable()).split())
        if not said:
            return _error(422, "invalid request", "said: what the fruit is, in words", rate)
        if not consent:
            return JSONResponse({"ok": True, "stored": False, "receipt": None, "confirmed": None, "keep_until": None,
                                 "delete_url": None, "message": "nothing was stored: no consent"}, headers=rate)
        data = None
        if photo_id:
            if not PHOTO_ID.match(photo_id):
                return _error(422, "invalid request", "photo_id: 32 hex digits from identify's photos[].id", rate)
            data = service.photos.get(photo_id)
            if data is None:
                return _error(404, "not found", "no such photo: send the photo itself (ids last "
                                                f"{cfg.photo_cache_s // 60} minutes)", rate)
        elif photo is not None:
            data = await photo.read(cfg.max_upload_bytes + 1)
            if len(data) > cfg.max_upload_bytes:
                return _error(413, "too large", f"photos are limited to {cfg.max_upload_bytes:,} bytes", rate)
        if not data:
            return _error(422, "invalid request", "send the photo (field photo) or its id (field photo_id)", rate)
        try:  # decoded once, off the event loop: a photo we would not identify is not kept either
            receipt = await run_in_threadpool(service.feedback.store, data, said, answered, cfg.max_pixels)
        except DecodeError as exc:
            return _error(422, exc.reason, exc.detail, rate)
        return JSONResponse({"ok": True, "stored": True, "receipt": receipt.id, "confirmed": receipt.confirmed,
                             "keep_until": receipt.keep_until, "delete_url": f"{API}/feedback/{receipt.id}",
                             "message": "stored without its metadata, to train the next model"
                             if receipt.confirmed else
                             "stored without its metadata, apart until a person files it under a species"},
                            headers=rate)

    @app.delete(f"{API}/feedback/{{receipt}}", response_model=Deleted, tags=["feedback"],
                responses={**NOT_FOUND, **ERRORS})
    async def delete_feedback(receipt: str = Path(..., description="the receipt id feedback returned")):
        """Delete a stored photo and its receipt, at once."""
        if service.feedback is None:
            raise HTTPException(404, "this service keeps no feedback")
        if not RECEIPT.match(receipt):
            raise HTTPException(404, "no such receipt")
        if not await run_in_threadpool(service.feedback.delete, receipt):
            raise HTTPException(404, "no such receipt (already deleted, or past its retention period)")
        return {"ok": True, "deleted": True}

    @app.get(f"{API}/health", response_model=Health, tags=["service"])
    async def health():
        return {"status": "ok", "version": __version__, "classes": len(service.model.classes),
                "indexed_images": len(index), "search": index.kind, "interpreters": service.interpreters,
                "feedback": service.feedback is not None, "languages": list(LANGUAGES)}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(UploadLimit, paths={f"{API}/identify": ("multipart/form-data",),
                                           f"{API}/feedback": ("multipart/form-data", "application/x-www-form-urlencoded")},
                       max_bytes=cfg.max_upload_bytes * cfg.max_photos)
    app.add_middleware(Capacity, limit=cfg.max_connections)
    return app


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
