"""What the routes depend on, as FastAPI dependencies: the loaded `Service` (on `app.state`), the
caller counted against its rate limit, and the language of the answer. All `async def`: cheap, so
they run on the event loop rather than taking a worker thread from the requests' pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Query, Request

from ..catalogue import LANGUAGES
from .limits import LimitsUnavailable
from .service import Service

LANG_HELP = "names and information: en or fr (else Accept-Language, else en)"


async def get_service(request: Request) -> Service:
    """The service the app was built from (`create_app` puts it on `app.state`)."""
    return request.app.state.service


async def limited(request: Request, service: Service = Depends(get_service)) -> dict:
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
    elif service.cfg.require_key:
        raise HTTPException(
            401,
            "this service needs an API key (Authorization: Bearer KEY or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        allowed, remaining, reset = limiter.take(who)
    except LimitsUnavailable as exc:  # refused rather than let through unlimited
        raise HTTPException(503, f"{exc}: retry in a few seconds", headers={"Retry-After": "5"}) from None
    headers = limiter.headers(remaining, reset)
    if not allowed:
        raise HTTPException(
            429,
            f"more than {limiter.limit} requests a minute: retry in {int(reset) + 1} s",
            headers={**headers, "Retry-After": str(int(reset) + 1)},
        )
    return headers


def language(lang: str | None, accept: str | None) -> str:
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


def negotiated_language(description: str | None = None) -> Callable[..., Awaitable[str]]:
    """A dependency: the answer's language from the `lang` query parameter (documented with
    `description`) and the Accept-Language header, by `language`."""

    async def lang_of(request: Request, lang: str | None = Query(None, max_length=35, description=description)) -> str:
        return language(lang, request.headers.get("accept-language"))

    return lang_of
