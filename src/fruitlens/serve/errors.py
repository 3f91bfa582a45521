"""Every error as one line of JSON, `{"ok": false, "reason": ..., "detail": ...}`: the helper the
routes and middlewares answer with, the exception handlers (never a traceback), and the error
answers the routes declare in the OpenAPI document."""

from __future__ import annotations

from contextvars import ContextVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .phrases import error_message
from .schemas import ErrorBody

# The request's language (set by middleware.Language from `lang` / Accept-Language): errors carry
# a `message` in it.
LANG: ContextVar[str | None] = ContextVar("fruitlens_lang", default=None)

ERRORS = {
    400: {"model": ErrorBody, "description": "malformed request"},
    422: {"model": ErrorBody, "description": "invalid parameter, or a photo that cannot be used"},
}
NOT_FOUND = {404: {"model": ErrorBody, "description": "no such resource"}}
LIMITED = {
    401: {"model": ErrorBody, "description": "a missing or unknown API key (when keys are required)"},
    429: {"model": ErrorBody, "description": "past the rate limit: retry after Retry-After seconds"},
    503: {"model": ErrorBody, "description": "busy: retry after Retry-After seconds"},
}
KEYED = {401: {"model": ErrorBody, "description": "no API key, with --require-key; an unknown key"}}
UPLOADS = {
    408: {"model": ErrorBody, "description": "the upload arrived too slowly (--body-timeout)"},
    413: {"model": ErrorBody, "description": "upload too large"},
    415: {"model": ErrorBody, "description": "not multipart/form-data, or not an image part"},
}
REASONS = {
    400: "bad request",
    401: "unauthorized",
    404: "not found",
    405: "method not allowed",
    406: "not acceptable",
    408: "too slow",
    411: "length required",
    413: "too large",
    415: "unsupported media type",
    422: "invalid request",
    429: "too many requests",
    503: "busy",
}


def error(status: int, reason: str, detail: str, headers: dict | None = None) -> JSONResponse:
    """The error answer: `detail` on one line, at most 300 characters."""
    detail = " ".join(str(detail).split())[:300]
    body = {"ok": False, "reason": reason, "detail": detail, "message": error_message(reason, LANG.get())}
    return JSONResponse(body, status_code=status, headers=headers)


async def http_error(request: Request, exc: StarletteHTTPException):
    return error(
        exc.status_code, REASONS.get(exc.status_code, "error"), exc.detail or "", getattr(exc, "headers", None)
    )


async def invalid(request: Request, exc: RequestValidationError):
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {'missing' if e.get('type') == 'missing' else e.get('msg', 'invalid')}")
    return error(422, "invalid request", "; ".join(parts) or "invalid request")


async def unexpected(request: Request, exc: Exception):  # a bug: still one line
    return error(500, "internal error", type(exc).__name__)


HANDLERS = {StarletteHTTPException: http_error, RequestValidationError: invalid, Exception: unexpected}
