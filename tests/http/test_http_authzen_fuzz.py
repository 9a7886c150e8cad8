"""Any JSON body at the AuthZEN endpoints is answered 200 or a 4xx JSON error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.gateway_requests import allowed_read
from tests.http.gateway_support import Gateway

KEYS = st.sampled_from(
    [
        "subject",
        "action",
        "resource",
        "context",
        "type",
        "id",
        "name",
        "properties",
        "roles",
        "fields",
        "path",
        "tags",
        "evaluations",
        "options",
        "evaluations_semantic",
        "time",
        "environment",
        "approval_id",
        "payload",
        "explain",
        "tenant",
        "row_limit",
        "x",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
BODIES = st.dictionaries(KEYS, VALUES, max_size=6) | st.builds(
    lambda path, value: _patched(path, value), st.lists(KEYS, min_size=1, max_size=3), VALUES
)


def _patched(path: list[str], value: object) -> dict[str, object]:
    """A valid request with one place replaced by `value`: close to valid, so deep checks run."""
    request: dict[str, object] = allowed_read()
    node = request
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
    return request


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


@pytest.mark.parametrize("path", ["/access/v1/evaluation", "/access/v1/evaluations"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES | st.dictionaries(st.just("evaluations"), st.lists(BODIES, max_size=3)))
def test_any_json_body_is_200_or_a_4xx_json_error(
    client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code in (200, 400), answer.text
    payload = answer.json()
    if answer.status_code == 400:
        assert payload["error"]["code"] == "invalid_argument"
        assert isinstance(payload["error"]["field"], str)
    elif "evaluations" in payload:
        for item in payload["evaluations"]:
            assert isinstance(item["decision"], bool)
            assert item.get("context", {}).get("error", {}).get("status", 400) == 400
    else:
        assert isinstance(payload["decision"], bool)
