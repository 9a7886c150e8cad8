"""The gateway around every route: health, JSON errors, X-Request-ID, traceparent, PDP tokens."""

from __future__ import annotations

import json
import secrets
import statistics
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from signoff.http.gateway_json import MAX_DEPTH
from signoff.observability import Telemetry
from signoff.server.convert import MAX_STRUCT_DEPTH
from tests.http.conftest import MakeGateway
from tests.http.gateway_requests import allowed_read
from tests.http.gateway_support import Gateway

EVALUATION = "/access/v1/evaluation"


def test_healthz_answers_while_the_process_runs(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_bundle_and_redis_answer(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_not_ready(make_gateway: MakeGateway) -> None:
    with make_gateway(ready=False).client() as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"


def test_the_request_id_is_echoed_on_answers_and_on_errors(gateway: Gateway) -> None:
    with gateway.client(headers={"X-Request-ID": "bfe9eb29-ab87"}) as client:
        ok = client.post(EVALUATION, json=allowed_read())
        bad = client.post(EVALUATION, json={"subject": 3})
        missing = client.get("/no/such/route")
    assert [r.headers.get("x-request-id") for r in (ok, bad, missing)] == ["bfe9eb29-ab87"] * 3
    assert (ok.status_code, bad.status_code, missing.status_code) == (200, 400, 404)


def test_starlettes_own_refusals_are_the_same_json_error(gateway: Gateway) -> None:
    with gateway.client() as client:
        wrong_method = client.get(EVALUATION)
        missing = client.get("/nope")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"{nope", {"content-type": "application/json"}, 400, "body"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "body"),
        (b'{"a": NaN}', {"content-type": "application/json"}, 400, "body"),
        (b"{}", {"content-type": "text/plain"}, 400, "content-type"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "body"),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}, 400, "body"),
        (b" " * (1024 * 1024 + 1), {"content-type": "application/json"}, 413, "body"),
    ],
    ids=["not-json", "not-an-object", "nan", "not-json-type", "not-utf8", "deep", "too-large"],
)
def test_bad_bodies_are_4xx_naming_the_field(
    gateway: Gateway, body: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    with gateway.client() as client:
        answer = client.post(EVALUATION, content=body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("subject", "type"), "robot", "subject.type"),
        (("subject", "id"), "x" * 600, "subject.id"),
        (("subject", "properties", "roles"), "analyst", "subject.properties.roles"),
        (("subject", "properties", "tenant"), 7, "subject.properties.tenant"),
        (("action",), None, "action"),
        (
            ("resource", "properties", "fields"),
            [{"path": "a..b"}],
            "resource.properties.fields[0].path",
        ),
        (("context", "time"), "yesterday", "context.time"),
        (("context", "time"), "2026-03-02T14:00:00", "context.time"),
        (("context", "explain"), "yes", "context.explain"),
    ],
)
def test_bad_fields_are_400_naming_them(
    gateway: Gateway, path: tuple[str, ...], value: object, field: str
) -> None:
    request = allowed_read()
    *parents, last = path
    node = request
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    answer = gateway.post(EVALUATION, request)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


def test_a_number_beyond_double_range_is_400_naming_it(gateway: Gateway) -> None:
    body = json.dumps(allowed_read()).replace('"environment": "prod"', '"ticket": 1e400')
    with gateway.client() as client:
        answer = client.post(
            EVALUATION, content=body.encode(), headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "context.ticket"


def test_the_nesting_bound_is_the_grpc_one() -> None:
    assert MAX_DEPTH == MAX_STRUCT_DEPTH


def test_nesting_past_the_bound_is_400_naming_the_path(gateway: Gateway) -> None:
    deep: object = "leaf"
    for _ in range(MAX_DEPTH):
        deep = {"n": deep}
    request = allowed_read()
    request["context"]["ticket"] = deep
    answer = gateway.post(EVALUATION, request)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"].startswith("context.ticket.n.n")


def test_an_unexpected_error_is_a_500_with_a_reference_and_no_detail(
    make_gateway: MakeGateway,
) -> None:
    secret = "sk-" + secrets.token_hex(8)
    running = make_gateway()

    def broken() -> object:
        raise RuntimeError(f"engine exploded holding {secret}")

    running.core.engine = broken  # type: ignore[assignment]
    answer = running.post(EVALUATION, allowed_read())
    assert answer.status_code == 500
    assert answer.json()["error"]["message"].startswith("internal error (ref ")
    assert secret not in answer.text
    assert "Traceback" not in answer.text


def test_the_span_continues_the_callers_traceparent(make_gateway: MakeGateway) -> None:
    spans = InMemorySpanExporter()
    running = make_gateway(telemetry=Telemetry.for_tests(spans))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = running.post(
        EVALUATION, allowed_read(), headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert answer.status_code == 200
    # The server span ends just after the answer is sent: wait for it, not for luck.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        by_name = {s.name: s for s in spans.get_finished_spans()}
        if f"POST {EVALUATION}" in by_name:
            break
        time.sleep(0.01)
    server = by_name[f"POST {EVALUATION}"]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == parent_id
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    # One span per request: the decision's attributes are the server span's.
    assert [s.name for s in spans.get_finished_spans()] == [server.name]
    assert server.attributes["signoff.decision.verdict"] == "allow"


def test_a_configured_pdp_token_is_required(make_gateway: MakeGateway) -> None:
    token = secrets.token_urlsafe(24)
    running = make_gateway(settings={"authzen_token": token})
    missing = running.post(EVALUATION, allowed_read())
    wrong = running.post(EVALUATION, allowed_read(), headers={"Authorization": "Bearer nope"})
    right = running.post(EVALUATION, allowed_read(), headers={"Authorization": f"Bearer {token}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert json.loads(wrong.text)["error"]["code"] == "unauthenticated"


def test_answers_do_not_wait_for_the_callers_delayed_ack(gateway: Gateway) -> None:
    # Without TCP_NODELAY every answer on a kept-alive connection took 40+ ms (head and body
    # written apart, the body held until the caller's delayed ACK); with it, about 1 ms.
    with gateway.client() as client:
        client.get("/healthz")
        took = []
        for _ in range(15):
            started = time.perf_counter()
            client.get("/healthz")
            took.append(time.perf_counter() - started)
    assert statistics.median(took) < 0.02
