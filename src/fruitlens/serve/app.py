"""The HTTP API and the page, built from a loaded `Service` (no loading here: testable as it is).

Every error is JSON on one line: `{"ok": false, "reason": ..., "detail": ...}` with a 4xx status
for what the client sent (a photo that cannot be used keeps decode's reason and detail), a 429 past
the rate limit and a 503 past the service's capacity, both with `Retry-After`; a bad upload never
costs a 500 and the service keeps serving. Images are served by their id in the index only; no
client-sent string becomes a path. Names and information come in English or French (`lang`, else
the `Accept-Language` header, else English).

`create_app` only assembles: the routers (`routers/`, one per resource), the error handlers
(`errors.py`), the middlewares (`middleware.py`); the routes reach the service through
`deps.get_service`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .errors import HANDLERS
from .middleware import Callers, Capacity, Language, SecurityHeaders, UploadLimit
from .routers import API, feedback, health, identify, images, page, species
from .service import Service

# What --require-key covers: the routes that run the model or keep a person's photos (identify,
# feedback and its DELETE). The species, the indexed images (public datasets' photos, which the
# page shows with <img>, which cannot send a key), health and the schema stay open (README).
KEYED_PATHS = (f"{API}/identify", f"{API}/feedback")
DESCRIPTION = (
    "Identify a fruit from 1 to 5 photos of it: the species (or its family when only the family is sure, "
    "or 'not sure'), its names and information in English or French, and the most similar indexed "
    "images; corrections kept with consent."
)


def create_app(service: Service) -> FastAPI:
    cfg = service.cfg
    app = FastAPI(
        title="fruitlens",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
        exception_handlers=HANDLERS,
    )
    app.state.service = service
    app.include_router(identify.make_router(cfg.neighbours), prefix=API)
    app.include_router(species.router, prefix=API)
    app.include_router(images.router, prefix=API)
    app.include_router(feedback.router, prefix=API)
    app.include_router(health.router, prefix=API)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=str(page.STATIC)), name="static")
    uploads = {
        f"{API}/identify": ("multipart/form-data",),  # path -> the content types it takes
        f"{API}/feedback": ("multipart/form-data", "application/x-www-form-urlencoded"),
    }
    # Starlette runs the middleware added last first: Language, SecurityHeaders, Callers, UploadLimit, Capacity.
    app.add_middleware(Capacity, limit=cfg.max_connections)
    app.add_middleware(
        UploadLimit,
        paths=uploads,
        max_bytes=cfg.max_upload_bytes * cfg.max_photos,
        body_timeout=cfg.body_timeout,
        max_receiving=4 * cfg.max_connections,
    )
    app.add_middleware(
        Callers,
        service=service,
        keyed=KEYED_PATHS,
        counted={("POST", path) for path in uploads},
    )
    app.add_middleware(SecurityHeaders, api_prefix=f"{API}/")
    app.add_middleware(Language)  # outermost: every error below it speaks the request's language
    return app
