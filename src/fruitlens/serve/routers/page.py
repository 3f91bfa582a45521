"""`GET /`: the page (plain HTML/CSS/JS in `serve/static/`, mounted at `/static` by `create_app`),
outside the API and its OpenAPI document."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter()
STATIC = resources.files("fruitlens.serve") / "static"


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")
