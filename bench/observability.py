"""Decision throughput and server CPU with tracing exported and audit on vs both off, one run.

Two `signoff serve` processes on the comparison workload, measured alternately (A B A B ...)
by the same load generator (bench/loadgen.py), medians compared. "On" exports every span over
OTLP/gRPC to a local collector (a real OTLP receiver built from opentelemetry-proto's stubs,
in its own process, counting what it receives) and writes every decision to the audit trail
in Redis; "off" does neither. Target: throughput with both on >= 0.85x of both off.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

from opentelemetry import trace

from bench import loadgen, targets, workload
from bench.signoff_server import SignoffServer, start_signoff

LIMIT = 0.85
CHECK_SPAN = workload.SIGNOFF_CHECK.lstrip("/")
RPC_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": "signoff.v1.DecisionService",
    "rpc.method": "Check",
}


def collector(port_queue: Any, spans: Any, stop: Any) -> None:
    """An OTLP trace receiver that accepts every export, counts its spans and drops them."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with spans.get_lock():
                spans.value += count
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_queue.put(port)
    stop.wait()
    server.stop(1).wait()


def configs(
    collector_port: int, extra: dict[str, str] | None = None
) -> dict[str, tuple[bool, dict[str, str]]]:
    """Each configuration: audit on or off, and its telemetry environment. "on" and "off" are
    the target's; "traces" (tracing alone) and "audit" (audit alone) split the difference.
    `extra` is added to the traced ones' environment (e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE)."""
    traced = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        **(extra or {}),
    }
    untraced = {"OTEL_TRACES_EXPORTER": "none"}
    return {
        "on": (True, traced),
        "off": (False, untraced),
        "traces": (False, traced),
        "audit": (True, untraced),
    }


def _answers_ok(server: SignoffServer) -> bool:
    """The measured request gets the expected verdict (a wrong answer is no failed call)."""
    import grpc

    from signoff.v1 import signoff_pb2 as pb

    case = workload.hot_case()
    want = workload.decide(case.principal, case.resource, "export")
    with grpc.insecure_channel(server.target) as channel:
        check = channel.unary_unary(workload.SIGNOFF_CHECK, None, None)
        raw = check(workload.payloads().signoff_check, timeout=10)
    got = pb.Verdict.Name(pb.CheckResponse.FromString(raw).verdict).removeprefix("VERDICT_")
    return bool(got == want)


def measure(
    rounds: int = 3,
    seconds: float = 4.0,
    warmup: float = 1.0,
    concurrency: int = 16,
    names: tuple[str, ...] = ("on", "off"),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Medians per configuration, their ratios, and the spans the collector received."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC state
    ports, spans, stop = ctx.Queue(), ctx.Value("q", 0), ctx.Event()
    sink = ctx.Process(target=collector, args=(ports, spans, stop), daemon=True)
    sink.start()
    rules = Path(tempfile.mkdtemp(prefix="signoff-observability-"))
    workload.write_signoff_rules(rules)
    servers: dict[str, SignoffServer] = {}
    runs: dict[str, list[loadgen.Result]] = {}
    try:
        port = ports.get(timeout=60)
        for name, (audit, env) in configs(port, extra).items():
            if name not in names:
                continue
            servers[name] = start_signoff(rules, audit, env=env)
            if not _answers_ok(servers[name]):
                raise AssertionError(f"signoff ({name}) answered the measured request wrongly")
        runs = {name: [] for name in servers}
        payload = workload.payloads().signoff_check
        for _ in range(rounds):
            for name, server in servers.items():
                res = loadgen.run(
                    server.target,
                    workload.SIGNOFF_CHECK,
                    payload,
                    concurrency,
                    seconds,
                    functools.partial(loadgen.process_tree, server.pid),
                    warmup,
                )
                if not res.ok:
                    raise AssertionError(f"signoff ({name}) failed calls: {res.error_codes}")
                runs[name].append(res)
        servers["on"].stop()  # flushes its spans to the collector before they are counted
    finally:
        for server in servers.values():
            server.stop()
        stop.set()
        sink.join(10)
        if sink.is_alive():
            sink.kill()
    med = {
        name: {
            "checks_per_s": statistics.median(r.rps for r in results),
            "cpu_us_per_check": statistics.median(r.cpu_us_per_call() for r in results),
            "p99_ms": statistics.median(r.p99_ms for r in results),
        }
        for name, results in runs.items()
    }
    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "seconds": seconds,
        "medians": med,
        "throughput_ratio": med["on"]["checks_per_s"] / med["off"]["checks_per_s"],
        "cpu_ratio": med["on"]["cpu_us_per_check"] / med["off"]["cpu_us_per_check"],
        "spans_received": spans.value,
    }


def encoding_costs(spans: int = 2048, rounds: int = 5) -> dict[str, float]:
    """CPU µs per span to encode a batch of traced Checks' spans for OTLP: the SDK's encoder
    and signoff's (same message), alternating, medians; and to make each span (start, the
    decision's attributes, end) through the SDK."""
    import time

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult as Result

    from signoff.observability import Telemetry
    from signoff.observability.otlp import encode_request

    finished: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, batch: Any) -> Result:
            finished.extend(batch)
            return Result.SUCCESS

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    telemetry = Telemetry(provider, Telemetry.disabled().meter_provider, exports_metrics=False)
    tracer = telemetry.tracer

    def make() -> float:
        finished.clear()
        started = time.process_time()
        for i in range(spans):
            span = tracer.start_span(CHECK_SPAN, attributes=dict(RPC_ATTRIBUTES))
            with trace.use_span(span, end_on_exit=True):
                with telemetry.decision_span() as decision:
                    decision.set_decision(
                        f"e1be6283-5b90-42e8-8a3a-{i:012d}",
                        "ALLOW",
                        "ab" * 32,
                        ["ledger/allow-staff"],
                        "ledger",
                        "export",
                        "bob@acme.io",
                        "human",
                    )
                span.set_attribute("rpc.grpc.status_code", 0)
        return (time.process_time() - started) / spans * 1e6

    def timed(encode: Any) -> float:
        started = time.process_time()
        encode(finished)
        return (time.process_time() - started) / len(finished) * 1e6

    made, sdk, ours = [], [], []
    for _ in range(rounds):
        made.append(make())
        sdk.append(timed(lambda b: encode_spans(b).SerializeToString()))
        ours.append(timed(encode_request))
    provider.shutdown()
    return {
        "make_us": statistics.median(made),
        "sdk_encode_us": statistics.median(sdk),
        "encode_us": statistics.median(ours),
    }


def section(quick: bool = False) -> targets.Section:
    """The tracing + audit overhead target for `make bench`; quick: tiny runs, still checked."""
    if quick:
        data = measure(rounds=1, seconds=0.3, warmup=0.1, concurrency=2)
        data["encoding"] = encoding_costs(spans=64, rounds=1)
        return section_of(data)
    data = measure()
    data["encoding"] = encoding_costs()
    return section_of(data)


def section_of(data: dict[str, Any]) -> targets.Section:
    """The target and table of one measurement."""
    if data["spans_received"] == 0:
        raise AssertionError("tracing was on but the collector received no span")
    on, off = data["medians"]["on"], data["medians"]["off"]
    target = targets.ratio_target(
        f"unary Check throughput, tracing exported (OTLP) + audit on vs both off, "
        f"concurrency {data['concurrency']}",
        on["checks_per_s"],
        off["checks_per_s"],
        "checks/s",
        LIMIT,
        at_most=False,
    )
    markdown = "\n".join(
        [
            f"Unary Check at concurrency {data['concurrency']}, medians of {data['rounds']} "
            f"alternating rounds of {data['seconds']} s; {data['spans_received']} spans "
            "received by the local OTLP collector. Command: `python -m bench.observability`.",
            "",
            "| tracing + audit | checks/s | server CPU µs/check | p99 ms |",
            "| --- | --- | --- | --- |",
            *(
                f"| {name} | {m['checks_per_s']:.0f} | {m['cpu_us_per_check']:.0f} "
                f"| {m['p99_ms']:.2f} |"
                for name, m in data["medians"].items()
            ),
            f"| ratio on/off | {data['throughput_ratio']:.2f}x | {data['cpu_ratio']:.2f}x | |",
        ]
    )
    encoding = data.get("encoding")
    if encoding is not None:
        markdown += "\n".join(
            [
                "",
                "",
                "A traced Check's span (13 attributes), CPU µs per span in-process, medians: "
                f"making it through the SDK {encoding['make_us']:.1f}; encoding it for OTLP "
                f"with the SDK's encoder {encoding['sdk_encode_us']:.1f}, with signoff's "
                f"{encoding['encode_us']:.1f} "
                f"({encoding['sdk_encode_us'] / encoding['encode_us']:.1f}x less).",
            ]
        )
    return targets.Section(
        "Tracing and audit overhead", [target], markdown, {"observability": data}
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny runs, answers still checked")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--split",
        action="store_true",
        help="also tracing alone and audit alone, to see which costs what",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="added to the traced servers' environment, e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    names = ("on", "off", "traces", "audit") if args.split else ("on", "off")
    if args.quick:
        result = section(quick=True)
    else:
        data = measure(
            args.rounds, args.seconds, concurrency=args.concurrency, names=names, extra=extra
        )
        data["encoding"] = encoding_costs()
        result = section_of(data)
    print(result.markdown)
    for t in result.targets:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured} (limit {t.limit})")
    print(f"{os.cpu_count()} cores shared by the servers, the collector and the load")


if __name__ == "__main__":
    main()
