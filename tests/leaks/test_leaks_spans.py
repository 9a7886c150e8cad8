"""Span trees of real decisions and approvals, as the in-memory exporter receives them."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import DevIdP
from tests.leaks.conftest import MakeStack
from tests.leaks.support import (
    BOT,
    REVIEWER,
    Canaries,
    allow,
    bad_requests,
    deny,
    mask,
    needs_approval,
)
from tests.observability.harness import Recorded

CHECK = "signoff.v1.DecisionService/Check"
CHECK_BATCH = "signoff.v1.DecisionService/CheckBatch"
DECISION = "signoff.decision"
TRANSITION = "signoff.approval.transition"


def _attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return dict(span.attributes or {})


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def _decision(recorded: Recorded, decision_id: str) -> ReadableSpan:
    """The span carrying the decision: its Check's RPC span."""
    found = [
        s for s in recorded.spans(CHECK) if _attrs(s).get("signoff.decision.id") == decision_id
    ]
    assert len(found) == 1, [_attrs(s) for s in recorded.spans(CHECK)]
    return found[0]


def _transitions(span: ReadableSpan) -> list[tuple[str, str, str, str]]:
    """(approval id, from, to, actor) of each approval transition event on `span`."""
    out = []
    for event in span.events:
        assert event.name == TRANSITION, event.name
        a = dict(event.attributes or {})
        out.append(
            (
                str(a["signoff.approval.id"]),
                str(a["signoff.approval.from"]),
                str(a["signoff.approval.to"]),
                str(a["signoff.approval.actor"]),
            )
        )
    return out


def test_a_check_is_one_server_span_naming_the_decision(
    make_stack: MakeStack, recorded: Recorded
) -> None:
    stack = make_stack(recorded)

    response = stack.check(mask(Canaries()))

    (server,) = recorded.spans()
    assert server.name == CHECK
    assert server.kind is SpanKind.SERVER
    assert server.parent is None
    assert recorded.spans(DECISION) == []
    attributes = _attrs(server)
    assert {k: v for k, v in attributes.items() if k.startswith("signoff.")} == {
        "signoff.decision.id": response.decision_id,
        "signoff.decision.verdict": "mask",
        "signoff.policy.revision": response.policy_revision,
        "signoff.rules.matched": ("ledger/allow-staff", "ledger/mask-personal"),
        "signoff.rules.errored": (),
        "signoff.resource.kind": "ledger",
        "signoff.action": "read",
        "signoff.principal.id": BOT,
        "signoff.principal.kind": "agent",
    }
    assert tuple(response.matched_rules) == attributes["signoff.rules.matched"]
    assert server.status.status_code is StatusCode.UNSET
    assert server.events == ()


def test_a_batch_is_one_server_span_with_one_decision_event_per_item(
    make_stack: MakeStack, recorded: Recorded
) -> None:
    stack = make_stack(recorded)
    c = Canaries()
    items = [allow(c), bad_requests(c)["mistyped-int"], deny(c)]

    response = stack.batch(items)

    (server,) = recorded.spans()
    assert server.name == CHECK_BATCH
    assert server.kind is SpanKind.SERVER
    events = [dict(e.attributes or {}) for e in server.events if e.name == DECISION]
    assert [e["signoff.batch.item"] for e in events] == [0, 1, 2]
    good = [events[0], events[2]]
    assert [e["signoff.decision.id"] for e in good] == [
        response.results[0].decision.decision_id,
        response.results[2].decision.decision_id,
    ]
    assert [e["signoff.decision.verdict"] for e in good] == ["allow", "deny"]
    assert server.status.status_code is StatusCode.UNSET  # an item's error is not the call's
    assert response.results[1].WhichOneof("outcome") == "error"
    # A code name, never the message: that one names the offending field.
    assert events[1] == {"signoff.batch.item": 1, "signoff.error": "INVALID_ARGUMENT"}


def test_every_approval_transition_is_an_event_on_the_span_that_caused_it(
    make_stack: MakeStack, recorded: Recorded, leak_idp: DevIdP
) -> None:
    stack = make_stack(recorded)
    c = Canaries()
    reviewer = leak_idp.token(REVIEWER, "reviewer")
    asked = {tag: stack.check(needs_approval(c, tag)) for tag in ("a", "b", "c")}
    ids = {tag: response.approval_id for tag, response in asked.items()}

    stack.approve(ids["a"], reviewer)
    consumed = stack.check(needs_approval(c, "a"), ids["a"])
    stack.reject(ids["b"], reviewer)
    stack.cancel(ids["c"], leak_idp.token(BOT, kind="agent"))

    for tag, response in asked.items():
        span = _decision(recorded, response.decision_id)
        assert _attrs(span)["signoff.approval.id"] == ids[tag]
        assert _transitions(span) == [(ids[tag], "", "pending", BOT)]
    assert consumed.verdict == pb.VERDICT_MASK
    assert _transitions(_decision(recorded, consumed.decision_id)) == [
        (ids["a"], "approved", "consumed", BOT)
    ]
    rpc = "signoff.v1.ApprovalService/"
    assert _transitions(recorded.only(rpc + "Approve")) == [
        (ids["a"], "pending", "approved", REVIEWER)
    ]
    assert _transitions(recorded.only(rpc + "Reject")) == [
        (ids["b"], "pending", "rejected", REVIEWER)
    ]
    assert _transitions(recorded.only(rpc + "Cancel")) == [(ids["c"], "pending", "cancelled", BOT)]
    for name in ("Approve", "Reject", "Cancel"):
        assert recorded.only(rpc + name).kind is SpanKind.SERVER


def test_an_incoming_traceparent_continues_the_callers_trace_into_the_audit_record(
    make_stack: MakeStack, recorded: Recorded
) -> None:
    stack = make_stack(recorded)
    caller = TracerProvider()
    caller.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    carrier: dict[str, str] = {}
    with caller.get_tracer("caller").start_as_current_span("ask signoff") as asking:
        TraceContextTextMapPropagator().inject(carrier)
        response = stack.decisions.Check(
            allow(Canaries()), metadata=tuple(carrier.items()), timeout=10
        )
    caller.shutdown()

    asked = asking.get_span_context()
    server = recorded.only(CHECK)
    assert _trace_id(server) == asked.trace_id
    assert server.parent is not None
    assert server.parent.span_id == asked.span_id
    assert server.parent.is_remote
    assert _decision(recorded, response.decision_id) is server
    assert stack.audit.flush(10.0)
    out = io.StringIO()
    stack.audit.export("decisions", None, None, out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    [record] = [r for r in records if r.get("decision_id") == response.decision_id]
    assert record["trace_id"] == trace.format_trace_id(asked.trace_id)
