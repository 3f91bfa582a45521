"""What the routes depend on, as FastAPI dependencies: the loaded `Service` (on `app.state`), the
caller counted against its rate limit, and the language of the answer. All `async def`: cheap, so
they run on the event loop rather than taking a worker thread from the requests' pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Query, Request

from ..catalogue import LANGUAGES
from .limits import LimitsUnavailable
from .service import Service

RATE_STATE = "fruitlens.rate"  # where the Callers middleware leaves the RateLimit headers (scope["state"])
LANG_HELP = "names and information: en or fr (else Accept-Language, else en)"


async def get_service(request: Request) -> Service:
    """The service the app was built from (`create_app` puts it on `app.state`)."""
    return request.app.state.service


class Refused(Exception):
    """A caller refused from its request's headers: the status, the one-line detail, the headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str]):
        super().__init__(status, detail)
        self.status, self.detail, self.headers = status, detail, headers


def presented_key(headers: dict[str, str]) -> str:
    """The API key a request presents (`X-API-Key`, else `Authorization: Bearer`), or ""."""
    presented = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if not presented and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    return presented


def admit(service: Service, headers: dict[str, str], host: str | None, counted: bool) -> dict[str, str]:
    """Who calls, from the request's headers alone (before its body is read): the RateLimit
    headers to send back when `counted` (a route that runs the model), else {}. Raises Refused:
    401 for an unknown key (or none when keys are required), 429 past the limit. Every counted
    request takes one from its bucket, also one refused later for what its body holds; a 401
    takes one from the client address's (its next requests without a key meet the limit); a 429
    takes nothing."""
    presented = presented_key(headers)
    address = f"address {host or '?'}"
    unauthorized = None
    limiter, who = service.address_limit, address
    if service.keys is not None and presented:
        name = service.keys.name_of(presented)
        if name is None:
            unauthorized = "unknown API key"
        else:
            limiter, who = service.key_limit, f"key {name}"
    elif service.cfg.require_key:
        unauthorized = "this service needs an API key (Authorization: Bearer KEY or X-API-Key)"
    if unauthorized is None and not counted:
        return {}
    try:
        allowed, remaining, reset = limiter.take(who)
    except LimitsUnavailable as exc:  # refused rather than let through unlimited
        raise Refused(503, f"{exc}: retry in a few seconds", {"Retry-After": "5"}) from None
    rate = limiter.headers(remaining, reset)
    if unauthorized is not None:  # what the client must change first, even past its limit
        raise Refused(401, unauthorized, {"WWW-Authenticate": "Bearer"})
    if not allowed:
        raise Refused(
            429,
            f"more than {limiter.limit} requests a minute: retry in {int(reset) + 1} s",
            {**rate, "Retry-After": str(int(reset) + 1)},
        )
    return rate


async def limited(request: Request, service: Service = Depends(get_service)) -> dict:
    """The RateLimit headers of the caller, counted against its rate limit from the headers by the
    `Callers` middleware before the body was read (`admit`); counted here only for an app
    assembled without it."""
    rate = request.scope.get("state", {}).get(RATE_STATE)
    if rate is not None:
        return rate
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        return admit(service, headers, request.client.host if request.client else None, counted=True)
    except Refused as refused:
        raise HTTPException(refused.status, refused.detail, headers=refused.headers) from None


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
