"""Calls served without an RPC span or metric reader do only the work that is seen."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.engine.evaluator import Engine
from signoff.observability import Telemetry
from signoff.server import app
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import (
    DAY,
    KEY,
    KEY_ID,
    REDIS_URL,
    TIMEOUT,
    allowed_read,
    bundled,
    channel_to,
    drop_prefix,
)

METHOD = "signoff.v1.DecisionService/Check"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
METADATA: dict[str, list[tuple[str, str]]] = {
    "none": [("user-agent", "grpc-python")],
    "sampled caller": [("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")],
    "unsampled caller": [("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00")],
    "malformed": [("traceparent", "00-not-a-trace-01")],
    "with state": [
        ("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        ("tracestate", "vendor=opaque"),
    ],
}
SAMPLERS: dict[str, Sampler] = {
    "default": DEFAULT_ON,
    "off": ALWAYS_OFF,
    "parent or off": ParentBased(ALWAYS_OFF),
    "ratio": TraceIdRatioBased(0.5),
}


class Counting(IdGenerator):
    """Ids from a counter: two providers made alike hand out the same ids."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return next(self._next) * 0x9E3779B97F4A7C15 % (1 << 128) or 1


def _telemetry(sampler: Sampler) -> Telemetry:
    provider = TracerProvider(sampler=sampler, id_generator=Counting(), shutdown_on_exit=False)
    return Telemetry(provider, MeterProvider(shutdown_on_exit=False), exports_spans=False)


def _with_span(telemetry: Telemetry, metadata: Any) -> str:
    """The trace id the RPC span gives (what the audit record used to read), "" unsampled."""
    tracing: Any = telemetry.server_interceptor()
    service, _, method = METHOD.rpartition("/")
    call = tracing.start(METHOD, service, method, metadata)
    token = call.attach()
    try:
        return telemetry.trace_id_hex()
    finally:
        call.detach(token)
        call._span.end()


@given(st.sampled_from(sorted(SAMPLERS)), st.sampled_from(sorted(METADATA)))
def test_the_untraced_trace_id_is_the_one_the_rpc_span_would_have(
    sampler: str, metadata: str
) -> None:
    with_span = _with_span(_telemetry(SAMPLERS[sampler]), METADATA[metadata])
    without = _telemetry(SAMPLERS[sampler]).untraced_trace_id(METHOD, METADATA[metadata])
    assert without == with_span


def test_disabled_telemetry_gives_no_trace_id() -> None:
    assert Telemetry.disabled().untraced_trace_id(METHOD, METADATA["sampled caller"]) == ""


@pytest.fixture
def audited() -> Any:
    prefix = f"signoff:test:untraced:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    yield audit
    audit.close(timeout=1.0)
    drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def test_a_decision_without_exported_spans_is_audited_under_the_callers_trace(
    audited: AuditLog,
) -> None:
    telemetry = Telemetry.for_tests()  # no span exporter: decisions run without an RPC span
    running = app.start(
        Engine(bundled(), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        telemetry=telemetry,
        audit=audited,
        views=Views(hash_key=KEY, hash_key_id=KEY_ID),
    )
    assert not running.decisions.traced
    try:
        with channel_to(running.port) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for _ in range(2):  # a miss and a hit
                stub.Check(
                    allowed_read(), timeout=TIMEOUT, metadata=tuple(METADATA["sampled caller"])
                )
            stub.Check(allowed_read(), timeout=TIMEOUT)
    finally:
        running.stop(grace=None)
    assert audited.flush(10.0)
    out = io.StringIO()
    audited.export("decisions", None, None, out)
    traces = [json.loads(line)["trace_id"] for line in out.getvalue().splitlines()]
    assert traces[:2] == [CALLER_TRACE, CALLER_TRACE]
    assert len(traces[2]) == 32
    assert traces[2] != CALLER_TRACE


def test_metrics_are_recorded_only_when_something_reads_them() -> None:
    quiet = Telemetry.from_env({"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"})
    read = Telemetry.from_env({"OTEL_METRICS_EXPORTER": "console", "OTEL_TRACES_EXPORTER": "none"})
    try:
        assert not quiet.exports_metrics
        assert read.exports_metrics
        assert not Telemetry.disabled().exports_metrics
    finally:
        quiet.shutdown(1.0)
        read.shutdown(1.0)
