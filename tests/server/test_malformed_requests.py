"""Bytes that are not a valid request message get INVALID_ARGUMENT, a metric and no traceback, on
every RPC the server exposes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.engine.evaluator import Engine
from signoff.identity import NoAuthenticator
from signoff.observability import Telemetry
from signoff.server import app
from signoff.server.approvals import ApprovalService
from signoff.v1 import admin_pb2 as adb
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from signoff.views import Views
from tests.conftest import RULES
from tests.observability.harness import by_label, metric_points
from tests.server.harness import (
    KEY,
    KEY_ID,
    REDIS_URL,
    TIMEOUT,
    allowed_read,
    bundled,
    drop_prefix,
    nested,
)

METHODS: list[MethodDescriptor] = [
    method
    for module, name in (
        (pb, "DecisionService"),
        (apb, "ApprovalService"),
        (adb, "PolicyAdminService"),
    )
    for method in module.DESCRIPTOR.services_by_name[name].methods
]
TRACEBACK_MARKERS = ("Traceback", 'File "', "Exception deserializing")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(number: int, data: bytes) -> bytes:
    """Field `number` as a length-delimited record holding `data` (bytes, string or message)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _field(message: Descriptor, name: str) -> int:
    number: int = message.fields_by_name[name].number
    return number


INVALID_UTF8 = b"ok\xff\xfe"


def _bad_string(message: Descriptor) -> bytes | None:
    """`message` whose first string field holds invalid UTF-8; None if it has no string field."""
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            return _delimited(f.number, INVALID_UTF8)
    return None


def _bad_check_key() -> bytes:
    """A CheckRequest whose payload has a key that is not UTF-8."""
    value = struct_pb2.Value(number_value=1).SerializeToString()
    entry = _delimited(1, INVALID_UTF8) + _delimited(2, value)
    return _delimited(_field(pb.CheckRequest.DESCRIPTOR, "payload"), _delimited(1, entry))


def _too_deep_check() -> bytes:
    """A CheckRequest whose payload nests past protobuf's own limit of 100 message levels."""
    request = pb.CheckRequest()
    request.payload.update(nested(40))
    return request.SerializeToString()


def _in_batch(item: bytes) -> bytes:
    return _delimited(_field(pb.CheckBatchRequest.DESCRIPTOR, "items"), item)


def malformed_bodies(method: MethodDescriptor) -> dict[str, bytes]:
    """Named bodies that no parser accepts as `method`'s request."""
    bodies = {
        # Field 1 announces 5 bytes and holds 2.
        "truncated": b"\x0a\x05ab",
        "truncated varint": b"\x08\xff\xff",
    }
    bad_string = _bad_string(method.input_type)
    if bad_string is not None:
        bodies["invalid utf-8"] = bad_string
    if method.input_type is pb.CheckRequest.DESCRIPTOR:
        bodies["invalid utf-8 map key"] = _bad_check_key()
        bodies["nested past protobuf's limit"] = _too_deep_check()
    if method.input_type is pb.CheckBatchRequest.DESCRIPTOR:
        bodies["invalid utf-8"] = _in_batch(
            _delimited(_field(pb.CheckRequest.DESCRIPTOR, "action"), INVALID_UTF8)
        )
        bodies["invalid utf-8 map key"] = _in_batch(_bad_check_key())
        bodies["nested past protobuf's limit"] = _in_batch(_too_deep_check())
    return bodies


CASES = [
    pytest.param(method, body, id=f"{method.name}-{name}")
    for method in METHODS
    for name, body in malformed_bodies(method).items()
]


@dataclass
class Served:
    running: app.Running
    channel: grpc.Channel
    reader: InMemoryMetricReader


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The decision, approval and admin services, with metrics read in memory."""
    reader = InMemoryMetricReader()
    telemetry = Telemetry.for_tests(metric_reader=reader)
    store = ApprovalStore(REDIS_URL, prefix=f"signoff:test:malformed:{uuid.uuid4().hex}:")
    running = app.start(
        Engine(bundled()),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        approval_service=ApprovalService(
            Approvals(
                store,
                digest_key=digest_key(KEY),
                views=Views(hash_key=KEY, hash_key_id=KEY_ID),
                telemetry=telemetry,
            ),
            NoAuthenticator(),
        ),
        telemetry=telemetry,
        reloading=app.Reloading(RULES, "cel-expr", NoAuthenticator()),
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Served(running, channel, reader)
    finally:
        running.stop(grace=None)
        drop_prefix(store.redis, store.prefix)


def _send(channel: grpc.Channel, method: MethodDescriptor, body: bytes) -> grpc.RpcError:
    """Send `body` as is (no serializer touches it) and return the failed call."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            list(channel.unary_stream(path, None, None)(body, timeout=TIMEOUT))
        else:
            channel.unary_unary(path, None, None)(body, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{path} accepted a malformed request")


@pytest.mark.parametrize(("method", "body"), CASES)
def test_malformed_request_is_invalid_argument_without_a_traceback(
    served: Served, method: MethodDescriptor, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        error = _send(served.channel, method, body)

    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"invalid request: request: not a valid {method.input_type.full_name} message"
    )
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        text = record.getMessage()
        for marker in TRACEBACK_MARKERS:
            assert marker not in text


def test_malformed_requests_are_counted_by_method(served: Served) -> None:
    def counts() -> dict[str, int]:
        points = metric_points(served.reader, "signoff.rpc.malformed_requests")
        return {method: int(p.value) for method, p in by_label(points, "rpc.method").items()}

    before = counts()
    check = pb.DESCRIPTOR.services_by_name["DecisionService"].methods_by_name["Check"]
    watch = apb.DESCRIPTOR.services_by_name["ApprovalService"].methods_by_name["WatchApproval"]
    for _ in range(3):
        _send(served.channel, check, b"\x0a\x05ab")
    _send(served.channel, watch, b"\x0a\x05ab")

    after = counts()
    check_name = "signoff.v1.DecisionService/Check"
    watch_name = "signoff.v1.ApprovalService/WatchApproval"
    assert after[check_name] - before.get(check_name, 0) == 3
    assert after[watch_name] - before.get(watch_name, 0) == 1


def test_well_formed_requests_still_reach_their_handlers(served: Served) -> None:
    # The parsing moved into the handlers: valid bytes must decide exactly as before.
    check = pb.DESCRIPTOR.services_by_name["DecisionService"].methods_by_name["Check"]
    path = f"/{check.containing_service.full_name}/{check.name}"
    raw = served.channel.unary_unary(path, None, None)(
        allowed_read().SerializeToString(), timeout=TIMEOUT
    )

    assert pb.CheckResponse.FromString(raw).verdict == pb.VERDICT_ALLOW
    with pytest.raises(grpc.RpcError) as info:
        list(
            served.channel.unary_stream("/signoff.v1.ApprovalService/WatchApproval", None, None)(
                apb.WatchApprovalRequest(approval_id="apr_x").SerializeToString(),
                timeout=TIMEOUT,
            )
        )
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
