"""Telemetry.from_env: exporters chosen by the OTEL_* variables, delivered to real local receivers."""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

from signoff.errors import ConfigError
from signoff.observability import Telemetry
from signoff.observability.exporters import resource_from_env
from tests.observability.harness import CHECK, SECRET, serving

REPO = Path(__file__).resolve().parents[2]


class GrpcCollector:
    """An OTLP/gRPC receiver on a loopback port that keeps every request body it gets."""

    def __init__(self) -> None:
        self.traces: list[bytes] = []
        self.metrics: list[bytes] = []
        self._pool = futures.ThreadPoolExecutor(max_workers=2)
        self._server = grpc.server(self._pool, options=[("grpc.so_reuseport", 0)])
        for service, store, reply in (
            (
                "opentelemetry.proto.collector.trace.v1.TraceService",
                self.traces,
                tpb.ExportTraceServiceResponse(),
            ),
            (
                "opentelemetry.proto.collector.metrics.v1.MetricsService",
                self.metrics,
                mpb.ExportMetricsServiceResponse(),
            ),
        ):
            handler = grpc.unary_unary_rpc_method_handler(
                self._receiver(store, reply.SerializeToString())
            )
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {"Export": handler}),)
            )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @staticmethod
    def _receiver(store: list[bytes], reply: bytes) -> Any:
        def receive(body: bytes, context: grpc.ServicerContext) -> bytes:
            store.append(body)
            return reply

        return receive

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        self._pool.shutdown(wait=True)


class HttpCollector:
    """An OTLP/HTTP (protobuf) receiver on a loopback port, keeping bodies by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP exporters read the process environment: start each test from none of it."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")


@pytest.fixture(autouse=True)
def no_exporter_outlives_its_test() -> Iterator[None]:
    """An exporter abandoned at a shutdown deadline goes on retrying in its own thread, drawing
    its backoff jitter from the global `random`; left running, it trips Hypothesis's check on
    the global random state in whatever test comes next. Each test waits for its own."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10.0
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith(("Otel", "telemetry-")):
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still running 10 s after its test"


@pytest.fixture
def grpc_collector() -> Iterator[GrpcCollector]:
    collector = GrpcCollector()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def http_collector() -> Iterator[HttpCollector]:
    collector = HttpCollector()
    try:
        yield collector
    finally:
        collector.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def span_names(bodies: list[bytes]) -> set[str]:
    return {
        span.name
        for body in bodies
        for rs in tpb.ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


def metric_names(bodies: list[bytes]) -> set[str]:
    return {
        m.name
        for body in bodies
        for rm in mpb.ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def resource_of(body: bytes) -> dict[str, str]:
    (rs, *_) = tpb.ExportTraceServiceRequest.FromString(body).resource_spans
    return {a.key: a.value.string_value for a in rs.resource.attributes}


def serve_one_check(telemetry: Telemetry) -> None:
    with serving(telemetry) as served:
        served.check()
    telemetry.record_approval_outcome("approved")
    telemetry.shutdown()


def test_otlp_over_grpc_delivers_spans_and_metrics_without_caller_data(
    grpc_collector: GrpcCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{grpc_collector.port}")
    telemetry = Telemetry.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "signoff-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=ignored",
        }
    )
    assert telemetry.description == "traces: otlp (grpc); metrics: otlp (grpc)"
    serve_one_check(telemetry)

    assert span_names(grpc_collector.traces) == {CHECK}
    resource = resource_of(grpc_collector.traces[0])
    assert resource["service.name"] == "signoff-eu"
    assert resource["deployment.environment"] == "prod"
    assert {"signoff.decisions", "signoff.decision.duration", "signoff.approvals.outcomes"} <= (
        metric_names(grpc_collector.metrics)
    )
    sent = b"".join(grpc_collector.traces + grpc_collector.metrics)
    assert SECRET.encode() not in sent


def test_otlp_over_http_delivers_spans_and_metrics_without_caller_data(
    http_collector: HttpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{http_collector.port}")
    telemetry = Telemetry.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    assert telemetry.description == "traces: otlp (http/protobuf); metrics: otlp (http/protobuf)"
    serve_one_check(telemetry)

    traces, metrics = http_collector.bodies["/v1/traces"], http_collector.bodies["/v1/metrics"]
    assert span_names(traces) == {CHECK}
    assert resource_of(traces[0])["service.name"] == "signoff"
    assert "signoff.decisions" in metric_names(metrics)
    assert SECRET.encode() not in b"".join(traces + metrics)


def test_each_signal_can_pick_its_own_protocol(
    grpc_collector: GrpcCollector, http_collector: HttpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{http_collector.port}/v1/traces"
    )
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{grpc_collector.port}"
    )
    telemetry = Telemetry.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    )
    serve_one_check(telemetry)

    assert span_names(http_collector.bodies["/v1/traces"]) == {CHECK}
    assert grpc_collector.traces == []
    assert "signoff.decisions" in metric_names(grpc_collector.metrics)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_builds_and_shuts_down_promptly_with_no_receiver(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: construction must not connect, and with nothing recorded there is
    # nothing to send at shutdown.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    telemetry = Telemetry.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    )
    telemetry.shutdown(timeout=2.0)
    assert time.monotonic() - started < 2.0


def test_shutdown_gives_up_on_an_unreachable_receiver_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    # The exporter would retry for 2 s, well past the 0.5 s the shutdown allows.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    telemetry = Telemetry.from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    with telemetry.decision_span():
        pass
    started = time.monotonic()
    telemetry.shutdown(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 2.0


def test_none_is_the_default_for_both_signals() -> None:
    telemetry = Telemetry.from_env({})
    with (
        telemetry.tracer.start_as_current_span("rpc") as rpc,
        telemetry.decision_span() as span,
    ):
        # Not exported anywhere, but still traced: the RPC's trace id reaches the audit log.
        assert span.trace_id_hex() == format(rpc.get_span_context().trace_id, "032x")
    telemetry.record_decision("allow", 0.001)
    telemetry.shutdown()

    assert telemetry.description == "traces: none; metrics: none"
    assert telemetry.prometheus_port is None


def test_console_prints_spans_and_metrics_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = Telemetry.from_env(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    )
    with telemetry.decision_span(item_index=2):
        pass
    telemetry.record_policy_load("ok")
    telemetry.shutdown()

    out = capsys.readouterr().out
    assert telemetry.description == "traces: console; metrics: console"
    assert '"name": "signoff.decision"' in out
    assert '"signoff.batch.item": 2' in out
    assert "signoff.policy.loads" in out


def test_from_env_leaves_the_global_providers_alone() -> None:
    before = trace.get_tracer_provider()
    telemetry = Telemetry.from_env({"OTEL_TRACES_EXPORTER": "console"})
    telemetry.shutdown()

    assert trace.get_tracer_provider() is before
    assert trace.get_tracer_provider() is not telemetry.tracer_provider


def test_install_global_makes_the_instance_the_process_wide_one() -> None:
    # In a child process: the global providers can be set only once per process.
    code = (
        "from opentelemetry import metrics, trace\n"
        "from signoff.observability import Telemetry\n"
        "t = Telemetry.from_env({})\n"
        "t.install_global()\n"
        "assert trace.get_tracer_provider() is t.tracer_provider\n"
        "assert metrics.get_meter_provider() is t.meter_provider\n"
        "t.shutdown()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "service"), str(REPO / "clients/python")]),
    }
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER='jaeger': expected none"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "Prometheus has an address setting"),
        ({"OTEL_TRACES_EXPORTER": "none,otlp"}, "none cannot be combined"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "expected grpc or http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team"}, "'team' is not key=value"),
    ],
)
def test_a_value_it_does_not_understand_is_a_config_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Telemetry.from_env(env)


def test_exporter_lists_are_case_and_space_tolerant() -> None:
    telemetry = Telemetry.from_env(
        {"OTEL_TRACES_EXPORTER": " Console , console ", "OTEL_METRICS_EXPORTER": ""}
    )
    telemetry.shutdown()

    assert telemetry.description == "traces: console; metrics: none"


def test_the_service_name_comes_from_otel_service_name_then_attributes_then_default() -> None:
    def name(env: dict[str, str]) -> object:
        return resource_from_env(env, "signoff").attributes["service.name"]

    assert name({}) == "signoff"
    assert name({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"}) == "from-attrs"
    assert name({"OTEL_RESOURCE_ATTRIBUTES": "service.name=a", "OTEL_SERVICE_NAME": "b"}) == "b"
    resource = resource_from_env({"OTEL_RESOURCE_ATTRIBUTES": "team=risk%20ops, k8s.ns = x"}, "s")
    assert resource.attributes["team"] == "risk ops"
    assert resource.attributes["k8s.ns"] == "x"
    assert resource.attributes["telemetry.sdk.name"] == "opentelemetry"
