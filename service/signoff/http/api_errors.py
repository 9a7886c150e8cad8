"""signoff.errors as HTTP statuses and the gateway's JSON error body, for the approvals API.

Stands in for the gateway-wide mapping (`http/errors.py`, written with the app's exception
handlers) until that lands; the statuses and the body shape are the ones the issue fixes.
"""

from __future__ import annotations

import logging
import traceback
import uuid

from starlette.responses import JSONResponse

from signoff.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    PermissionDenied,
    PolicyError,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("signoff.http")


def error_response(exc: BaseException) -> JSONResponse:
    """The 4xx/5xx answer for `exc`; never a traceback, never request data in the log."""
    headers: dict[str, str] = {}
    field = ""
    if isinstance(exc, InvalidRequest):
        status, code, message, field = 400, "invalid_argument", exc.message, exc.field
    elif isinstance(exc, Unauthenticated):
        status, code, message = 401, "unauthenticated", str(exc)
        headers["WWW-Authenticate"] = 'Bearer realm="signoff"'
    elif isinstance(exc, PermissionDenied):
        status, code, message = 403, exc.code, str(exc)
    elif isinstance(exc, NotFound):
        status, code, message = 404, "not_found", str(exc)
    elif isinstance(exc, Conflict):
        status, code, message = 409, "conflict", str(exc)
    elif isinstance(exc, Overloaded):
        status, code, message = 429, "overloaded", str(exc)
        headers["Retry-After"] = "5"
    elif isinstance(exc, StoreUnavailable):
        status, code, message = 503, "unavailable", str(exc)
    elif isinstance(exc, PolicyError | ConfigError):
        status, code, message = 503, "unavailable", "the service has no usable policy bundle"
    else:
        ref = uuid.uuid4().hex[:12]
        # The text may quote request data: log the type and where it was raised only.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        log.error("unexpected %s at %s (ref %s)", type(exc).__name__, where, ref)
        status, code, message = 500, "internal", f"internal error (ref {ref})"
    body = {"error": {"code": code, "message": message[:500], "field": field[:200]}}
    return JSONResponse(body, status_code=status, headers=headers)
