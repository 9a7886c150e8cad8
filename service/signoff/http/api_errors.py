"""signoff.errors as HTTP statuses and the gateway's JSON error body, for the approvals API.

Stands in for the gateway-wide mapping (`http/errors.py`, written with the app's exception
handlers) until that lands, with the same functions, statuses and body: merging it is
replacing this module's import by that one's.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

from starlette.responses import JSONResponse

from signoff.errors import (
    AuditUnavailable,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    PermissionDenied,
    PolicyError,
    SignoffError,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("signoff.http")
MAX_FIELD = 200
MAX_MESSAGE = 300


def error_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """HTTP status and the caller-safe `{"code", "message"[, "field"|"reason"]}` for `exc`;
    unexpected errors never show their text or a traceback, only a reference to the log."""
    if isinstance(exc, InvalidRequest):
        field = exc.field if len(exc.field) <= MAX_FIELD else exc.field[:MAX_FIELD] + "..."
        return 400, {
            "code": "invalid_argument",
            "message": exc.message[:MAX_MESSAGE],
            "field": field,
        }
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
        return 503, {"code": "unavailable", "message": f"{exc}; nothing is assumed approved"}
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
