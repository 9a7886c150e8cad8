"""Teams: no route of its own; its cards (notify/render.py) open the inbox page of each approval.

A Bot Framework endpoint (Action.Execute, tokens checked against the Bot Framework's OpenID keys)
is not built: docs/slack-teams.md says why and what it would take.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from signoff.http.core import HttpCore


def routes(core: HttpCore) -> list[BaseRoute]:
    return []
