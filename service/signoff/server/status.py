"""The one place where errors become gRPC status codes."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc

from signoff.errors import (
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

log = logging.getLogger("signoff.server")
T = TypeVar("T")


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status and caller-safe message for `exc`; unexpected errors never show a traceback."""
    if isinstance(exc, InvalidRequest):
        # Field paths can embed caller-chosen names: bound them so the status always fits.
        field = exc.field if len(exc.field) <= 200 else exc.field[:200] + "..."
        return grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {field}: {exc.message[:300]}"
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {exc}"
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, f"permission denied ({exc.code}): {exc}"
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, StoreUnavailable):
        # Never an answer to act on: the caller must retry, and no approval is assumed.
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; decisions needing an approval fail closed"
    if isinstance(exc, PolicyError | ConfigError):
        return grpc.StatusCode.FAILED_PRECONDITION, "the service has no usable policy bundle"
    if isinstance(exc, SignoffError):
        return grpc.StatusCode.INTERNAL, "internal error"
    ref = uuid.uuid4().hex[:12]
    # The exception text may quote request data: log its type and where it was raised only.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error("unexpected %s at %s (ref %s)", type(exc).__name__, where, ref)
    return grpc.StatusCode.INTERNAL, f"internal error (ref {ref})"


def grpc_code_value(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    return value


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status chosen for `exc`."""
    code, message = status_for(exc)
    context.abort(code, message)
    raise AssertionError("grpc's abort always raises")  # pragma: no cover


def guarded(context: grpc.ServicerContext, run: Callable[[], T]) -> T:
    """Run a unary handler; any error becomes its status, never UNKNOWN or a traceback."""
    try:
        return run()
    except Exception as exc:
        abort(context, exc)
