"""`GET /health`: the service is up, and what it serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ... import __version__
from ...catalogue import LANGUAGES
from ..deps import get_service
from ..schemas import Health
from ..service import Service

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
async def health(service: Service = Depends(get_service)):
    return {
        "status": "ok",
        "version": __version__,
        "model": service.model_id,
        "model_loaded_at": service.loaded_at,
        "classes": len(service.model.classes),
        "indexed_images": len(service.index),
        "search": service.index.kind,
        "interpreters": service.interpreters,
        "feedback": service.feedback is not None,
        "key_required": service.cfg.require_key,
        "languages": list(LANGUAGES),
    }
