"""`POST /identify`: 1 to 5 photos of one fruit -> one answer, its species' information and the
most similar images of the index."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...embedding.decode import DecodeError
from ..decodes import Busy
from ..deps import LANG_HELP, get_service, limited, negotiated_language
from ..errors import ERRORS, LIMITED, UPLOADS, error
from ..schemas import Identified
from ..service import Service
from . import API
from .species import attributions_of, species_json

described_language = negotiated_language(LANG_HELP)


def make_router(neighbours: int) -> APIRouter:
    """The identify router. Made for a service rather than built once at import, since `k`'s
    default (in the OpenAPI document too) is the service's `neighbours`."""
    router = APIRouter(tags=["identify"])

    async def similar_count(k: int = Query(neighbours, ge=0, le=50, description="how many similar images")) -> int:
        return k

    @router.post("/identify", response_model=Identified, responses={**ERRORS, **LIMITED, **UPLOADS})
    async def identify(
        photo: list[UploadFile] = File(
            ..., description="1 to 5 photos of the same fruit (repeat the field): JPEG, PNG, WebP, BMP or GIF"
        ),
        k: int = Depends(similar_count),
        lang: str = Depends(described_language),
        rate: dict = Depends(limited),
        service: Service = Depends(get_service),
    ):
        """Identify the fruit in 1 to 5 photos of it (multipart field `photo`, repeated): one answer,
        each photo's probabilities averaged, at species level, at family level, or 'not sure'."""
        return await identified(service, photo, k, lang, rate)

    return router


async def identified(service: Service, photo: list[UploadFile], k: int, lang: str, rate: dict) -> JSONResponse:
    """The identify route's answer: the photos read (each within the upload limit), identified off
    the event loop, kept a while by id for feedback, and their neighbours in the index."""
    cfg, index, information = service.cfg, service.index, service.information
    names = information.names
    if not 1 <= len(photo) <= cfg.max_photos:
        return error(
            422, "invalid request", f"send 1 to {cfg.max_photos} photos of the same fruit, got {len(photo)}", rate
        )
    datas = []
    for i, part in enumerate(photo):
        ptype = (part.content_type or "").split(";")[0].strip().lower()
        if ptype and not (ptype.startswith("image/") or ptype == "application/octet-stream"):
            where = f"photo {i + 1} " if len(photo) > 1 else "the photo part "
            return error(415, "unsupported media type", f"{where}is {ptype}: send an image", rate)
        data = await part.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            return error(413, "too large", f"photos are limited to {cfg.max_upload_bytes:,} bytes each", rate)
        datas.append(data)
    try:
        async with service.decodes.slot():  # at most a few requests' photos decoding at once
            t0 = time.perf_counter()
            pixels = await run_in_threadpool(service.decode, datas)
            decode_s = time.perf_counter() - t0
    except Busy as busy:
        return error(503, "busy", busy.detail, {**rate, "Retry-After": str(busy.retry_after)})
    except DecodeError as exc:
        return error(422, exc.reason, exc.detail, rate)
    result = await run_in_threadpool(service.answer, pixels, decode_s)
    p = result.prediction
    ids = [service.photos.put(d) for d in datas]
    alone = result.photos or [p]
    similar = [
        {
            "id": n.entry.id,
            "label": n.entry.label,
            "split": n.entry.split,
            "similarity": round(n.similarity, 6),
            "url": f"{API}/images/{n.entry.id}",
        }
        for n in index.search(result.inputs, k)
    ]
    attributions = attributions_of(information)
    body = p.to_json()
    body["top5"] = [{**t, "name": names.name(t["label"], lang)} for t in body["top5"]]
    body.update(
        {
            "ok": True,
            "answer_name": names.name(p.answer, lang) if p.answer else None,
            "family_name": names.name(p.family, lang) if p.family else None,
            "species": species_json(information, p.predicted, lang),
            "photos": [
                {
                    "id": pid,
                    "predicted": a.predicted,
                    "probability": round(a.top[0][1], 6),
                    "not_sure": a.not_sure,
                    "level": a.level,
                    "novelty": round(a.novelty, 6),
                }
                for pid, a in zip(ids, alone)
            ],
            "combined": "the photos' probabilities averaged; unlike the training images only if every photo is"
            if len(datas) > 1
            else "one photo",
            "similar": similar,
            "search": index.kind,
            "timing_ms": result.timing_ms,
            "lang": lang,
            "attribution": attributions[0],
            "attributions": attributions,
        }
    )
    return JSONResponse(body, headers=rate)
