"""Engine tests run on both CEL backends."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["cel-expr", "cel-python"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
