"""The ASGI application: each surface module contributes its routes to one Starlette app."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff.http import approvals_api, authzen, health, inbox, slack, teams
from signoff.http.core import HttpCore
from signoff.http.errors import HANDLERS, error_for, error_response
from signoff.http.security import SecureHeaders, sessions_for
from signoff.observability import Telemetry

SURFACES = (health, authzen, approvals_api, inbox, slack, teams)
REQUEST_ID = b"x-request-id"


def build_app(core: HttpCore) -> Starlette:
    """The HTTP gateway over `core`: every surface module's `routes(core)`."""
    routes: list[BaseRoute] = []
    for surface in SURFACES:
        routes += surface.routes(core)
    # Span names are bounded: a fixed path by name, any other (with ids in it) by method only.
    fixed = frozenset(r.path for r in routes if isinstance(r, Route) and "{" not in r.path)
    return Starlette(
        routes=routes,
        exception_handlers=HANDLERS,
        middleware=[
            # Outermost: the span, the request id and the last-resort JSON error cover all.
            Middleware(Gateway, telemetry=core.telemetry, named_paths=fixed),
            # Sessions (the inbox's login, read by the JSON API too) and strict headers.
            Middleware(SecureHeaders, sessions=sessions_for(core.settings)),
        ],
    )


class Gateway:
    """Around every request: one SERVER span continuing the caller's W3C `traceparent`, the
    caller's X-Request-ID echoed (AuthZEN asks for it), and any unexpected error answered as
    the JSON error with a reference, never a traceback, in the log or the response."""

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry, named_paths: frozenset[str]):
        self._app = app
        self._telemetry = telemetry
        self._named = named_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = next((v for k, v in headers if k == REQUEST_ID), None)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        method, path = scope["method"], scope["path"]
        shield = self._telemetry.shield
        span: trace.Span = trace.INVALID_SPAN
        token: object | None = None
        with shield("start http span"):
            parent = self._telemetry.propagator.extract(carrier)
            span = self._telemetry.tracer.start_span(
                f"{method} {path}" if path in self._named else method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": path},
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        started: list[int] = []

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
                if request_id is not None:
                    message = {
                        **message,
                        "headers": [*message["headers"], (REQUEST_ID, request_id)],
                    }
            await send(message)

        try:
            await self._app(scope, receive, answer)
        except Exception as exc:
            if started:  # the response is under way: nothing sane can be sent any more
                raise
            status, error = error_for(exc)
            await error_response(status, error)(scope, receive, answer)
        finally:
            if token is not None:
                with shield("leave http span"):
                    otel_context.detach(token)  # type: ignore[arg-type]
            with shield("end http span"):
                status = started[0] if started else 500
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
