"""AuthZEN over HTTP vs gRPC Check: throughput and server CPU per decision, in the same run.

One `signoff serve` on the bundled rules serves both faces; the same decision (alice reads 20
rows of customer data: ALLOW) is asked alternately over HTTP (POST /access/v1/evaluation, one
keep-alive connection per client thread) and over gRPC (Check, one channel per thread), A B A B,
and the medians of the rounds are compared. Server CPU is the server process's utime + stime
over each round. `--quick` runs two short rounds (for the test that keeps this script working).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.loadgen import cpu_seconds
from bench.signoff_server import start_signoff
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

AUTHZEN = {
    "subject": {
        "type": "user",
        "id": "alice@acme.io",
        "properties": {"roles": ["analyst"], "tenant": "acme"},
    },
    "action": {"name": "read", "properties": {"row_limit": 20}},
    "resource": {"type": "customer_table", "id": "crm.customers", "properties": {"tenant": "acme"}},
    "context": {"environment": "prod"},
}


def _check() -> pb.CheckRequest:
    request = pb.CheckRequest(
        principal=pb.Principal(id="alice@acme.io", kind=pb.PRINCIPAL_KIND_HUMAN, roles=["analyst"]),
        action="read",
        resource=pb.Resource(kind="customer_table", id="crm.customers"),
        context=pb.Context(environment="prod"),
    )
    request.principal.attributes.update({"tenant": "acme"})
    request.resource.attributes.update({"tenant": "acme"})
    request.payload.update({"row_limit": 20})
    return request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _round(
    pid: int, threads: int, seconds: float, make: Callable[[], Callable[[], bool]]
) -> dict[str, float]:
    """`threads` clients calling for `seconds`: decisions/s and server CPU µs per decision."""
    callers = [make() for _ in range(threads)]
    counts = [0] * threads
    wrong = [0] * threads
    stop = threading.Event()

    def work(i: int) -> None:
        call = callers[i]
        while not stop.is_set():
            if call():
                counts[i] += 1
            else:
                wrong[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    calls = sum(counts)
    if sum(wrong):
        raise RuntimeError(f"{sum(wrong)} answers were not ALLOW")
    return {"per_s": calls / elapsed, "cpu_us": cpu / calls * 1e6 if calls else float("nan")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    rounds, seconds, threads = (
        (2, 0.5, 2) if args.quick else (args.rounds, args.seconds, args.threads)
    )
    http_port = _free_port()
    server = start_signoff(
        REPO / "rules",
        True,
        "--http-address",
        f"127.0.0.1:{http_port}",
        "--workers",
        str(max(8, threads)),
        # Both faces of one process: its CPU is what is compared, so no serving children.
        "--processes",
        "1",
    )
    clients: list[Any] = []
    try:

        def http_caller() -> Callable[[], bool]:
            client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10.0)
            clients.append(client)
            return lambda: (
                client.post("/access/v1/evaluation", json=AUTHZEN).json()["decision"] is True
            )

        def grpc_caller() -> Callable[[], bool]:
            channel = grpc.insecure_channel(server.target)
            clients.append(channel)
            stub, request = pb_grpc.DecisionServiceStub(channel), _check()
            return lambda: stub.Check(request, timeout=10.0).verdict == pb.VERDICT_ALLOW

        _round(server.pid, 1, 0.3, http_caller)  # warm both paths before measuring
        _round(server.pid, 1, 0.3, grpc_caller)
        samples: dict[str, list[dict[str, float]]] = {"http": [], "grpc": []}
        for _ in range(rounds):
            samples["http"].append(_round(server.pid, threads, seconds, http_caller))
            samples["grpc"].append(_round(server.pid, threads, seconds, grpc_caller))
    finally:
        for c in clients:
            c.close()
        server.stop()
    result: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "threads": threads}
    for face, rows in samples.items():
        result[face] = {
            "decisions_per_s": statistics.median(r["per_s"] for r in rows),
            "server_cpu_us_per_decision": statistics.median(r["cpu_us"] for r in rows),
        }
    result["http_over_grpc_cpu"] = (
        result["http"]["server_cpu_us_per_decision"] / result["grpc"]["server_cpu_us_per_decision"]
    )
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "http_vs_grpc.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
