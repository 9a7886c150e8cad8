"""The one place where errors become HTTP statuses and JSON error bodies (gRPC: status.py)."""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from signoff.errors import (
    AuditUnavailable,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    PermissionDenied,
    PolicyError,
    ProviderUnavailable,
    SignoffError,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("signoff.http")

# Field paths and messages can embed caller-chosen names: bounded, like the gRPC status text.
MAX_FIELD = 200
MAX_MESSAGE = 300


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the gateway reads (413, before it is parsed)."""


def error_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """HTTP status and the caller-safe `{"code", "message"[, "field"]}` for `exc`; unexpected
    errors never show their text or a traceback, only a reference to the log line."""
    if isinstance(exc, InvalidRequest):
        field = exc.field if len(exc.field) <= MAX_FIELD else exc.field[:MAX_FIELD] + "..."
        status = 413 if isinstance(exc, BodyTooLarge) else 400
        code = "too_large" if status == 413 else "invalid_argument"
        return status, {"code": code, "message": exc.message[:MAX_MESSAGE], "field": field}
    if isinstance(exc, Unauthenticated):
        return 401, {"code": "unauthenticated", "message": f"unauthenticated: {exc}"}
    if isinstance(exc, PermissionDenied):
        return 403, {"code": "permission_denied", "message": str(exc), "reason": exc.code}
    if isinstance(exc, NotFound):
        return 404, {"code": "not_found", "message": str(exc)}
    if isinstance(exc, Conflict):
        return 409, {"code": "failed_precondition", "message": str(exc)}
    if isinstance(exc, Overloaded):
        return 429, {"code": "resource_exhausted", "message": str(exc)}
    if isinstance(exc, StoreUnavailable | AuditUnavailable):
        # Never an answer to act on: the caller must retry, and no approval is assumed.
        return 503, {
            "code": "unavailable",
            "message": f"{exc}; decisions needing an approval fail closed",
        }
    if isinstance(exc, ProviderUnavailable):
        return 503, {"code": "unavailable", "message": str(exc)}
    if isinstance(exc, PolicyError | ConfigError):
        return 503, {"code": "unavailable", "message": "the service has no usable policy bundle"}
    if isinstance(exc, SignoffError):
        return 500, {"code": "internal", "message": "internal error"}
    ref = uuid.uuid4().hex[:12]
    # The exception text may quote request data: log its type and where it was raised only.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error("unexpected %s at %s (ref %s)", type(exc).__name__, where, ref)
    return 500, {"code": "internal", "message": f"internal error (ref {ref})"}


def error_response(status: int, error: dict[str, Any]) -> JSONResponse:
    """The gateway's error body: `{"error": {...}}`, the same shape on every route."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def on_error(request: Request, exc: Exception) -> Response:
    status, error = error_for(exc)
    return error_response(status, error)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) as the same JSON error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, {"code": code, "message": str(exc.detail)})
    if exc.headers:
        response.headers.update(exc.headers)
    return response


HANDLERS: dict[Any, Any] = {
    HTTPException: on_http_exception,
    SignoffError: on_error,
}
