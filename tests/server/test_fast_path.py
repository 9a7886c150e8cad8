"""Decisions served from wire bytes answer exactly what parsing and converting each request gives.

The reference is the plain path: parse the request, convert it, ask the engine, build the
response message. Through the server, first sightings (cache misses), repeats (cache hits, the
response reused with new ids), batches with invalid items and REQUIRE_APPROVAL items must give
the same responses field for field, apart from the per-call ids.
"""

from __future__ import annotations

import functools
import uuid

import grpc
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.decisions import new_decision_id
from signoff.errors import InvalidRequest
from signoff.server import app, convert, wire
from signoff.server.status import grpc_code_value, status_for
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import (
    KEY_ID,
    TIMEOUT,
    allowed_read,
    channel_to,
    check_request,
    cross_tenant_read,
    customers,
    dana,
    masked_export,
    prod_grant,
    rpc_error,
    serving,
)


def _explained(msg: pb.CheckRequest) -> pb.CheckRequest:
    out = pb.CheckRequest()
    out.CopyFrom(msg)
    out.explain = True
    return out


def _pool() -> list[pb.CheckRequest]:
    """Valid requests of every verdict, with and without explanations, and invalid ones."""
    no_principal = allowed_read()
    no_principal.ClearField("principal")
    bad_path = masked_export()
    bad_path.resource.fields[0].path = "a..b"
    return [
        allowed_read(),
        masked_export(),
        cross_tenant_read(),
        prod_grant(),
        check_request(dana(), "export", customers()),
        _explained(masked_export()),
        _explained(cross_tenant_read()),
        no_principal,
        bad_path,
    ]


POOL = _pool()


def _expected(running: app.Running, msg: pb.CheckRequest) -> pb.CheckBatchResult:
    """The plain path's answer, ids left out."""
    try:
        request = convert.to_request(msg, convert.Limits())
    except InvalidRequest as exc:
        code, message = status_for(exc)
        error = pb.ItemError(code=grpc_code_value(code), message=message, field=exc.field)
        return pb.CheckBatchResult(error=error)
    decision = running.decisions.engine.decide(request)
    return pb.CheckBatchResult(decision=convert.to_response(decision, "", KEY_ID))


def _without_ids(result: pb.CheckBatchResult) -> pb.CheckBatchResult:
    out = pb.CheckBatchResult()
    out.CopyFrom(result)
    if out.WhichOneof("outcome") == "decision":
        assert uuid.UUID(out.decision.decision_id).version == 4
        pending = out.decision.verdict == pb.VERDICT_REQUIRE_APPROVAL
        assert bool(out.decision.approval_id) == pending
        out.decision.ClearField("decision_id")
        out.decision.ClearField("approval_id")
    return out


def test_checks_answer_as_the_plain_path_on_first_sighting_and_on_repeats(
    server: app.Running, stub: pb_grpc.DecisionServiceStub
) -> None:
    for msg in POOL:
        expected = _expected(server, msg)
        for _ in range(3):  # a miss, then hits
            if expected.WhichOneof("outcome") == "error":
                error = rpc_error(functools.partial(stub.Check, msg, timeout=TIMEOUT))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert error.details() == expected.error.message
                continue
            got = stub.Check(msg, timeout=TIMEOUT)
            assert _without_ids(pb.CheckBatchResult(decision=got)) == expected


def test_repeated_responses_get_fresh_ids(stub: pb_grpc.DecisionServiceStub) -> None:
    first = stub.Check(masked_export(), timeout=TIMEOUT)
    second = stub.Check(masked_export(), timeout=TIMEOUT)
    assert first.decision_id != second.decision_id


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(0, len(POOL) - 1), max_size=12))
def test_batches_answer_item_for_item_as_the_plain_path(
    server: app.Running, stub: pb_grpc.DecisionServiceStub, picks: list[int]
) -> None:
    items = [POOL[i] for i in picks]
    expected = [_expected(server, msg) for msg in items]
    for _ in range(2):  # the second time every valid item is a cache hit
        got = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)
        assert [_without_ids(r) for r in got.results] == expected
        assert got.policy_revision == server.decisions.engine.bundle.revision


def test_a_batch_with_one_malformed_item_among_cached_ones_is_refused_whole(
    server: app.Running, channel: grpc.Channel
) -> None:
    call = channel.unary_unary("/signoff.v1.DecisionService/CheckBatch", None, None)
    good = allowed_read().SerializeToString()
    call(wire.field(1, good), timeout=TIMEOUT)  # now cached
    bad = b"\x12\x03\xff\xfe\xfd"  # action: three bytes that are not UTF-8
    raw = wire.field(1, good) + wire.field(1, bad) + wire.field(1, good)
    with_items = rpc_error(lambda: call(raw, timeout=TIMEOUT))
    assert with_items.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert with_items.details() == (
        "invalid request: request: not a valid signoff.v1.CheckBatchRequest message"
    )


def test_a_batch_laid_out_unusually_is_parsed_whole_and_answered_alike(
    server: app.Running, channel: grpc.Channel
) -> None:
    call = channel.unary_unary("/signoff.v1.DecisionService/CheckBatch", None, None)
    item = allowed_read().SerializeToString()
    # An unknown varint field, then the items: protobuf skips the unknown field.
    raw = b"\x18\x07" + wire.field(1, item) + wire.field(1, item)
    got = pb.CheckBatchResponse.FromString(call(raw, timeout=TIMEOUT))
    expected = _expected(server, allowed_read())
    assert [_without_ids(r) for r in got.results] == [expected, expected]


@given(st.lists(st.integers(0, len(POOL) - 1), max_size=8), st.binary(max_size=6))
def test_batch_items_are_sliced_exactly_as_protobuf_parses_them(
    picks: list[int], junk: bytes
) -> None:
    batch = pb.CheckBatchRequest(items=[POOL[i] for i in picks])
    raw = batch.SerializeToString()
    assert wire.repeated_messages(raw, 1) == [i.SerializeToString() for i in batch.items]
    # Anything else is either sliced into the items protobuf finds, or left to it (None).
    sliced = wire.repeated_messages(raw + junk, 1)
    if sliced is None:
        return
    try:
        parsed = pb.CheckBatchRequest.FromString(raw + junk)
    except DecodeError:
        return  # refused whole by the server, as by protobuf
    assert [pb.CheckRequest.FromString(s) for s in sliced] == list(parsed.items)


def test_decision_ids_are_version_4_uuids_in_their_usual_text() -> None:
    ids = {new_decision_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


@given(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=300))
def test_hand_written_fields_parse_as_protobuf_writes_them(number: int, data: bytes) -> None:
    text = data.decode("latin-1")
    assert wire.string_field(3, text) == pb.ItemError(field=text).SerializeToString()
    assert wire.varint(number) == _reference_varint(number)


def _reference_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_an_oversized_batch_with_a_malformed_item_is_refused_as_malformed() -> None:
    good, bad = allowed_read().SerializeToString(), b"\x12\x03\xff\xfe\xfd"
    too_many = wire.field(1, good) * 3
    with (
        serving(limits=convert.Limits(max_batch_items=2)) as running,
        channel_to(running.port) as channel,
    ):
        call = channel.unary_unary("/signoff.v1.DecisionService/CheckBatch", None, None)
        refused = rpc_error(lambda: call(too_many, timeout=TIMEOUT))
        assert refused.details() == "invalid request: items: at most 2 items per batch"
        malformed = rpc_error(lambda: call(too_many + wire.field(1, bad), timeout=TIMEOUT))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.details() == (
        "invalid request: request: not a valid signoff.v1.CheckBatchRequest message"
    )
