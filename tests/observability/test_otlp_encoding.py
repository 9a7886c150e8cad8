"""The hand-written OTLP span encoding gives exactly the SDK encoder's message."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from signoff.observability import exporters
from signoff.observability.otlp import FastOTLPSpanExporter, encode_request

texts = st.text(max_size=200)
ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
floats = st.floats(allow_nan=False)
scalars = st.one_of(texts, st.booleans(), ints, floats)
values = st.one_of(
    scalars,
    st.lists(texts, max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(ints, max_size=4),
    st.lists(floats, max_size=4),
)
attribute_maps = st.dictionaries(st.text(min_size=1, max_size=30), values, max_size=8)
ids = st.integers(min_value=1, max_value=(1 << 64) - 1)


@st.composite
def span_plans(draw: st.DrawFn) -> dict[str, Any]:
    remote = draw(st.sampled_from([None, False, True]))
    return {
        "name": draw(texts),
        "kind": draw(st.sampled_from(list(SpanKind))),
        "attributes": draw(attribute_maps),
        "events": draw(st.lists(st.tuples(texts, attribute_maps), max_size=3)),
        "status": draw(
            st.sampled_from(
                [None, Status(StatusCode.OK), Status(StatusCode.ERROR, "INVALID_ARGUMENT")]
            )
        ),
        "parent": None
        if remote is None
        else SpanContext(
            draw(ids),
            draw(ids),
            is_remote=remote,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "opaque")]) if draw(st.booleans()) else None,
        ),
        "link": draw(st.booleans()),
        "scope": draw(st.sampled_from(["signoff", "other"])),
    }


def _spans(plans: list[dict[str, Any]], resource: Resource) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for plan in plans:
        tracer = provider.get_tracer(plan["scope"], "1.0", schema_url="https://example.com/s")
        parent = plan["parent"]
        context = (
            None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
        )
        links = [Link(parent or SpanContext(1, 2, False), {"why": "batch"})] if plan["link"] else []
        span = tracer.start_span(
            plan["name"],
            context=context,
            kind=plan["kind"],
            attributes=plan["attributes"],
            links=links,
        )
        for name, attributes in plan["events"]:
            span.add_event(name, attributes)
        if plan["status"] is not None:
            span.set_status(plan["status"])
        span.end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(span_plans(), min_size=1, max_size=6))
def test_encoded_spans_are_the_sdk_encoders_message(plans: list[dict[str, Any]]) -> None:
    spans = _spans(plans, Resource.create({"service.name": "signoff-test"}))

    ours = ExportTraceServiceRequest.FromString(encode_request(spans))

    assert ours == encode_spans(spans)


def test_spans_of_two_resources_are_grouped_as_the_sdk_groups_them() -> None:
    plan = {
        "name": "n",
        "kind": SpanKind.SERVER,
        "attributes": {"k": "v"},
        "events": [],
        "status": None,
        "parent": None,
        "link": False,
        "scope": "signoff",
    }
    first = _spans([plan, plan], Resource.create({"service.name": "a"}))
    second = _spans([plan], Resource.create({"service.name": "b"}))
    again = _spans([plan], Resource.create({"service.name": "a"}))  # equal, not the same object
    spans = first + second + again

    ours = ExportTraceServiceRequest.FromString(encode_request(spans))

    assert ours == encode_spans(spans)
    assert [len(r.scope_spans[0].spans) for r in ours.resource_spans] == [3, 1]


def test_the_otlp_grpc_exporter_from_the_environment_uses_this_encoding() -> None:
    setup = exporters.from_env(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        service_name="signoff",
        prometheus_address=None,
    )
    try:
        processors = setup.tracer_provider._active_span_processor._span_processors
        exporter = processors[0]._batch_processor._exporter  # type: ignore[attr-defined]
        assert isinstance(exporter, FastOTLPSpanExporter)
    finally:
        setup.tracer_provider.shutdown()
        setup.meter_provider.shutdown()
