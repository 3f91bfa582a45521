"""`GET /images/{image_id}`: an image of the index by its id; no client-sent string becomes a path."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..deps import get_service
from ..errors import ERRORS, KEYED, NOT_FOUND
from ..service import Service

router = APIRouter(tags=["images"])
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "application/octet-stream")


@router.get(
    "/images/{image_id}",
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in IMAGE_TYPES}, "description": "the image's bytes"},
        **NOT_FOUND,
        **ERRORS,
        **KEYED,
    },
)
async def image(
    image_id: str = Path(..., description="an id from `similar[].id`"), service: Service = Depends(get_service)
):
    """An image of the index, by its id (16 hex digits)."""
    index = service.index
    entry = index.entry(image_id)
    if entry is None:
        raise HTTPException(404, "no such image")
    try:
        data, media = await run_in_threadpool(index.read_image, entry)
    except (OSError, ValueError):
        raise HTTPException(404, "the image is no longer readable") from None
    except Exception:  # noqa: BLE001 - S3 failures after retries
        raise HTTPException(404, "the image is no longer readable") from None
    return Response(
        data, media_type=media, headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    )
