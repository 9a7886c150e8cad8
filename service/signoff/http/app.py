"""The ASGI application: each surface module contributes its routes to one Starlette app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from signoff.http import approvals_api, authzen, health, inbox, slack, teams
from signoff.http.core import HttpCore
from signoff.http.security import SecureHeaders, sessions_for

SURFACES = (health, authzen, approvals_api, inbox, slack, teams)


def build_app(core: HttpCore) -> Starlette:
    """The HTTP gateway over `core`: every surface module's `routes(core)`."""
    routes: list[BaseRoute] = []
    for surface in SURFACES:
        routes += surface.routes(core)
    # Sessions (the inbox's login, read by the JSON API too) and strict headers on every page.
    sessions = sessions_for(core.settings)
    return Starlette(routes=routes, middleware=[Middleware(SecureHeaders, sessions=sessions)])
