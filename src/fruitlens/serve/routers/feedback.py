"""`POST /feedback` and `DELETE /feedback/{receipt}`: a user's correction of a question (its 1 to 5
photos, sent again or named by identify's ids), kept only with consent under one receipt, and its
deletion by the receipt id."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ... import FruitlensError
from ...embedding.decode import DecodeError
from ..decodes import Busy
from ..deps import get_service, limited
from ..errors import ERRORS, KEYED, LIMITED, NOT_FOUND, UPLOADS, error
from ..feedback import RECEIPT
from ..schemas import Deleted, ErrorBody, FeedbackAnswer
from ..service import Service
from . import API

router = APIRouter(tags=["feedback"])
PHOTO_ID = re.compile(r"\A[0-9a-f]{32}\Z")  # \Z: no trailing newline ($ takes one)


@router.post("/feedback", response_model=FeedbackAnswer, responses={**ERRORS, **NOT_FOUND, **LIMITED, **UPLOADS})
async def feedback(
    said: str = Form(..., max_length=200, description="what the fruit is: a species of the catalogue, or free text"),
    consent: bool = Form(
        False, description="true: the person agrees that the photo is kept (without metadata) to train the next model"
    ),
    answered: str | None = Form(None, max_length=200, description="what the app answered"),
    photo_id: list[str] = Form(
        [],
        description="the question's photos by their ids from identify's `photos[].id` (while cached; repeat the field)",
    ),
    photo: list[UploadFile] = File([], description="the question's photos themselves (repeat the field)"),
    rate: dict = Depends(limited),
    service: Service = Depends(get_service),
):
    """A correction ("it is a quince") of a question: its 1 to 5 photos, by their ids or sent
    again. With consent, every photo is stored, stripped of its metadata, where the next training
    reads it, under one receipt whose id deletes them all. Without consent nothing is stored."""
    cfg = service.cfg
    if service.feedback is None:
        return error(404, "not found", "this service keeps no feedback (started without --feedback)", rate)
    said = " ".join("".join(c for c in said if c.isprintable()).split())
    if not said:
        return error(422, "invalid request", "said: what the fruit is, in words", rate)
    answered_clean = " ".join("".join(c for c in answered or "" if c.isprintable()).split()) or None
    if not consent:
        return JSONResponse(
            {
                "ok": True,
                "stored": False,
                "receipt": None,
                "confirmed": None,
                "photos": 0,
                "keep_until": None,
                "delete_url": None,
                "message": "nothing was stored: no consent",
            },
            headers=rate,
        )
    if len(photo_id) + len(photo) > cfg.max_photos:
        return error(422, "invalid request", f"1 to {cfg.max_photos} photos of the question", rate)
    datas = []
    for pid in photo_id:
        if not PHOTO_ID.match(pid):
            return error(422, "invalid request", "photo_id: 32 hex digits from identify's photos[].id", rate)
        data = service.photos.get(pid)
        if data is None:
            return error(
                404,
                "not found",
                f"no such photo: send the photo itself (ids last {cfg.photo_cache_s // 60} minutes)",
                rate,
            )
        datas.append(data)
    for part in photo:
        data = await part.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            return error(413, "too large", f"photos are limited to {cfg.max_upload_bytes:,} bytes", rate)
        datas.append(data)
    datas = [d for d in datas if d]
    if not datas:
        return error(422, "invalid request", "send the photos (field photo) or their ids (field photo_id)", rate)
    try:  # decoded once, off the event loop, within the decode gate: a photo we would not identify is not kept either
        async with service.decodes.slot():
            receipt = await run_in_threadpool(service.feedback.store, datas, said, answered_clean, cfg.max_pixels)
    except Busy as busy:
        return error(503, "busy", busy.detail, {**rate, "Retry-After": str(busy.retry_after)})
    except DecodeError as exc:
        return error(422, exc.reason, exc.detail, rate)
    except FruitlensError as exc:  # the store cannot be written (disk, bucket): nothing kept, say so
        return error(503, "unavailable", f"{exc}: nothing was kept, retry later", {**rate, "Retry-After": "30"})
    return JSONResponse(
        {
            "ok": True,
            "stored": True,
            "receipt": receipt.id,
            "confirmed": receipt.confirmed,
            "photos": len(receipt.photos),
            "keep_until": receipt.keep_until,
            "delete_url": f"{API}/feedback/{receipt.id}",
            "message": "stored without its metadata, to train the next model"
            if receipt.confirmed
            else "stored without its metadata, apart until a person files it under a species",
        },
        headers=rate,
    )


@router.delete(
    "/feedback/{receipt}",
    response_model=Deleted,
    responses={**NOT_FOUND, **ERRORS, **KEYED, 503: {"model": ErrorBody, "description": "the store cannot be reached"}},
)
async def delete_feedback(
    receipt: str = Path(..., description="the receipt id feedback returned"), service: Service = Depends(get_service)
):
    """Delete every photo of a question and its receipt, at once."""
    if service.feedback is None:
        raise HTTPException(404, "this service keeps no feedback")
    if not RECEIPT.fullmatch(receipt):
        raise HTTPException(404, "no such receipt")
    try:
        deleted = await run_in_threadpool(service.feedback.delete, receipt)
    except FruitlensError as exc:
        return error(503, "unavailable", f"{exc}: retry later", {"Retry-After": "30"})
    if not deleted:
        raise HTTPException(404, "no such receipt (already deleted, or past its retention period)")
    return {"ok": True, "deleted": True}
