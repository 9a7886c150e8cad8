"""Fixtures for the telemetry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.observability.harness import Recorded, Served, serving


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = Recorded()
    try:
        yield rec
    finally:
        rec.telemetry.shutdown()


@pytest.fixture
def served(recorded: Recorded) -> Iterator[Served]:
    with serving(recorded.telemetry) as s:
        yield s
