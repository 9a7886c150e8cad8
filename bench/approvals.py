"""Latency of Check→pending and of Approve at 16 concurrent callers, against `signoff serve`."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from signoff.devtokens import create_dev_keys, mint
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parent.parent


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def grant_request(n: int) -> pb.CheckRequest:
    """A prod role grant by a human IAM admin: the bundled rules want 2 security approvers.
    Each request has its own admin: one principal may only have a few approvals waiting at
    once (--max-pending-approvals), and this measures approvals, not that limit."""
    return pb.CheckRequest(
        principal=pb.Principal(
            id=f"iam-admin-{n}@acme.io",
            kind=pb.PRINCIPAL_KIND_HUMAN,
            roles=["iam_admin"],
            attributes=struct({"tenant": "acme"}),
        ),
        action="grant_role",
        resource=pb.Resource(
            kind="iam_role", id="prod-db-admin", attributes=struct({"tenant": "acme"})
        ),
        context=pb.Context(environment="prod"),
        payload=struct({"grantee": f"user{n}@acme.io", "role": "prod-db-admin"}),
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_concurrently(callers: int, per_caller: int, call: Callable[[int], None]) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def worker(w: int) -> None:
        mine = []
        start.wait()
        for i in range(per_caller):
            t0 = time.perf_counter()
            call(w * per_caller + i)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def measure(
    callers: int = 16, per_caller: int = 50, redis_url: str = REDIS_URL, processes: int = 1
) -> dict[str, dict[str, float]]:
    """Per phase (pending, approve): p50, p99 and max latency in ms, and calls per second."""
    keys = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    jwks = create_dev_keys(keys)
    prefix = f"signoff:bench:{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ,
        "SIGNOFF_JWKS": str(jwks),
        "SIGNOFF_JWT_ISSUER": "signoff-dev",
        "SIGNOFF_JWT_AUDIENCE": "signoff",
        "SIGNOFF_HASH_KEY": "bench-secret-bench-secret-bench-secret-0123",
        "SIGNOFF_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signoff.cli",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--rules",
            str(REPO / "rules"),
            "--redis-url",
            redis_url,
            "--redis-prefix",
            prefix,
            "--processes",
            str(processes),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(line.split()[3].rsplit(":", 1)[1])
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        decisions = pb_grpc.DecisionServiceStub(channel)
        approvals = apb_grpc.ApprovalServiceStub(channel)
        tokens = [
            mint(
                keys,
                subject=f"sec{i}@acme.io",
                roles=["security"],
                issuer="signoff-dev",
                audience="signoff",
            )
            for i in range(2)
        ]
        total = callers * per_caller
        ids: list[str] = [""] * total
        decisions.Check(grant_request(-1))  # warm up

        def create(n: int) -> None:
            resp = decisions.Check(grant_request(n), timeout=10)
            assert resp.verdict == pb.VERDICT_REQUIRE_APPROVAL
            assert resp.approval_id
            ids[n] = resp.approval_id

        def approve(n: int) -> None:
            # First vote of each approval, so every call is a full vote transition.
            meta = (("authorization", f"Bearer {tokens[0]}"),)
            approvals.Approve(
                apb.ApproveRequest(approval_id=ids[n], reason="bench"), metadata=meta, timeout=10
            )

        out: dict[str, dict[str, float]] = {}
        for name, call in (("pending", create), ("approve", approve)):
            t0 = time.perf_counter()
            samples = run_concurrently(callers, per_caller, call)
            secs = time.perf_counter() - t0
            out[name] = {
                "p50_ms": statistics.median(samples),
                "p99_ms": percentile(samples, 0.99),
                "max_ms": max(samples),
                "calls_per_s": len(samples) / secs,
            }
        channel.close()
        return out
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys_to_drop = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys_to_drop:
            client.delete(*keys_to_drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--per-caller", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1, help="signoff serve --processes")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--quick", action="store_true", help="2 callers, 3 calls each: checks it runs, not speed"
    )
    args = parser.parse_args()
    if args.quick:
        args.callers, args.per_caller = 2, 3
    result = measure(args.callers, args.per_caller, args.redis_url, args.processes)
    print(f"{args.callers} concurrent callers, {args.callers * args.per_caller} calls a phase")
    print(f"{'phase':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'calls/s':>9}")
    for name, label in (("pending", "Check->pending"), ("approve", "Approve")):
        r = result[name]
        print(
            f"{label:<18} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
            f"{r['calls_per_s']:>9.0f}"
        )


if __name__ == "__main__":
    main()
