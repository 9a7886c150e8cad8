"""Builds tracer and meter providers from the standard OTEL_* variables."""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

from signoff.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("signoff.telemetry")

EXPORTER_NAMES = ("none", "console", "otlp")
PROTOCOLS = ("grpc", "http/protobuf")


@dataclass
class Setup:
    """What from_env built: the providers and what else must be stopped with them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    description: str
    prometheus_port: int | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    # False when spans go nowhere: their attributes need not be built.
    exports_spans: bool = True
    # False when no reader reads the metrics (nor Prometheus): nothing need be recorded.
    exports_metrics: bool = True


def from_env(env: Mapping[str, str], *, service_name: str, prometheus_address: str | None) -> Setup:
    """Providers as `env` selects them; see Telemetry.from_env for what is read where.

    Raises ConfigError for a value this service does not understand, and OSError when the
    Prometheus address cannot be bound: telemetry misconfigured must fail at startup, loudly.
    """
    traces = _exporter_names(env, "OTEL_TRACES_EXPORTER")
    metrics = _exporter_names(env, "OTEL_METRICS_EXPORTER")
    trace_protocol = _protocol(env, "TRACES")
    metric_protocol = _protocol(env, "METRICS")
    prometheus = _split_address(prometheus_address) if prometheus_address is not None else None
    resource = resource_from_env(env, service_name)

    # Telemetry.shutdown() stops these within a deadline; the SDK's own exit hooks would try
    # again, unbounded, when a collector is unreachable.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for name in traces:
        tracer_provider.add_span_processor(_span_processor(name, trace_protocol))
    readers = [_metric_reader(name, metric_protocol) for name in metrics]
    registry = None
    if prometheus is not None:
        # Imported here: prometheus_client is loaded only when Prometheus is asked for.
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        # A registry of our own, not prometheus_client's global one: two instances (tests, a
        # restart in-process) must not collide over metric names.
        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )
    setup = Setup(
        tracer_provider,
        meter_provider,
        "",
        exports_spans=bool(traces),
        exports_metrics=bool(readers),
    )
    parts = [
        f"traces: {_describe(traces, trace_protocol)}",
        f"metrics: {_describe(metrics, metric_protocol)}",
    ]
    if prometheus is not None and registry is not None:
        host, port = prometheus
        setup.prometheus_port = _serve_metrics(setup, host, port, registry, prometheus_address)
        parts.append(f"prometheus: http://{_join(host, setup.prometheus_port)}/metrics")
    setup.description = "; ".join(parts)
    return setup


def resource_from_env(env: Mapping[str, str], service_name: str) -> Resource:
    """The resource: OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME over its service.name."""
    attributes: dict[str, str] = {}
    raw = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"OTEL_RESOURCE_ATTRIBUTES: {item.strip()!r} is not key=value")
        attributes[key.strip()] = urllib.parse.unquote(value.strip())
    named = env.get("OTEL_SERVICE_NAME", "").strip()
    attributes["service.name"] = named or attributes.get("service.name") or service_name
    # create() adds the SDK's own attributes (telemetry.sdk.*); ours win over the process env's.
    return Resource.create(attributes)


def _exporter_names(env: Mapping[str, str], key: str) -> list[str]:
    raw = env.get(key, "none")
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip().lower()
        if not name or name in names:
            continue
        if name not in EXPORTER_NAMES:
            hint = " (Prometheus has an address setting of its own)" if name == "prometheus" else ""
            raise ConfigError(f"{key}={raw!r}: expected none, console or otlp{hint}")
        names.append(name)
    if "none" in names and len(names) > 1:
        raise ConfigError(f"{key}={raw!r}: none cannot be combined with an exporter")
    return [n for n in names if n != "none"]


def _protocol(env: Mapping[str, str], signal: str) -> str:
    key = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    if not env.get(key, "").strip():
        key = "OTEL_EXPORTER_OTLP_PROTOCOL"
    raw = env.get(key, "").strip()
    protocol = raw.lower() or "grpc"
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{key}={raw!r}: expected grpc or http/protobuf")
    return protocol


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"Prometheus address {address!r}: expected host:port")
    # "[::1]:9464" names an IPv6 host; ":9464" means every interface.
    return host.strip("[]") or "0.0.0.0", int(port_text)  # noqa: S104


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(names: list[str], protocol: str) -> str:
    if not names:
        return "none"
    return ", ".join(f"otlp ({protocol})" if n == "otlp" else n for n in names)


def _otlp(signal: str, protocol: str) -> typing.Any:
    """The OTLP exporter of `signal` ("trace" or "metric") over gRPC or HTTP. Imported only
    when chosen: each pulls in its transport. The exporters read endpoint, headers, timeout,
    TLS and compression from the process environment themselves; doing it again here could
    only disagree with them."""
    transport = "grpc" if protocol == "grpc" else "http"
    module = importlib.import_module(
        f"opentelemetry.exporter.otlp.proto.{transport}.{signal}_exporter"
    )
    return getattr(module, "OTLPSpanExporter" if signal == "trace" else "OTLPMetricExporter")()


def _span_processor(name: str, protocol: str) -> SpanProcessor:
    if name == "console":
        # sys.stdout as it is now, not as it was when the SDK module was imported.
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
    if protocol == "grpc":
        # The SDK's exporter with a cheaper encoder: see signoff.observability.otlp. It borrows
        # the SDK's private encoding helpers; should a release move them, spans still go out
        # through the SDK's own encoder rather than tracing failing to start.
        try:
            from signoff.observability.otlp import FastOTLPSpanExporter
        except ImportError:
            log.warning("OTLP: the fast span encoder is unavailable; using the SDK's")
        else:
            return BatchSpanProcessor(FastOTLPSpanExporter())
    return BatchSpanProcessor(_otlp("trace", protocol))


def _metric_reader(name: str, protocol: str) -> MetricReader:
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout))
    return PeriodicExportingMetricReader(_otlp("metric", protocol))


def _serve_metrics(
    setup: Setup, host: str, port: int, registry: CollectorRegistry, address: str | None
) -> int:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        setup.tracer_provider.shutdown()
        setup.meter_provider.shutdown(timeout_millis=1000)
        raise OSError(
            f"cannot serve Prometheus metrics on {address}: {exc.strerror or exc}"
        ) from None
    setup.closers.append(lambda: _stop_http(server, thread))
    return int(server.server_address[1])


def _stop_http(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=2.0)
