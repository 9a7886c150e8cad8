"""Decision throughput and server CPU per check with tracing + audit on vs off, one run.

Each configuration is a `signoff serve` process; they are measured alternately (A B A B ...)
with the same load generator, and the medians and their ratio are printed. "On" exports
every span over OTLP/gRPC to a local collector process that accepts and discards them, and
writes every decision to the audit trail in Redis; "off" does neither.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def collector(port_queue: Any) -> None:
    """A minimal OTLP trace receiver: accepts every export and drops it."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_queue.put(port)
    server.wait_for_termination()


def load(port: int, threads: int, seconds: float, out: Any) -> None:
    """Unary Checks from `threads` threads for `seconds`; puts the number completed."""
    import threading

    import grpc
    from google.protobuf import struct_pb2

    from signoff.v1 import signoff_pb2 as pb
    from signoff.v1 import signoff_pb2_grpc as pb_grpc

    attrs = struct_pb2.Struct()
    attrs.update({"tenant": "acme"})
    request = pb.CheckRequest(
        principal=pb.Principal(
            id="alice@acme.io", kind=pb.PRINCIPAL_KIND_HUMAN, roles=["analyst"], attributes=attrs
        ),
        action="export",
        resource=pb.Resource(
            kind="customer_table",
            id="crm.customers",
            attributes=attrs,
            fields=[pb.Field(path="customers.*.email", tags=["pii.email"])],
        ),
        context=pb.Context(environment="prod"),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.DecisionServiceStub(channel)
    stub.Check(request, timeout=10)
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < deadline:
            stub.Check(request, timeout=10)
            done[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    channel.close()
    out.put(sum(done))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signoff.cli",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--rules",
            str(REPO / "rules"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(line.split()[3].rsplit(":", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=2, help="load processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per load process")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC state
    ports = ctx.Queue()
    sink = ctx.Process(target=collector, args=(ports,), daemon=True)
    sink.start()
    collector_port = ports.get(timeout=30)
    prefix = f"signoff:bench:{uuid.uuid4().hex[:8]}:"
    base = {
        **os.environ,
        "SIGNOFF_HASH_KEY": "bench-secret-bench-secret-bench-secret-0123",
        "SIGNOFF_LOG_LEVEL": "WARNING",
        "SIGNOFF_REDIS_PREFIX": prefix,
        "SIGNOFF_JWKS": "",
    }
    configs = {
        "on": {
            **base,
            "SIGNOFF_AUDIT": "on",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        },
        "off": {**base, "SIGNOFF_AUDIT": "off", "OTEL_TRACES_EXPORTER": "none"},
    }
    servers = {name: serve(env) for name, env in configs.items()}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    try:
        for _ in range(args.rounds):
            for name, (proc, port) in servers.items():
                outq = ctx.Queue()
                loaders = [
                    ctx.Process(target=load, args=(port, args.threads, args.seconds, outq))
                    for _ in range(args.clients)
                ]
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.monotonic()
                for p in loaders:
                    p.start()
                total = sum(outq.get(timeout=args.seconds + 60) for _ in loaders)
                for p in loaders:
                    p.join()
                wall = time.monotonic() - t0
                cpu = cpu_seconds(proc.pid) - cpu0
                results[name].append((total / wall, cpu / total * 1e6))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
        sink.terminate()
        import redis

        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    conc = args.clients * args.threads
    print(f"unary Check (MASK), concurrency {conc}, {args.rounds} rounds A B of {args.seconds} s")
    print(f"{'tracing+audit':<14} {'checks/s (median)':>18} {'server CPU µs/check (median)':>30}")
    med = {}
    for name, rows in results.items():
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        med[name] = (rps, cpu)
        print(f"{name:<14} {rps:>18.0f} {cpu:>30.0f}")
    print(
        f"ratio on/off: throughput {med['on'][0] / med['off'][0]:.2f}x, "
        f"server CPU per check {med['on'][1] / med['off'][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
