"""`POST /feedback` and `DELETE /feedback/{receipt}`: a user's correction, kept only with consent,
and its deletion by the receipt id."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...embedding.decode import DecodeError
from ..decodes import Busy
from ..deps import get_service, limited
from ..errors import ERRORS, KEYED, LIMITED, NOT_FOUND, UPLOADS, error
from ..feedback import RECEIPT
from ..schemas import Deleted, FeedbackAnswer
from ..service import Service
from . import API

router = APIRouter(tags=["feedback"])
PHOTO_ID = re.compile(r"[0-9a-f]{32}")  # fullmatch: no trailing newline ($ would take one)


@router.post("/feedback", response_model=FeedbackAnswer, responses={**ERRORS, **NOT_FOUND, **LIMITED, **UPLOADS})
async def feedback(
    said: str = Form(..., max_length=200, description="what the fruit is: a species of the catalogue, or free text"),
    consent: bool = Form(
        False, description="true: the person agrees that the photo is kept (without metadata) to train the next model"
    ),
    answered: str | None = Form(None, max_length=200, description="what the app answered"),
    photo_id: str | None = Form(
        None, max_length=64, description="a photo's id from identify's `photos[].id` (while cached)"
    ),
    photo: UploadFile | None = File(None, description="the photo, when not by its id"),
    rate: dict = Depends(limited),
    service: Service = Depends(get_service),
):
    """A correction ("it is a quince"). With consent, the photo is stored, stripped of its
    metadata, where the next training reads it; a receipt id deletes it. Without consent nothing
    is stored."""
    cfg = service.cfg
    if service.feedback is None:
        return error(404, "not found", "this service keeps no feedback (started without --feedback)", rate)
    said = " ".join("".join(c for c in said if c.isprintable()).split())
    if not said:
        return error(422, "invalid request", "said: what the fruit is, in words", rate)
    if not consent:
        return JSONResponse(
            {
                "ok": True,
                "stored": False,
                "receipt": None,
                "confirmed": None,
                "keep_until": None,
                "delete_url": None,
                "message": "nothing was stored: no consent",
            },
            headers=rate,
        )
    data = None
    if photo_id:
        if not PHOTO_ID.fullmatch(photo_id):
            return error(422, "invalid request", "photo_id: 32 hex digits from identify's photos[].id", rate)
        data = service.photos.get(photo_id)
        if data is None:
            return error(
                404,
                "not found",
                f"no such photo: send the photo itself (ids last {cfg.photo_cache_s // 60} minutes)",
                rate,
            )
    elif photo is not None:
        data = await photo.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            return error(413, "too large", f"photos are limited to {cfg.max_upload_bytes:,} bytes", rate)
    if not data:
        return error(422, "invalid request", "send the photo (field photo) or its id (field photo_id)", rate)
    try:  # decoded once, off the event loop, within the decode gate: a photo we would not identify is not kept either
        async with service.decodes.slot():
            receipt = await run_in_threadpool(service.feedback.store, data, said, answered, cfg.max_pixels)
    except Busy as busy:
        return error(503, "busy", busy.detail, {**rate, "Retry-After": str(busy.retry_after)})
    except DecodeError as exc:
        return error(422, exc.reason, exc.detail, rate)
    return JSONResponse(
        {
            "ok": True,
            "stored": True,
            "receipt": receipt.id,
            "confirmed": receipt.confirmed,
            "keep_until": receipt.keep_until,
            "delete_url": f"{API}/feedback/{receipt.id}",
            "message": "stored without its metadata, to train the next model"
            if receipt.confirmed
            else "stored without its metadata, apart until a person files it under a species",
        },
        headers=rate,
    )


@router.delete("/feedback/{receipt}", response_model=Deleted, responses={**NOT_FOUND, **ERRORS, **KEYED})
async def delete_feedback(
    receipt: str = Path(..., description="the receipt id feedback returned"), service: Service = Depends(get_service)
):
    """Delete a stored photo and its receipt, at once."""
    if service.feedback is None:
        raise HTTPException(404, "this service keeps no feedback")
    if not RECEIPT.fullmatch(receipt):
        raise HTTPException(404, "no such receipt")
    if not await run_in_threadpool(service.feedback.delete, receipt):
        raise HTTPException(404, "no such receipt (already deleted, or past its retention period)")
    return {"ok": True, "deleted": True}
