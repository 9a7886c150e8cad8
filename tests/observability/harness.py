"""Telemetry test helpers: a real gRPC server with tiny servicers, in-memory exporters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any, NoReturn

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2_grpc
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from signoff.observability import Telemetry
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc

# No call in these tests should take this long; a hang fails instead of blocking the run.
TIMEOUT = 10.0
# A value that stands for caller data: it must never show up in any span, metric or log.
SECRET = "SECRET-3141-caller-data"
CHECK = "signoff.v1.DecisionService/Check"
CHECK_BATCH = "signoff.v1.DecisionService/CheckBatch"
WATCH = "signoff.v1.ApprovalService/WatchApproval"


class TinyDecisions(pb_grpc.DecisionServiceServicer):
    """Answers ALLOW inside a decision span; some actions fail the way real handlers do."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        started = time.perf_counter()
        with self.telemetry.decision_span() as span:
            if request.action == "explode":
                # Like signoff's own errors, the message may quote what the caller sent.
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad payload {request.payload}")
            if request.action == "crash":
                raise RuntimeError(f"cannot handle {request.payload}")
            span.set_decision(
                decision_id="d-1",
                verdict="ALLOW",
                policy_revision="rev-abc",
                matched_rules=["allow-readers"],
                resource_kind=request.resource.kind,
                action=request.action,
                principal_id=request.principal.id,
                principal_kind="human",
            )
            trace_id = span.trace_id_hex()
        self.telemetry.record_decision("allow", time.perf_counter() - started)
        return pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d-1", reasons=[trace_id])

    def CheckBatch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        out = pb.CheckBatchResponse()
        for index, item in enumerate(request.items):
            result = out.results.add()
            with self.telemetry.decision_span(item_index=index) as span:
                if not item.action:
                    span.set_error("INVALID_ARGUMENT")
                    result.error.CopyFrom(pb.ItemError(code=3, message="action: is required"))
                    continue
                span.set_decision(
                    decision_id=f"d-{index}",
                    verdict="DENY",
                    policy_revision="rev-abc",
                    matched_rules=[],
                    resource_kind=item.resource.kind,
                    action=item.action,
                    principal_id=item.principal.id,
                    principal_kind="agent",
                    errored_rules=["broken-rule"],
                )
                result.decision.CopyFrom(pb.CheckResponse(verdict=pb.VERDICT_DENY))
        return out


class TinyApprovals(apb_grpc.ApprovalServiceServicer):
    """Streams an approval through three states, noting each transition on the current span."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def _unused(self, request: object, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the telemetry tests")

    ListApprovals = GetApproval = Approve = Reject = Cancel = _unused

    def WatchApproval(
        self, request: apb.WatchApprovalRequest, context: grpc.ServicerContext
    ) -> Iterator[apb.WatchApprovalResponse]:
        states = [
            ("pending", "pending", apb.APPROVAL_STATE_PENDING),
            ("pending", "approved", apb.APPROVAL_STATE_APPROVED),
            ("approved", "consumed", apb.APPROVAL_STATE_CONSUMED),
        ]
        for before, after, state in states:
            self.telemetry.approval_event(request.approval_id, before, after, "alice@example.com")
            yield apb.WatchApprovalResponse(
                approval=apb.Approval(id=request.approval_id, state=state)
            )
            if request.approval_id == "missing":
                context.abort(grpc.StatusCode.NOT_FOUND, f"no approval {request.approval_id}")
            if request.approval_id == "forever":
                # Held open until the caller goes away, like a watch on a pending approval.
                ended = threading.Event()
                if context.add_callback(ended.set):
                    ended.wait(TIMEOUT)
                return


class Served:
    """A running server with both tiny servicers and health, behind the telemetry interceptor."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(
            self._pool,
            interceptors=[telemetry.server_interceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_DecisionServiceServicer_to_server(TinyDecisions(telemetry), self._server)
        apb_grpc.add_ApprovalServiceServicer_to_server(TinyApprovals(telemetry), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.decisions = pb_grpc.DecisionServiceStub(self.channel)
        self.approvals = apb_grpc.ApprovalServiceStub(self.channel)

    def check(
        self, action: str = "read", *, metadata: Sequence[tuple[str, str]] = ()
    ) -> pb.CheckResponse:
        return self.decisions.Check(
            check_request(action), timeout=TIMEOUT, metadata=tuple(metadata)
        )

    def stop(self) -> None:
        self.channel.close()
        self._server.stop(grace=None).wait()
        self._pool.shutdown(wait=True)


@contextmanager
def serving(telemetry: Telemetry) -> Iterator[Served]:
    served = Served(telemetry)
    try:
        yield served
    finally:
        served.stop()


def check_request(action: str = "read") -> pb.CheckRequest:
    payload = struct_pb2.Struct()
    payload.update({"query": SECRET, "nested": {"value": SECRET}})
    return pb.CheckRequest(
        principal=pb.Principal(id="alice@example.com", kind=pb.PRINCIPAL_KIND_HUMAN),
        action=action,
        resource=pb.Resource(kind="report", id=SECRET),
        payload=payload,
    )


class Recorded:
    """A Telemetry instance whose spans and metrics the test can read back."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry.for_tests(self.exporter, self.reader)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def only(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def wait_for(self, name: str, timeout: float = TIMEOUT) -> ReadableSpan:
        """The one span called `name`, once it has ended (some end on another thread)."""
        deadline = time.monotonic() + timeout
        while not self.spans(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.only(name)

    def points(self, metric: str) -> list[Any]:
        return metric_points(self.reader, metric)

    def everything(self) -> str:
        """Every span and metric as exported, for checks that something never appears."""
        spans = "\n".join(s.to_json() for s in self.spans())
        data = self.reader.get_metrics_data()
        return spans + "\n" + (data.to_json() if data is not None else "")


def metric_points(reader: InMemoryMetricReader, metric: str) -> list[Any]:
    """The data points of `metric` in one fresh collection (empty when it has none)."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    points: list[NumberDataPoint | HistogramDataPoint] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    points.extend(m.data.data_points)  # type: ignore[arg-type]
    return points


def by_label(points: Sequence[Any], label: str) -> dict[str, Any]:
    return {p.attributes[label]: p for p in points}
