"""No status or response a caller gets carries a traceback or a value taken from the request."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

import grpc
import pytest

from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, Request
from signoff.server import app
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.conftest import WriteRules
from tests.server.harness import (
    KEY_ID,
    TIMEOUT,
    allowed_read,
    bundled,
    channel_to,
    rpc_error,
    serving,
)

CANARY = "zq-canary"
TRACEBACK_MARKERS = ("Traceback", 'File "', ".py", "line ")


def _canaried(request: pb.CheckRequest) -> pb.CheckRequest:
    """Plant canaries in every free-text spot the request has that stays valid input."""
    request.principal.attributes["owner"] = f"{CANARY}-owner"
    request.resource.id = f"{CANARY}-resource-id"
    request.resource.fields.add(path=f"customers.*.{CANARY}-path", tags=[f"{CANARY}-tag"])
    request.context.environment = f"{CANARY}-env"
    request.context.source_ip = f"{CANARY}-ip"
    request.payload["target"] = f"{CANARY}-target"
    request.approval_id = f"{CANARY}-approval"
    return request


def _mistyped_bool(request: pb.CheckRequest) -> None:
    request.principal.attributes["owner_mfa"] = f"{CANARY}-not-a-bool"


def _mistyped_int(request: pb.CheckRequest) -> None:
    request.payload["row_limit"] = f"{CANARY}-not-an-int"


def _long_principal_id(request: pb.CheckRequest) -> None:
    request.principal.id = CANARY * 100


def _long_source_ip(request: pb.CheckRequest) -> None:
    request.context.source_ip = CANARY * 100


def _long_tag(request: pb.CheckRequest) -> None:
    request.resource.fields.add(path="customers.*.name", tags=[CANARY * 100])


def _empty_path(request: pb.CheckRequest) -> None:
    request.resource.fields.add(path="", tags=[f"{CANARY}-orphan-tag"])


def _unknown_kind(request: pb.CheckRequest) -> None:
    request.principal.kind = 99  # type: ignore[assignment]


def _oversized_payload(request: pb.CheckRequest) -> None:
    request.payload["target"] = CANARY * 30_000


BAD_INPUTS: dict[str, Callable[[pb.CheckRequest], None]] = {
    "string for a bool attribute": _mistyped_bool,
    "string for an int payload value": _mistyped_int,
    "overlong principal id": _long_principal_id,
    "overlong source ip": _long_source_ip,
    "overlong field tag": _long_tag,
    "empty field path": _empty_path,
    "unknown principal kind": _unknown_kind,
    "oversized payload": _oversized_payload,
}


def _bad(name: str) -> pb.CheckRequest:
    request = _canaried(allowed_read())
    BAD_INPUTS[name](request)
    return request


def _assert_clean(text: str) -> None:
    assert CANARY not in text
    for marker in TRACEBACK_MARKERS:
        assert marker not in text


def _status_text(error: grpc.Call) -> str:
    metadata = error.trailing_metadata() or ()
    values = [str(value) for _, value in metadata]
    return "\n".join([error.details() or "", *values])


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_invalid_argument_status_quotes_no_request_value(
    stub: pb_grpc.DecisionServiceStub, name: str
) -> None:
    request = _bad(name)

    error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_clean(_status_text(error))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_batch_item_error_quotes_no_request_value(
    stub: pb_grpc.DecisionServiceStub, name: str
) -> None:
    items = [_bad(name), allowed_read()]

    response = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    assert response.results[0].WhichOneof("outcome") == "error"
    assert response.results[1].WhichOneof("outcome") == "decision"
    error = response.results[0].error
    _assert_clean(f"{error.message}\n{error.field}")
    assert CANARY.encode() not in response.SerializeToString()


def test_a_decision_echoes_no_request_value(stub: pb_grpc.DecisionServiceStub) -> None:
    # The canaried request is still valid, and decided; nothing of it comes back.
    response = stub.Check(_canaried(allowed_read()), timeout=TIMEOUT)

    assert response.verdict in (pb.VERDICT_ALLOW, pb.VERDICT_MASK)
    assert CANARY.encode() not in response.SerializeToString()


EVAL_SCHEMA = """
schema:
  principal: {tenant: string, level: int, owner: string}
  resource: {tenant: string}
  context: {ticket: string}
  payload: {target: string}
"""
EVAL_POLICIES = """
policies:
  - id: docs
    resources: [doc]
    actions: [read]
    rules:
      - id: allow-readers
        effect: allow
        roles: [reader]
        reason: readers read documents
      - id: deny-low-level
        effect: deny
        when: principal.attr.level < 3 && principal.attr.owner != resource.attr.tenant
        reason: clearance level too low
"""


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
def test_evaluation_error_response_quotes_no_request_value(
    write_rules: WriteRules, backend: str
) -> None:
    request = pb.CheckRequest(
        principal=pb.Principal(id=f"{CANARY}-id", kind=pb.PRINCIPAL_KIND_HUMAN, roles=["reader"]),
        action="read",
        resource=pb.Resource(kind="doc", id=f"{CANARY}-doc"),
        context=pb.Context(environment=f"{CANARY}-env"),
    )
    request.principal.attributes["owner"] = f"{CANARY}-owner"
    request.resource.attributes["tenant"] = f"{CANARY}-tenant"
    request.resource.fields.add(path=f"{CANARY}.path", tags=[f"{CANARY}-tag"])
    request.context.attributes["ticket"] = f"{CANARY}-ticket"
    request.payload["target"] = f"{CANARY}-target"
    root = write_rules(schema=EVAL_SCHEMA, policies=EVAL_POLICIES)
    with serving(root, backend=backend) as running, channel_to(running.port) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        single = stub.Check(request, timeout=TIMEOUT)
        batch = stub.CheckBatch(pb.CheckBatchRequest(items=[request]), timeout=TIMEOUT)

    assert single.verdict == pb.VERDICT_DENY
    assert list(single.reasons) == ["evaluation_error"]
    assert list(single.errored_rules) == ["docs/deny-low-level"]
    assert batch.results[0].decision.verdict == pb.VERDICT_DENY
    for message in (single, batch):
        wire = message.SerializeToString()
        assert CANARY.encode() not in wire
        assert b"Traceback" not in wire


class _ExplodingEngine(Engine):
    """An engine whose failure message quotes the whole request, as careless code might."""

    def decide(self, request: Request, at: dt.datetime | None = None) -> Decision:
        raise RuntimeError(f"engine failed on {request!r}")


@pytest.fixture
def exploding_stub() -> Iterator[pb_grpc.DecisionServiceStub]:
    running = app.start(_ExplodingEngine(bundled()), "127.0.0.1:0", hash_key_id=KEY_ID)
    try:
        with channel_to(running.port) as channel:
            yield pb_grpc.DecisionServiceStub(channel)
    finally:
        running.stop(grace=None)


def test_unexpected_error_is_internal_with_a_reference_and_nothing_else(
    exploding_stub: pb_grpc.DecisionServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    request = _canaried(allowed_read())

    with caplog.at_level(logging.ERROR, logger="signoff.server"):
        error = rpc_error(lambda: exploding_stub.Check(request, timeout=TIMEOUT))
        batch = exploding_stub.CheckBatch(pb.CheckBatchRequest(items=[request]), timeout=TIMEOUT)

    assert error.code() == grpc.StatusCode.INTERNAL
    assert (error.details() or "").startswith("internal error (ref ")
    _assert_clean(_status_text(error).replace("internal error (ref ", ""))
    item = batch.results[0].error
    assert item.code == grpc.StatusCode.INTERNAL.value[0]
    assert item.message.startswith("internal error (ref ")
    assert CANARY.encode() not in batch.SerializeToString()
    # The server log names the failure without quoting the request either.
    assert caplog.records
    assert all(CANARY not in record.getMessage() for record in caplog.records)
