"""`POST /identify`: 1 to 5 photos of one fruit -> one answer, its species' information and the
most similar images of the index."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...catalogue import NOT_PRODUCE
from ...embedding.decode import DecodeError
from ...engine.model import PHOTOS_COMBINED
from ..decodes import Busy
from ..deps import LANG_HELP, get_service, limited, negotiated_language
from ..errors import ERRORS, LIMITED, UPLOADS, error
from ..phrases import CLOSENESS_WORDS, PHOTOS, closeness, joined, reason
from ..schemas import Identified
from ..service import Service
from . import API
from .species import species_json

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
        the photos' answers combined (each photo's probabilities multiplied), at species level, at family
        level, or 'not sure'."""
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
    species_of = service.catalogue.species_of
    similar = []
    for n, collection, reduced in index.search(result.inputs, k):
        species = species_of(n.entry.label) or n.entry.label
        close = closeness(n.similarity, reduced)
        similar.append(
            {
                "id": n.entry.id,
                "label": n.entry.label,
                "split": n.entry.split,
                "species": species,
                "name": names.name(species, lang) if species else None,
                "similarity": round(n.similarity, 6),
                "closeness": close,
                "closeness_text": CLOSENESS_WORDS[close][lang],
                "collection": collection.to_json(lang),
                "url": f"{API}/images/{n.entry.id}",
            }
        )
    body = p.to_json()
    body["top5"] = [{**t, "name": names.name(t["label"], lang)} for t in body["top5"]]
    species = species_json(information, p.predicted, lang)
    if p.predicted == NOT_PRODUCE:
        species["note"] = None  # not a species: nothing to describe, and no note saying so
    attributions = shown_attributions(species, similar, lang)
    body.update(
        {
            "ok": True,
            "answer_name": names.name(p.answer, lang) if p.answer else None,
            "family_name": names.name(p.family, lang) if p.family else None,
            "why": why(p, names, lang),
            "species": species,
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
            "combined": COMBINED[lang] if len(datas) > 1 else ONE[lang],
            "similar": similar,
            "search": index.kind,
            "timing_ms": result.timing_ms,
            "lang": lang,
            "attribution": attributions[0] if attributions else None,
            "attributions": attributions,
        }
    )
    return JSONResponse(body, headers=rate)


COMBINED = {
    "en": PHOTOS_COMBINED,
    "fr": "les probabilités des photos multipliées quand leur espèce la plus probable concorde (chaque photo "
    "une preuve) ; sinon la seule photo sûre d'elle, ou leur moyenne ; différente des images apprises "
    "seulement si toutes le sont",
}
ONE = {"en": "one photo", "fr": "une photo"}
CANDIDATES_SHARE = 0.9  # the candidates named: the best species until they hold this much of the probability
MAX_CANDIDATES = 3


def why(p, names, lang: str) -> dict | None:
    """Why the answer is not a species, in `lang`: one of the three reasons (phrases.REASONS) with
    its plain sentence and next step; None for a species answer."""
    if p.level == "species" and not p.not_sure:
        return None
    candidates, held = [], 0.0
    for label, prob in p.top:
        if label == NOT_PRODUCE:
            continue
        candidates.append(names.name(label, lang))
        held += prob
        if held >= CANDIDATES_SHARE * sum(q for c, q in p.top if c != NOT_PRODUCE) or len(candidates) >= MAX_CANDIDATES:
            break
    if not p.not_sure:  # the family is sure, not the species
        out = reason("family", lang, names.name(p.family, lang), joined(candidates, lang))
    elif p.why in ("not a fruit or vegetable", "unlike the training images"):
        out = reason(p.why, lang)
    else:
        one = "low confidence, one candidate" if len(candidates) == 1 else ""
        out = reason("low confidence", lang, joined(candidates, lang, "and"), variant=one)
    out["candidates"] = candidates
    out["family"] = names.name(p.family, lang) if not p.not_sure and p.family else None
    return out


def shown_attributions(species: dict, similar: list[dict], lang: str) -> list[dict]:
    """The attributions of what the answer shows: the species information's sources, then the
    collections whose photos are among the similar photos (each once)."""
    out, seen = [], set()
    for src in species.get("sources") or []:
        if src["dataset"] not in seen:
            seen.add(src["dataset"])
            out.append(src)
    for n in similar:
        c = n["collection"]
        if c["dataset"] and ("photos", c["dataset"]) not in seen:
            seen.add(("photos", c["dataset"]))
            out.append(
                {
                    "text": PHOTOS[lang].format(c["dataset"], c["author"], c["license"]),
                    "author": c["author"] or "",
                    "dataset": c["dataset"],
                    "source": c["source"] or "",
                    "license": c["license"],
                    "license_url": c["license_url"] or "",
                    "changes": "none" if lang == "en" else "aucune",
                }
            )
    return out
