"""Liveness and readiness of the HTTP gateway: /healthz (process up), /readyz (bundle and Redis)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signoff.http.core import HttpCore


def routes(core: HttpCore) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # ready() may ask Redis, which blocks: off the event loop.
        if await run_in_threadpool(core.ready):
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "not ready", "error": {"code": "unavailable", "message": "not ready"}},
            status_code=503,
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
