"""Fixtures for the gRPC end-to-end tests: in-process servers with pinned clocks, channels, stubs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from signoff.server import app
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import DAY, NIGHT, channel_to, serving


@pytest.fixture(scope="session")
def server() -> Iterator[app.Running]:
    """The bundled rules served by day (Monday 14:00 UTC)."""
    with serving(now=DAY) as running:
        yield running


@pytest.fixture(scope="session")
def night_server() -> Iterator[app.Running]:
    """The bundled rules served at night (Monday 23:30 UTC, after hours in Berlin)."""
    with serving(now=NIGHT) as running:
        yield running


@pytest.fixture(scope="session")
def channel(server: app.Running) -> Iterator[grpc.Channel]:
    with channel_to(server.port) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.DecisionServiceStub:
    return pb_grpc.DecisionServiceStub(channel)


@pytest.fixture(scope="session")
def night_stub(night_server: app.Running) -> Iterator[pb_grpc.DecisionServiceStub]:
    with channel_to(night_server.port) as ch:
        yield pb_grpc.DecisionServiceStub(ch)
