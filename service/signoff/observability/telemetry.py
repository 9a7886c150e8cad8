"""Traces and metrics for signoff: isolated per instance, never able to fail a decision."""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from signoff.observability import exporters
from signoff.observability.guard import Shield
from signoff.observability.interceptor import ServerTracing

log = logging.getLogger("signoff.telemetry")

SCOPE = "signoff"
DECISION_SPAN = "signoff.decision"
APPROVAL_EVENT = "signoff.approval.transition"
# Decisions take tens of microseconds when compiled rules match quickly and up to around a
# second when an approval store round trip is slow: cover 50 µs to 1 s, about 2.5x apart.
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Metric labels come from these closed sets only: anything else is counted as "other", so a
# caller mistake can never turn a label into an unbounded (or identifying) value.
VERDICTS = frozenset({"allow", "deny", "mask", "require_approval", "error"})
APPROVAL_OUTCOMES = frozenset({"approved", "rejected", "cancelled", "expired", "consumed"})
POLICY_LOAD_RESULTS = frozenset({"ok", "failed"})
OTHER = "other"
# Ids and names are bounded before they reach a span: a huge caller-chosen id must not make
# every exported batch huge too.
MAX_TEXT = 256
MAX_ITEMS = 64
# Health probes arrive every few seconds and say nothing about decisions.
UNTRACED_SERVICES = ("grpc.health.v1.Health",)


class DecisionSpan:
    """Where one decision is traced; every setter is safe to call whatever state telemetry is
    in. The decision's attributes go on `span` (its own span, or the RPC's for a unary
    Check), or, for a batch item (`item_index`), into a `signoff.decision` event on it."""

    def __init__(
        self,
        span: trace.Span,
        shield: Shield,
        *,
        detailed: bool = True,
        item_index: int | None = None,
    ) -> None:
        self._span = span
        self._shield = shield
        self._detailed = detailed
        self._item_index = item_index

    @property
    def records(self) -> bool:
        """Whether set_decision records anything: a caller may skip gathering its values."""
        with self._shield("read span state"):
            return self._detailed and self._span.is_recording()
        return False

    def set_decision(
        self,
        decision_id: str,
        verdict: str | enum.Enum,
        policy_revision: str,
        matched_rules: Sequence[str],
        resource_kind: str,
        action: str,
        principal_id: str,
        principal_kind: str | enum.Enum,
        approval_id: str = "",
        errored_rules: Sequence[str] = (),
        shadow: tuple[str | enum.Enum, Sequence[str]] | None = None,
    ) -> None:
        """Record what was decided: ids, names and enums only, never request values.
        `shadow` is what audit-only rules would have decided: (verdict, matched rule ids)."""
        with self._shield("set decision attributes"):
            if not (self._detailed and self._span.is_recording()):
                return
            attributes: dict[str, str | int | Sequence[str]] = {}
            if self._item_index is not None:
                attributes["signoff.batch.item"] = self._item_index
            attributes.update(
                {
                    "signoff.decision.id": _text(decision_id),
                    "signoff.decision.verdict": _text(_enum_text(verdict)),
                    "signoff.policy.revision": _text(policy_revision),
                    "signoff.rules.matched": _texts(matched_rules),
                    "signoff.rules.errored": _texts(errored_rules),
                    "signoff.resource.kind": _text(resource_kind),
                    "signoff.action": _text(action),
                    "signoff.principal.id": _text(principal_id),
                    "signoff.principal.kind": _text(_enum_text(principal_kind)),
                }
            )
            if approval_id:
                attributes["signoff.approval.id"] = _text(approval_id)
            if shadow is not None:
                attributes["signoff.shadow.verdict"] = _text(_enum_text(shadow[0]))
                attributes["signoff.shadow.rules"] = _texts(shadow[1])
            if self._item_index is None:
                self._span.set_attributes(attributes)
            else:
                self._span.add_event(DECISION_SPAN, attributes)

    def set_error(self, code_name: str | grpc.StatusCode) -> None:
        """Mark the decision as not made, e.g. an invalid batch item, by status code name."""
        with self._shield("set decision error"):
            if not (self._detailed and self._span.is_recording()):
                return
            name = _text(code_name.name if isinstance(code_name, grpc.StatusCode) else code_name)
            if self._item_index is None:
                self._span.set_status(Status(StatusCode.ERROR, name))
            else:  # an item's error is not the batch call's: an event of its own
                self._span.add_event(
                    DECISION_SPAN, {"signoff.batch.item": self._item_index, "signoff.error": name}
                )

    def trace_id_hex(self) -> str:
        """The trace id as 32 hex digits, or "" when this trace is not sampled."""
        with self._shield("read trace id"):
            return _trace_id(self._span)
        return ""


class _DecisionScope(AbstractContextManager[DecisionSpan]):
    """Opens the decision span as the current span; an error in the block marks it failed."""

    def __init__(self, telemetry: Telemetry, item_index: int | None) -> None:
        self._telemetry = telemetry
        self._item_index = item_index
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: object | None = None

    def __enter__(self) -> DecisionSpan:
        shield = self._telemetry.shield
        with shield("start decision span"):
            attributes = (
                {} if self._item_index is None else {"signoff.batch.item": self._item_index}
            )
            self._span = self._telemetry.tracer.start_span(
                DECISION_SPAN,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return DecisionSpan(self._span, shield)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shield = self._telemetry.shield
        if self._token is not None:
            with shield("leave decision span"):
                otel_context.detach(self._token)  # type: ignore[arg-type]
        with shield("end decision span"):
            already = getattr(self._span, "status", None)
            marked = already is not None and already.status_code is StatusCode.ERROR
            if exc_type is not None and not marked:
                # The exception's type only: its message might quote the request. A status
                # set by set_error (e.g. INVALID_ARGUMENT) says more and is kept.
                self._span.set_status(Status(StatusCode.ERROR, exc_type.__name__))
            self._span.end()


class Telemetry:
    """A tracer and a meter provider, plus the spans and instruments signoff records.

    Nothing here touches the global OpenTelemetry providers unless install_global() is called,
    so tests can build as many isolated instances as they like.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        description: str = "custom providers",
        prometheus_port: int | None = None,
        closers: Sequence[Callable[[], None]] = (),
        exports_spans: bool = True,
        exports_metrics: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        # Spans still carry trace ids when nothing exports them (the audit log links by trace
        # id); building their attributes would only cost each decision time for nothing.
        self.exports_spans = exports_spans
        # Likewise the metrics: with no reader, recording one costs each decision more than
        # its evaluation and is never seen.
        self.exports_metrics = exports_metrics
        self._verdict_labels: dict[str | enum.Enum, dict[str, str]] = {}
        self.meter_provider = meter_provider
        self.description = description
        self.prometheus_port = prometheus_port
        self.shield = Shield()
        self.propagator = TraceContextTextMapPropagator()
        self.tracer = tracer_provider.get_tracer(SCOPE)
        self._untraced = ServerTracing(self.tracer, self.propagator, self.shield)
        self._closers = list(closers)
        self._closed = False
        self._close_lock = threading.Lock()
        self._pending_source: Callable[[], int | None] | None = None
        meter = meter_provider.get_meter(SCOPE)
        self._decisions = meter.create_counter(
            "signoff.decisions", unit="{decision}", description="Decisions made, by verdict."
        )
        self._duration = meter.create_histogram(
            "signoff.decision.duration",
            unit="s",
            description="Time to reach one decision, by verdict.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._approval_outcomes = meter.create_counter(
            "signoff.approvals.outcomes",
            unit="{approval}",
            description="Approvals that reached a final state, by outcome.",
        )
        self._policy_loads = meter.create_counter(
            "signoff.policy.loads",
            unit="{load}",
            description="Policy bundle loads, by result.",
        )
        self._malformed = meter.create_counter(
            "signoff.rpc.malformed_requests",
            unit="{request}",
            description="Requests refused because their bytes are not a valid message, by method.",
        )
        meter.create_observable_gauge(
            "signoff.approvals.pending",
            callbacks=[self._observe_pending],
            unit="{approval}",
            description="Approvals waiting for sign-off.",
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        service_name: str = "signoff",
        prometheus_address: str | None = None,
    ) -> Telemetry:
        """Telemetry configured by the standard OpenTelemetry variables in `env` (os.environ).

        From `env`: OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER (none, console, otlp; a
        comma list is allowed), OTEL_EXPORTER_OTLP_PROTOCOL and its _TRACES_/_METRICS_ forms
        (grpc, http/protobuf), OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. The SDK itself
        reads the rest from the process environment, as documented by OpenTelemetry: OTLP
        endpoints, headers, timeouts, TLS and compression, the sampler, batch and export
        intervals. `prometheus_address` ("host:port", port 0 picks one) serves /metrics.
        Raises ConfigError for values it does not understand, OSError if the port is taken.
        Call shutdown() before exit: it is what flushes queued spans, within a deadline.
        """
        setup = exporters.from_env(
            os.environ if env is None else env,
            service_name=service_name,
            prometheus_address=prometheus_address,
        )
        return cls(
            setup.tracer_provider,
            setup.meter_provider,
            description=setup.description,
            prometheus_port=setup.prometheus_port,
            closers=setup.closers,
            exports_spans=setup.exports_spans,
            exports_metrics=setup.exports_metrics,
        )

    @classmethod
    def for_tests(
        cls,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
    ) -> Telemetry:
        """Spans exported synchronously as each ends, metrics read on demand by `metric_reader`."""
        resource = Resource({"service.name": "signoff-test"})
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if span_exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        readers = [] if metric_reader is None else [metric_reader]
        return cls(
            tracer_provider,
            MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False),
            description="test exporters",
            exports_spans=span_exporter is not None,
            exports_metrics=metric_reader is not None,
        )

    @classmethod
    def disabled(cls) -> Telemetry:
        """Records nothing and samples nothing: for servers and tools run without telemetry."""
        return cls(
            TracerProvider(
                sampler=ALWAYS_OFF, resource=Resource.get_empty(), shutdown_on_exit=False
            ),
            MeterProvider(resource=Resource.get_empty(), shutdown_on_exit=False),
            description="disabled",
            exports_metrics=False,
        )

    def install_global(self) -> None:
        """Make these providers the process-wide ones, for libraries that use the globals."""
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and stop, giving up after `timeout` seconds: an unreachable collector must
        not hold the process hostage at exit."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True

        def close() -> None:
            with self.shield("shut down tracing"):
                self.tracer_provider.shutdown()
            with self.shield("shut down metrics"):
                self.meter_provider.shutdown(timeout_millis=timeout * 1000)
            for closer in self._closers:
                with self.shield("stop metrics endpoint"):
                    closer()

        worker = threading.Thread(target=close, name="telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.warning("telemetry did not shut down within %.1fs; unsent data is dropped", timeout)

    # Tracing

    def server_interceptor(
        self, *, skip_services: Collection[str] = UNTRACED_SERVICES
    ) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
        """A SERVER span per RPC, continuing a caller's W3C trace context from the metadata."""
        return ServerTracing(self.tracer, self.propagator, self.shield, skip_services=skip_services)

    def untraced_trace_id(self, full_method: str, metadata: object) -> str:
        """For an RPC served without its span (only when nothing exports spans, see
        `exports_spans`): the trace id its span would have had, "" when unsampled.
        `full_method` is the gRPC method path: package.Service/Method."""
        service, _, method = full_method.rpartition("/")
        return self._untraced.trace_id(full_method, service, method, metadata)

    def decision_span(
        self, *, item_index: int | None = None
    ) -> AbstractContextManager[DecisionSpan]:
        """Context manager: where the decision is traced, in the span it reports the trace id
        of (the one its audit record links by).

        Inside a recording span (the RPC's), that span: a single decision's attributes are
        set on it, a batch item's (`item_index`) go into a `signoff.decision` event on it.
        Outside one (a caller without an RPC span), a `signoff.decision` span of its own,
        current for the block. When nothing exports spans, nothing is recorded at all.
        """
        current = trace.get_current_span()
        if not self.exports_spans:
            return nullcontext(DecisionSpan(current, self.shield, detailed=False))
        with self.shield("read span state"):
            if current.is_recording():
                # One span per call: each made and exported costs a traced call about as
                # much as the decision itself, so the RPC's span carries the decision.
                return nullcontext(DecisionSpan(current, self.shield, item_index=item_index))
        return _DecisionScope(self, item_index)

    def approval_event(
        self,
        approval_id: str,
        from_state: str | enum.Enum,
        to_state: str | enum.Enum,
        actor: str,
    ) -> None:
        """Note an approval's state change as an event on the current span."""
        with self.shield("add approval event"):
            span = trace.get_current_span()
            if not (self.exports_spans and span.is_recording()):
                return
            span.add_event(
                APPROVAL_EVENT,
                {
                    "signoff.approval.id": _text(approval_id),
                    "signoff.approval.from": _text(_enum_text(from_state)),
                    "signoff.approval.to": _text(_enum_text(to_state)),
                    "signoff.approval.actor": _text(actor),
                },
            )

    def trace_id_hex(self) -> str:
        """The current trace id as 32 hex digits, or "" outside a sampled trace."""
        with self.shield("read trace id"):
            return _trace_id(trace.get_current_span())
        return ""

    # Metrics

    def record_decision(self, verdict: str | enum.Enum, duration_seconds: float) -> None:
        """Count one decision by verdict and record how long it took."""
        if not self.exports_metrics:
            return
        with self.shield("record decision"):
            attributes = self._verdict_labels.get(verdict)
            if attributes is None:  # a bounded set: the verdicts and "other"
                attributes = {"verdict": _label(verdict, VERDICTS)}
                if len(self._verdict_labels) < 64:
                    self._verdict_labels[verdict] = attributes
            self._decisions.add(1, attributes)
            # A clock step can make a duration negative; a histogram must not receive that.
            if math.isfinite(duration_seconds) and duration_seconds >= 0:
                self._duration.record(duration_seconds, attributes)

    def record_approval_outcome(self, outcome: str | enum.Enum) -> None:
        """Count an approval reaching approved, rejected, cancelled, expired or consumed."""
        with self.shield("record approval outcome"):
            self._approval_outcomes.add(1, {"outcome": _label(outcome, APPROVAL_OUTCOMES)})

    def record_policy_load(self, result: str) -> None:
        """Count a policy bundle load as ok or failed."""
        with self.shield("record policy load"):
            self._policy_loads.add(1, {"result": _label(result, POLICY_LOAD_RESULTS)})

    def record_malformed_request(self, method: str) -> None:
        """Count a request whose bytes did not parse; `method` is the RPC's full method name
        (only methods the server implements, so a bounded set)."""
        with self.shield("record malformed request"):
            self._malformed.add(1, {"rpc.method": method})

    def observe_pending(self, callback: Callable[[], int | None]) -> None:
        """Report the number of pending approvals from `callback` whenever metrics are read.

        The callback returns None when it cannot tell (e.g. the store is down): that reading is
        skipped rather than reported as zero. A later call replaces the callback.
        """
        self._pending_source = callback

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self._pending_source
        if source is None:
            return []
        with self.shield("observe pending approvals"):
            value = source()
            return [] if value is None else [Observation(int(value))]
        return []


def _trace_id(span: trace.Span) -> str:
    ctx = span.get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return ""
    return trace.format_trace_id(ctx.trace_id)


def _enum_text(value: str | enum.Enum) -> str:
    if isinstance(value, enum.Enum):
        # State.PENDING -> "pending" (its value); Verdict.ALLOW (an IntEnum) -> "allow".
        return (value.value if isinstance(value.value, str) else value.name).lower()
    return str(value).lower()


def _label(value: str | enum.Enum, allowed: frozenset[str]) -> str:
    text = _enum_text(value)
    return text if text in allowed else OTHER


def _text(value: str) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


def _texts(values: Sequence[str]) -> list[str]:
    return [_text(v) for v in list(values)[:MAX_ITEMS]]
