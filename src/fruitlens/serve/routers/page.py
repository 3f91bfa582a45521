"""`GET /`: the page (plain HTML/CSS/JS in `serve/static/`, mounted at `/static` by `create_app`),
and what makes it an app a phone keeps: the web app manifest, its icons (PNG, drawn here by code:
the same lens as `static/icon.svg`) and the favicon. Outside the API and its OpenAPI document."""

from __future__ import annotations

import functools
import io
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

router = APIRouter()
STATIC = resources.files("fruitlens.serve") / "static"
GREEN, LIGHT, LEAF = (46, 125, 50), (247, 250, 245), (165, 214, 167)
ICON_SIZES = (192, 512)
MANIFEST = {
    "name": "fruitlens",
    "short_name": "fruitlens",
    "description": "Which fruit is it? / Quel fruit est-ce ?",
    "start_url": "/",
    "scope": "/",
    "display": "standalone",
    "background_color": "#f7faf5",
    "theme_color": "#2e7d32",
    "icons": [
        *(
            {"src": f"/static/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png", "purpose": "any"}
            for n in ICON_SIZES
        ),
        {"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml"},
    ],
}
CACHE = {"Cache-Control": "public, max-age=86400"}


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")


@router.get("/manifest.webmanifest", include_in_schema=False)
async def manifest():
    return JSONResponse(MANIFEST, media_type="application/manifest+json", headers=CACHE)


@functools.cache
def icon(size: int) -> bytes:
    """The app's icon as a PNG of size x size: a light lens with a leaf on green."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 - Pillow is the decoder's; loaded when an icon is asked for

    scale = size / 64
    img = Image.new("RGB", (size, size), GREEN)
    d = ImageDraw.Draw(img)

    def box(cx: float, cy: float, r: float) -> tuple[int, int, int, int]:
        return (round((cx - r) * scale), round((cy - r) * scale), round((cx + r) * scale), round((cy + r) * scale))

    d.ellipse(box(32, 37, 17), fill=LIGHT)
    d.ellipse(box(32, 37, 9), outline=GREEN, width=max(1, round(4 * scale)))
    d.polygon([(round(x * scale), round(y * scale)) for x, y in ((32, 20), (36, 12), (45, 9), (42, 16))], fill=LEAF)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@functools.cache
def favicon_bytes() -> bytes:
    from PIL import Image  # noqa: PLC0415 - as above

    out = io.BytesIO()
    Image.open(io.BytesIO(icon(64))).save(out, format="ICO", sizes=[(16, 16), (32, 32), (48, 48)])
    return out.getvalue()


@router.get("/static/icon-{size}.png", include_in_schema=False)
async def icon_png(size: int):
    if size not in ICON_SIZES:
        return Response(status_code=404)
    return Response(icon(size), media_type="image/png", headers=CACHE)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return Response(favicon_bytes(), media_type="image/x-icon", headers=CACHE)
