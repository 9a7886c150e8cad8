"""(being written) the inbox surface of the HTTP gateway."""

from __future__ import annotations

from starlette.routing import BaseRoute

from signoff.http.core import HttpCore


def routes(core: HttpCore) -> list[BaseRoute]:
    return []
