"""Server spans over real gRPC: names, nesting, trace continuation, statuses and streams."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.observability.harness import (
    CHECK,
    CHECK_BATCH,
    SECRET,
    TIMEOUT,
    WATCH,
    Recorded,
    Served,
    check_request,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_each_unary_rpc_gets_one_server_span_named_by_its_full_method(
    recorded: Recorded, served: Served
) -> None:
    served.decisions.CheckBatch(pb.CheckBatchRequest(), timeout=TIMEOUT)

    span = recorded.only(CHECK_BATCH)
    assert span.kind is SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "signoff.v1.DecisionService",
        "rpc.method": "CheckBatch",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


def test_a_check_is_one_span_the_rpc_span_carrying_its_decision(
    recorded: Recorded, served: Served
) -> None:
    response = served.check()

    (server,) = recorded.spans()
    assert server.name == CHECK
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert dict(server.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "signoff.v1.DecisionService",
        "rpc.method": "Check",
        "rpc.grpc.status_code": 0,
        "signoff.decision.id": "d-1",
        "signoff.decision.verdict": "allow",
        "signoff.policy.revision": "rev-abc",
        "signoff.rules.matched": ("allow-readers",),
        "signoff.rules.errored": (),
        "signoff.resource.kind": "report",
        "signoff.action": "read",
        "signoff.principal.id": "alice@example.com",
        "signoff.principal.kind": "human",
    }
    # The handler saw the trace it ran in, as the audit log will.
    assert response.reasons == [trace.format_trace_id(server.context.trace_id)]


def test_each_batch_item_is_a_decision_event_on_the_batch_span_with_its_index(
    recorded: Recorded, served: Served
) -> None:
    items = [check_request("read"), check_request(""), check_request("write")]
    served.decisions.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    (server,) = recorded.spans()
    assert server.name == CHECK_BATCH
    events = [e for e in server.events if e.name == "signoff.decision"]
    assert [(e.attributes or {})["signoff.batch.item"] for e in events] == [0, 1, 2]
    invalid = dict(events[1].attributes or {})
    assert invalid == {"signoff.batch.item": 1, "signoff.error": "INVALID_ARGUMENT"}
    assert (events[0].attributes or {})["signoff.decision.id"] == "d-0"
    assert (events[2].attributes or {})["signoff.rules.errored"] == ("broken-rule",)
    # An item's error is not the call's.
    assert server.status.status_code is StatusCode.UNSET


def test_an_incoming_traceparent_continues_the_callers_trace(
    recorded: Recorded, served: Served
) -> None:
    caller_spans = InMemorySpanExporter()
    caller = TracerProvider()
    caller.add_span_processor(SimpleSpanProcessor(caller_spans))
    carrier: dict[str, str] = {}
    with caller.get_tracer("caller").start_as_current_span("ask signoff") as asking:
        TraceContextTextMapPropagator().inject(carrier)
        carrier["tracestate"] = "vendor=opaque"
        response = served.check(metadata=tuple(carrier.items()))
    caller.shutdown()

    server = recorded.only(CHECK)
    asked = asking.get_span_context()
    assert server.context is not None
    assert server.parent is not None
    assert server.context.trace_id == asked.trace_id
    assert server.parent.span_id == asked.span_id
    assert server.parent.is_remote
    assert server.context.trace_state.get("vendor") == "opaque"
    assert (server.attributes or {})["signoff.decision.id"] == "d-1"
    assert response.reasons == [trace.format_trace_id(asked.trace_id)]


def test_an_unsampled_caller_trace_is_followed_and_not_recorded(
    recorded: Recorded, served: Served
) -> None:
    response = served.check(metadata=[("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00")])

    assert recorded.spans() == []
    # Nothing sampled, so no trace id worth keeping in the audit log.
    assert response.reasons == [""]


def test_a_malformed_traceparent_starts_a_new_trace(recorded: Recorded, served: Served) -> None:
    served.check(metadata=[("traceparent", "00-not-a-trace-01")])

    server = recorded.only(CHECK)
    assert server.parent is None
    assert server.context is not None
    assert trace.format_trace_id(server.context.trace_id) != CALLER_TRACE


def test_an_aborted_rpc_records_its_status_code_and_none_of_the_message(
    recorded: Recorded, served: Served
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        served.check("explode")
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert SECRET in (failed.value.details() or "")  # the caller does get the message

    server = recorded.only(CHECK)
    assert (server.attributes or {})["rpc.grpc.status_code"] == 3
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "INVALID_ARGUMENT"
    assert server.events == ()
    assert recorded.spans() == [server]  # the decision's attributes are on it, none apart
    assert SECRET not in recorded.everything()


def test_an_exception_in_a_handler_is_recorded_as_unknown_without_its_message(
    recorded: Recorded, served: Served
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        served.check("crash")
    assert failed.value.code() is grpc.StatusCode.UNKNOWN

    server = recorded.only(CHECK)
    assert (server.attributes or {})["rpc.grpc.status_code"] == 2
    assert server.status.description == "UNKNOWN"
    assert recorded.spans() == [server]
    assert SECRET not in recorded.everything()


def test_a_server_stream_gets_one_span_covering_every_message(
    recorded: Recorded, served: Served
) -> None:
    stream = served.approvals.WatchApproval(
        apb.WatchApprovalRequest(approval_id="apr-1"), timeout=TIMEOUT
    )
    states = [r.approval.state for r in stream]
    assert states == [
        apb.APPROVAL_STATE_PENDING,
        apb.APPROVAL_STATE_APPROVED,
        apb.APPROVAL_STATE_CONSUMED,
    ]

    span = recorded.only(WATCH)
    assert span.kind is SpanKind.SERVER
    assert (span.attributes or {})["rpc.grpc.status_code"] == 0
    assert (span.attributes or {})["rpc.method"] == "WatchApproval"
    # Each message was produced inside the span: its transition landed on it.
    assert [e.name for e in span.events] == ["signoff.approval.transition"] * 3
    assert [dict(e.attributes or {}) for e in span.events][1] == {
        "signoff.approval.id": "apr-1",
        "signoff.approval.from": "pending",
        "signoff.approval.to": "approved",
        "signoff.approval.actor": "alice@example.com",
    }
    assert len(recorded.spans()) == 1


def test_a_stream_aborted_midway_records_the_abort_code(recorded: Recorded, served: Served) -> None:
    stream = served.approvals.WatchApproval(
        apb.WatchApprovalRequest(approval_id="missing"), timeout=TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as failed:
        list(stream)
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND

    span = recorded.only(WATCH)
    assert (span.attributes or {})["rpc.grpc.status_code"] == 5
    assert span.status.description == "NOT_FOUND"
    assert len(span.events) == 1


def test_a_stream_the_caller_cancels_ends_its_span_as_cancelled(
    recorded: Recorded, served: Served
) -> None:
    stream = served.approvals.WatchApproval(
        apb.WatchApprovalRequest(approval_id="forever"), timeout=TIMEOUT
    )
    assert next(iter(stream)).approval.state == apb.APPROVAL_STATE_PENDING
    stream.cancel()  # type: ignore[no-untyped-call]

    span = recorded.wait_for(WATCH)
    assert (span.attributes or {})["rpc.grpc.status_code"] == 1
    assert span.status.description == "CANCELLED"


def test_health_checks_are_not_traced(recorded: Recorded, served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    served.check()

    assert [s.name for s in recorded.spans() if s.kind is SpanKind.SERVER] == [CHECK]


def test_a_decision_span_outside_any_rpc_starts_its_own_trace(recorded: Recorded) -> None:
    telemetry = recorded.telemetry
    with telemetry.decision_span(item_index=4) as span:
        current = telemetry.trace_id_hex()
        assert span.trace_id_hex() == current
        assert len(current) == 32
    assert telemetry.trace_id_hex() == ""

    decision = recorded.only("signoff.decision")
    assert decision.parent is None
    assert (decision.attributes or {})["signoff.batch.item"] == 4


def test_approval_events_outside_any_span_are_dropped(recorded: Recorded) -> None:
    recorded.telemetry.approval_event("apr-1", "pending", "expired", "system")

    assert recorded.spans() == []


def test_long_ids_and_rule_lists_are_bounded(recorded: Recorded) -> None:
    with recorded.telemetry.decision_span() as span:
        span.set_decision(
            decision_id="d",
            verdict="deny",
            policy_revision="r",
            matched_rules=[f"rule-{i}" for i in range(500)],
            resource_kind="doc",
            action="read",
            principal_id="p" * 10_000,
            principal_kind="agent",
        )

    attributes = recorded.only("signoff.decision").attributes or {}
    assert len(str(attributes["signoff.principal.id"])) == 256
    assert len(attributes["signoff.rules.matched"]) == 64  # type: ignore[arg-type]
