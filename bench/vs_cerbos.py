"""signoff vs Cerbos over gRPC on the same workload, machine, run and load generator.

Both servers run side by side; every case is verified on both (and on Cedar) before any timing.
Then, per concurrency level and per request shape, signoff and Cerbos are measured alternately
(A B A B ...) and the medians compared:

- "1x3": signoff CheckBatch with 3 items (one principal, one resource, three actions) vs
  Cerbos CheckResources with one resource and three actions;
- "20x3": signoff CheckBatch with 60 items vs Cerbos CheckResources, 20 resources x 3 actions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cerbos, loadgen, workload
from bench.signoff_server import SignoffServer, start_signoff

# (shape, checks per request, signoff method and payload name, Cerbos payload name)
SHAPES = (
    ("1x3", 3, "signoff_batch3", "cerbos_1x3"),
    ("20x3", 60, "signoff_batch60", "cerbos_20x3"),
)


def compare(
    signoffs: dict[str, SignoffServer],
    cerbos_server: cerbos.Server,
    concurrency: list[int],
    rounds: int = 3,
    seconds: float = 5.0,
    warmup: float = 1.0,
) -> list[dict[str, Any]]:
    """Alternating A B runs per concurrency and shape; one row per system and setting."""
    pl = workload.payloads()
    systems: dict[str, tuple[str, str, Callable[[], list[int]]]] = {
        name: (server.target, workload.SIGNOFF_BATCH, _tree(server.pid))
        for name, server in signoffs.items()
    }
    systems |= {
        "cerbos": (
            cerbos_server.target,
            workload.CERBOS_CHECK,
            lambda: loadgen.process_tree(cerbos_server.pid),
        ),
    }
    rows: list[dict[str, Any]] = []
    for conc in concurrency:
        for shape, checks, signoff_payload, cerbos_payload in SHAPES:
            payload = {
                "signoff": getattr(pl, signoff_payload),
                "cerbos": getattr(pl, cerbos_payload),
            }
            runs: dict[str, list[loadgen.Result]] = {name: [] for name in systems}
            for _ in range(rounds):
                for name, (target, method, pids) in systems.items():
                    body = payload["cerbos" if name == "cerbos" else "signoff"]
                    res = loadgen.run(target, method, body, conc, seconds, pids, warmup)
                    runs[name].append(res)
                    flag = "" if res.ok else f"  ERRORS {res.error_codes}"
                    print(
                        f"  c={conc:<3} {shape:<5} {name:<16} {res.rps:8.0f} req/s  "
                        f"p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  "
                        f"cpu {res.cpu_us_per_call() / checks:7.1f} µs/check{flag}",
                        flush=True,
                    )
            for name, results in runs.items():
                rows.append(_row(name, shape, checks, conc, results))
    return rows


def _tree(pid: int) -> Callable[[], list[int]]:
    return lambda: loadgen.process_tree(pid)


def _row(
    system: str, shape: str, checks: int, conc: int, results: list[loadgen.Result]
) -> dict[str, Any]:
    rps = statistics.median(r.rps for r in results)
    return {
        "system": system,
        "shape": shape,
        "checks_per_request": checks,
        "concurrency": conc,
        "rounds": len(results),
        "requests_per_s": rps,
        "checks_per_s": rps * checks,
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "server_cpu_us_per_check": statistics.median(r.cpu_us_per_call() / checks for r in results),
        "server_cores_busy": statistics.median(r.server_cpu_s / r.seconds for r in results),
        "load_cores_busy": statistics.median(r.client_cpu_s / r.seconds for r in results),
        "machine_cores_busy": statistics.median(r.machine_cpu_s / r.seconds for r in results),
        "client_cpu_us_per_request": statistics.median(
            r.client_cpu_s / r.calls * 1e6 for r in results
        ),
        "errors": sum(r.errors for r in results),
        "ok": all(r.ok for r in results),
        "per_round_requests_per_s": [r.rps for r in results],
    }


def report(rows: list[dict[str, Any]]) -> str:
    """The table of medians, and each signoff configuration's ratios to Cerbos per setting."""
    head = (
        f"{'conc':>4} {'shape':<5} {'system':<16} {'req/s':>9} {'checks/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'CPU µs/check':>13} {'cores: server':>13} {'load':>5} "
        f"{'all':>5}  ok"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>4} {r['shape']:<5} {r['system']:<16} "
            f"{r['requests_per_s']:>9.0f} "
            f"{r['checks_per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['server_cpu_us_per_check']:>13.1f} {r['server_cores_busy']:>13.2f} "
            f"{r['load_cores_busy']:>5.2f} {r['machine_cores_busy']:>5.2f}  "
            f"{'yes' if r['ok'] else 'ERRORS'}"
        )
        if r["system"] != "cerbos":
            continue
        for s in rows:
            if (s["concurrency"], s["shape"]) != (r["concurrency"], r["shape"]):
                continue
            if s["system"] == "cerbos":
                continue
            lines.append(
                f"{'':>4} {'':<5} {'ratio':<16} {s['system']}/Cerbos: throughput "
                f"{s['requests_per_s'] / r['requests_per_s']:.2f}x, p50 "
                f"{s['p50_ms'] / r['p50_ms']:.1f}x, p99 {s['p99_ms'] / r['p99_ms']:.1f}x, "
                f"CPU/check {s['server_cpu_us_per_check'] / r['server_cpu_us_per_check']:.2f}x"
            )
    return "\n".join(lines)


# The signoff configurations measured: as shipped, one process per core, and as shipped with
# the decision cache off (the load repeats one request, which is the cache's best case).
SIGNOFF_CONFIGS: dict[str, tuple[str, ...]] = {
    "signoff": (),
    "signoff-2proc": ("--processes", "2", "--workers", "4"),
    "signoff-nocache": ("--decision-cache", "0"),
}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rules", type=int, default=30, help="rules in the workload")
    parser.add_argument("--audit", choices=["on", "off"], default="on", help="signoff audit trail")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(SIGNOFF_CONFIGS),
        default=list(SIGNOFF_CONFIGS),
        help="signoff configurations to measure against Cerbos",
    )
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    began = time.monotonic()
    binary = cerbos.install()
    tmp = Path(tempfile.mkdtemp(prefix="signoff-vs-cerbos-"))
    signoff_dir, cerbos_dir = tmp / "signoff", tmp / "cerbos"
    workload.write_signoff_rules(signoff_dir, args.rules)
    workload.write_cerbos_policies(cerbos_dir, args.rules)
    rows: list[dict[str, Any]] = []
    signoffs: dict[str, SignoffServer] = {}
    try:
        for name in args.systems:
            signoffs[name] = start_signoff(signoff_dir, args.audit == "on", *SIGNOFF_CONFIGS[name])
        with cerbos.start(cerbos_dir, binary) as cerbos_server:
            for name, server in signoffs.items():
                print(f"{name} pid {server.pid} on {server.target} (audit {args.audit})")
                print(workload.verify(server.target, cerbos_server.target, args.rules), flush=True)
            print(f"cerbos {cerbos.VERSION} pid {cerbos_server.pid} on {cerbos_server.target}")
            if not args.verify_only:
                rows = compare(
                    signoffs,
                    cerbos_server,
                    args.concurrency,
                    args.rounds,
                    args.seconds,
                    args.warmup,
                )
                for row in rows:
                    row.update(
                        rules=args.rules, signoff_audit=args.audit, cerbos_version=cerbos.VERSION
                    )
                print()
                print(
                    f"medians of {args.rounds} alternating rounds of {args.seconds} s; "
                    f"{args.rules} rules; {os.cpu_count()} cores shared by servers and load"
                )
                print(report(rows))
                if args.json is not None:
                    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        for server in signoffs.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total time {time.monotonic() - began:.0f} s", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
