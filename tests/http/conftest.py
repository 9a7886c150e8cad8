"""Fixtures for the HTTP gateway tests: a real gateway over the bundled rules (see gateway_support)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.http.gateway_support import Gateway, running_gateway

MakeGateway = Callable[..., Gateway]


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """The bundled rules served over HTTP by day (Monday 14:00 UTC), approvals on real Redis."""
    with running_gateway() as running:
        yield running


@pytest.fixture
def make_gateway() -> Iterator[MakeGateway]:
    """Start gateways (see `running_gateway` for the options) that stop when the test ends."""
    with ExitStack() as stack:

        def make(**options: Any) -> Gateway:
            return stack.enter_context(running_gateway(**options))

        yield make
