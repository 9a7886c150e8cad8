"""Liveness and readiness of the HTTP gateway: /healthz (process up), /readyz (bundle and Redis)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signoff.http.core import HttpCore


def routes(core: HttpCore) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        """Whether the process answers.
        ---
        get:
          summary: Liveness
          tags: [health]
          responses:
            '200': {description: The process is up.}
        """
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Whether the gateway can decide and keep approvals.
        ---
        get:
          summary: Readiness
          tags: [health]
          responses:
            '200': {description: The bundle is loaded and Redis answers.}
            '503': {description: Not ready (Redis does not answer).}
        """
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
