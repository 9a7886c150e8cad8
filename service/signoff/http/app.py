"""The ASGI application: each surface module contributes its routes to one Starlette app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from signoff.http import approvals_api, authzen, health, inbox, slack, teams
from signoff.http.core import HttpCore

SURFACES = (health, authzen, approvals_api, inbox, slack, teams)


def build_app(core: HttpCore) -> Starlette:
    """The HTTP gateway over `core`: every surface module's `routes(core)`."""
    routes: list[BaseRoute] = []
    for surface in SURFACES:
        routes += surface.routes(core)
    return Starlette(routes=routes)
