"""Broken exporters, processors and callbacks never fail a decision, and are logged sparingly."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from signoff.observability import Telemetry
from signoff.observability.guard import Shield
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.observability.harness import SECRET, TIMEOUT, Recorded, metric_points, serving


class RaisingSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.attempts = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        raise RuntimeError(f"collector rejected {len(spans)} spans")

    def shutdown(self) -> None:
        pass


class RaisingProcessor(SpanProcessor):
    """A processor that fails on every span start or end, as a buggy plugin might."""

    def __init__(self, fails_on: str) -> None:
        self.fails_on = fails_on

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.fails_on == "start":
            raise RuntimeError(f"cannot start {SECRET}")

    def on_end(self, span: ReadableSpan) -> None:
        if self.fails_on == "end":
            raise RuntimeError(f"cannot end {SECRET}")


class RaisingMetricExporter(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        raise RuntimeError("metrics backend down")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


def test_an_exporter_that_raises_on_export_never_breaks_the_rpc() -> None:
    exporter = RaisingSpanExporter()
    telemetry = Telemetry.for_tests(exporter)
    try:
        with serving(telemetry) as served:
            response = served.check()
            watched = list(
                served.approvals.WatchApproval(
                    apb.WatchApprovalRequest(approval_id="apr-1"), timeout=TIMEOUT
                )
            )
    finally:
        telemetry.shutdown()

    assert response.verdict == pb.VERDICT_ALLOW
    assert len(watched) == 3
    assert exporter.attempts == 2  # the Check (its decision on its span) and the watch


def test_a_batch_exporter_that_raises_never_breaks_the_rpc_or_shutdown() -> None:
    exporter = RaisingSpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider, MeterProvider(shutdown_on_exit=False))
    with serving(telemetry) as served:
        assert served.check().verdict == pb.VERDICT_ALLOW
    telemetry.shutdown()

    assert exporter.attempts >= 1


@pytest.mark.parametrize("fails_on", ["start", "end"])
def test_a_processor_that_raises_never_breaks_the_rpc(
    fails_on: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = Recorded()
    recorded.telemetry.tracer_provider.add_span_processor(RaisingProcessor(fails_on))
    caplog.set_level(logging.WARNING, logger="signoff.telemetry")
    try:
        with serving(recorded.telemetry) as served:
            for _ in range(5):
                assert served.check().verdict == pb.VERDICT_ALLOW
            stream = served.approvals.WatchApproval(
                apb.WatchApprovalRequest(approval_id="apr-1"), timeout=TIMEOUT
            )
            assert len(list(stream)) == 3
            with pytest.raises(grpc.RpcError) as failed:
                served.check("explode")
            assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        recorded.telemetry.shutdown()

    # The failures were noted once per kind of operation, not once per request.
    ours = [r for r in caplog.records if r.name == "signoff.telemetry"]
    operations = [str(r.args[0]) for r in ours if isinstance(r.args, tuple)]
    assert all(f"{fails_on} " in op for op in operations), operations
    assert len(operations) == len(set(operations)) >= 1
    assert all(SECRET not in r.getMessage() for r in ours)


def test_a_pending_callback_that_raises_yields_no_reading(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int | None:
        raise ConnectionError(f"redis said {SECRET}")

    recorded.telemetry.observe_pending(broken)
    recorded.telemetry.record_policy_load("ok")

    assert recorded.points("signoff.approvals.pending") == []
    assert [p.value for p in recorded.points("signoff.policy.loads")] == [1]
    messages = [r.getMessage() for r in caplog.records if r.name == "signoff.telemetry"]
    assert any("ConnectionError" in m for m in messages)
    assert all(SECRET not in m for m in messages)


def test_a_metric_exporter_that_raises_never_breaks_recording_or_shutdown() -> None:
    reader = InMemoryMetricReader()
    periodic = PeriodicExportingMetricReader(
        RaisingMetricExporter(), export_interval_millis=10, export_timeout_millis=100
    )
    meter_provider = MeterProvider(metric_readers=[reader, periodic], shutdown_on_exit=False)
    telemetry = Telemetry(TracerProvider(shutdown_on_exit=False), meter_provider)
    for _ in range(50):
        telemetry.record_decision("deny", 0.001)
    assert [p.value for p in metric_points(reader, "signoff.decisions")] == [50]
    telemetry.shutdown()


def test_calls_after_shutdown_are_harmless(recorded: Recorded) -> None:
    telemetry = recorded.telemetry
    telemetry.shutdown()
    telemetry.shutdown()

    telemetry.record_decision("allow", 0.001)
    telemetry.record_approval_outcome("approved")
    with telemetry.decision_span(item_index=0) as span:
        span.set_decision("d", "allow", "r", [], "doc", "read", "p", "human")
        span.set_error("INTERNAL")
        telemetry.approval_event("apr", "pending", "approved", "bob")


def test_exceptions_in_the_decision_block_still_propagate(recorded: Recorded) -> None:
    with pytest.raises(KeyError), recorded.telemetry.decision_span():
        raise KeyError(SECRET)

    span = recorded.only("signoff.decision")
    assert span.status.description == "KeyError"
    assert SECRET not in recorded.everything()


def test_a_disabled_instance_records_nothing_and_answers_everything() -> None:
    telemetry = Telemetry.disabled()
    with serving(telemetry) as served:
        response = served.check()
    telemetry.record_decision("allow", 0.001)
    telemetry.shutdown()

    assert response.verdict == pb.VERDICT_ALLOW
    assert response.reasons == [""]


def test_failures_are_logged_once_per_interval_with_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    shield = Shield(interval=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="signoff.telemetry")

    for _ in range(5):
        with shield("export"):
            raise ValueError(SECRET)
    with shield("observe"):
        raise ValueError(SECRET)
    now[0] += 61
    with shield("export"):
        raise ValueError(SECRET)

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("telemetry export failed: ValueError at ")
    assert messages[1].startswith("telemetry observe failed: ValueError")
    assert messages[2].endswith("(4 more not logged)")
    assert all(SECRET not in m for m in messages)


def test_the_shield_lets_interrupts_through() -> None:
    shield = Shield()
    with pytest.raises(KeyboardInterrupt), shield("anything"):
        raise KeyboardInterrupt
