"""signoff vs Cerbos, and vs a bare gRPC echo server, on the same workload, machine, run and load.

The servers run side by side; every case is verified on signoff and Cerbos (and on Cedar) before
any timing. Then, per concurrency level and per request shape, the systems are measured
alternately (A B A B ...) and the medians compared:

- "check": one unary Check per request, signoff against the bare echo server (bench/echo.py:
  grpcio with the same options and workers, fixed response bytes): what signoff adds to what
  any Python gRPC server costs;
- "1x3": signoff CheckBatch with 3 items (one principal, one resource, three actions) vs
  Cerbos CheckResources with one resource and three actions;
- "20x3": signoff CheckBatch with 60 items vs Cerbos CheckResources, 20 resources x 3 actions,
  the same request each time (signoff's decision cache answers every repeat);
- "20x3-distinct": as 20x3, but no request repeats (the resources get new ids each time, which
  decide nothing), so no cache can help.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cerbos, loadgen, targets, workload
from bench.echo import EchoServer, start_echo
from bench.signoff_server import SignoffServer, start_signoff

Body = bytes | Sequence[bytes]


@dataclass(frozen=True)
class Shape:
    """One request shape: what signoff, Cerbos and the echo server are sent."""

    name: str
    checks: int  # per request
    signoff_method: str
    signoff: Body
    cerbos: Body | None  # None: Cerbos has no such request
    echo: bool  # the echo server is measured too


def shapes(distinct: int = 400) -> list[Shape]:
    """Every shape, `distinct` different requests for 20x3-distinct."""
    pl = workload.payloads()
    many = workload.distinct_batches(distinct)
    return [
        Shape("check", 1, workload.SIGNOFF_CHECK, pl.signoff_check, None, True),
        Shape("1x3", 3, workload.SIGNOFF_BATCH, pl.signoff_batch3, pl.cerbos_1x3, False),
        Shape("20x3", 60, workload.SIGNOFF_BATCH, pl.signoff_batch60, pl.cerbos_20x3, False),
        Shape(
            "20x3-distinct",
            60,
            workload.SIGNOFF_BATCH,
            [s for s, _ in many],
            [c for _, c in many],
            False,
        ),
    ]


def compare(
    signoffs: dict[str, SignoffServer],
    cerbos_server: cerbos.Server | None,
    echo: EchoServer | None,
    concurrency: list[int],
    rounds: int = 3,
    seconds: float = 5.0,
    warmup: float = 1.0,
    only: Sequence[str] = (),
    distinct: int = 400,
) -> list[dict[str, Any]]:
    """Alternating A B runs per concurrency and shape; one row per system and setting."""
    rows: list[dict[str, Any]] = []
    for conc in concurrency:
        for shape in shapes(distinct):
            if only and shape.name not in only:
                continue
            systems: dict[str, tuple[str, str, Body, Callable[[], list[int]]]] = {
                name: (server.target, shape.signoff_method, shape.signoff, _tree(server.pid))
                for name, server in signoffs.items()
            }
            if shape.echo and echo is not None:
                systems["echo"] = (
                    echo.target,
                    shape.signoff_method,
                    shape.signoff,
                    _tree(echo.pid),
                )
            if shape.cerbos is not None and cerbos_server is not None:
                systems["cerbos"] = (
                    cerbos_server.target,
                    workload.CERBOS_CHECK,
                    shape.cerbos,
                    _tree(cerbos_server.pid),
                )
            runs: dict[str, list[loadgen.Result]] = {name: [] for name in systems}
            for _ in range(rounds):
                for name, (target, method, body, pids) in systems.items():
                    res = loadgen.run(target, method, body, conc, seconds, pids, warmup)
                    runs[name].append(res)
                    flag = "" if res.ok else f"  ERRORS {res.error_codes}"
                    print(
                        f"  c={conc:<3} {shape.name:<13} {name:<16} {res.rps:8.0f} req/s  "
                        f"p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  "
                        f"cpu {res.cpu_us_per_call() / shape.checks:7.1f} µs/check{flag}",
                        flush=True,
                    )
            for name, results in runs.items():
                rows.append(_row(name, shape.name, shape.checks, conc, results))
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


BASELINES = ("cerbos", "echo")


def report(rows: list[dict[str, Any]]) -> str:
    """The table of medians, and each signoff configuration's ratios to Cerbos (or to the echo
    server) per setting."""
    head = (
        f"{'conc':>4} {'shape':<13} {'system':<16} {'req/s':>9} {'checks/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'CPU µs/check':>13} {'cores: server':>13} {'load':>5} "
        f"{'all':>5}  ok"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>4} {r['shape']:<13} {r['system']:<16} "
            f"{r['requests_per_s']:>9.0f} "
            f"{r['checks_per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['server_cpu_us_per_check']:>13.1f} {r['server_cores_busy']:>13.2f} "
            f"{r['load_cores_busy']:>5.2f} {r['machine_cores_busy']:>5.2f}  "
            f"{'yes' if r['ok'] else 'ERRORS'}"
        )
        if r["system"] not in BASELINES:
            continue
        for s in rows:
            if (s["concurrency"], s["shape"]) != (r["concurrency"], r["shape"]):
                continue
            if s["system"] in BASELINES:
                continue
            lines.append(
                f"{'':>4} {'':<13} {'ratio':<16} {s['system']}/{r['system']}: throughput "
                f"{s['requests_per_s'] / r['requests_per_s']:.2f}x, p50 "
                f"{s['p50_ms'] / r['p50_ms']:.1f}x, p99 {s['p99_ms'] / r['p99_ms']:.1f}x, "
                f"CPU/check {s['server_cpu_us_per_check'] / r['server_cpu_us_per_check']:.2f}x"
            )
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    out = [
        "| concurrency | shape | system | requests/s | checks/s | p50 ms | p99 ms "
        "| server CPU µs/check | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r['concurrency']} | {r['shape']} | {r['system']} | {r['requests_per_s']:.0f} "
            f"| {r['checks_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['server_cpu_us_per_check']:.1f} | {r['errors']} |"
        )
    return "\n".join(out)


def _find(rows: list[dict[str, Any]], system: str, shape: str, conc: int) -> dict[str, Any] | None:
    for r in rows:
        if (r["system"], r["shape"], r["concurrency"]) == (system, shape, conc):
            return r
    return None


def evaluate(rows: list[dict[str, Any]], system: str = "signoff") -> list[targets.Target]:
    """The server's targets, at the highest concurrency measured, for `system`."""
    if not rows:
        return []
    conc = max(r["concurrency"] for r in rows)
    out: list[targets.Target] = []
    checks = (
        ("check", "echo", 1.3, f"unary Check, server CPU per request vs bare gRPC echo ({system})"),
        (
            "20x3-distinct",
            "cerbos",
            1.0,
            f"CheckBatch 20x3 distinct, CPU per check vs Cerbos ({system})",
        ),
        ("20x3", "cerbos", 0.5, f"CheckBatch 20x3 repeats, CPU per check vs Cerbos ({system})"),
    )
    for shape, baseline, limit, name in checks:
        a, b = _find(rows, system, shape, conc), _find(rows, baseline, shape, conc)
        if a is None or b is None:
            continue
        target = targets.ratio_target(
            f"{name}, concurrency {conc}",
            a["server_cpu_us_per_check"],
            b["server_cpu_us_per_check"],
            "µs",
            limit,
            at_most=True,
        )
        if not (a["ok"] and b["ok"]):  # an answer went wrong: no figure counts
            target = targets.Target(target.name, target.measured + " (ERRORS)", target.limit, False)
        out.append(target)
    return out


# The signoff configurations measured: as shipped (one process per core, 4 workers each), the
# former default of one process with 8 workers, and as shipped with the decision cache off
# (the load repeats one request, which is the cache's best case).
SIGNOFF_CONFIGS: dict[str, tuple[str, ...]] = {
    "signoff": (),
    "signoff-1proc": ("--processes", "1", "--workers", "8"),
    "signoff-nocache": ("--decision-cache", "0"),
}


@dataclass
class Options:
    concurrency: list[int]
    rounds: int = 3
    seconds: float = 5.0
    warmup: float = 1.0
    rules: int = 30
    audit: bool = True
    systems: Sequence[str] = tuple(SIGNOFF_CONFIGS)
    shapes: Sequence[str] = ()
    distinct: int = 400
    verify_only: bool = False
    quick: bool = False


def _check_load_answers(server: SignoffServer, cerbos_target: str | None, distinct: int) -> str:
    """The bytes sent under load get the expected verdicts (an item error is no failed call)."""
    import grpc

    pl = workload.payloads()
    many = workload.distinct_batches(min(distinct, 3))
    with grpc.insecure_channel(server.target) as channel:
        batch = channel.unary_unary(workload.SIGNOFF_BATCH, None, None)
        cases = [(pl.signoff_batch60, pl.cerbos_20x3, workload.load_resources(20))]
        cases += [(s, c, workload.distinct_resources(k)) for k, (s, c) in enumerate(many)]
        for signoff_raw, _, resources in cases:
            for _ in range(2):  # a miss, then a hit
                if not workload.batch_verdicts_ok(batch(signoff_raw, timeout=30), resources):
                    raise workload.Disagreement("signoff answered a load batch wrongly")
    if cerbos_target is not None:
        with grpc.insecure_channel(cerbos_target) as channel:
            check = channel.unary_unary(workload.CERBOS_CHECK, None, None)
            for _, cerbos_raw, resources in cases:
                if not workload.cerbos_verdicts_ok(check(cerbos_raw, timeout=30), resources):
                    raise workload.Disagreement("Cerbos answered a load batch wrongly")
    return f"load batches ({len(cases)}, repeated and distinct) answered as expected"


def measure(opts: Options) -> tuple[list[dict[str, Any]], list[str]]:
    """Start the systems, verify their answers, measure; the rows and what was said."""
    notes: list[str] = []
    binary: Path | None
    try:
        binary = cerbos.install()
    except (RuntimeError, OSError) as exc:
        if not opts.quick:
            raise
        binary = None
        notes.append(f"Cerbos skipped: it could not be installed ({str(exc).splitlines()[0]})")
    tmp = Path(tempfile.mkdtemp(prefix="signoff-vs-cerbos-"))
    signoff_dir, cerbos_dir = tmp / "signoff", tmp / "cerbos"
    workload.write_signoff_rules(signoff_dir, opts.rules)
    workload.write_cerbos_policies(cerbos_dir, opts.rules)
    rows: list[dict[str, Any]] = []
    signoffs: dict[str, SignoffServer] = {}
    echo: EchoServer | None = None
    try:
        for name in opts.systems:
            signoffs[name] = start_signoff(signoff_dir, opts.audit, *SIGNOFF_CONFIGS[name])
        echo = start_echo()
        with cerbos.start(cerbos_dir, binary) if binary is not None else _nothing() as server:
            cerbos_target = server.target if server is not None else None
            for name, so in signoffs.items():
                notes.append(f"{name} pid {so.pid} on {so.target} (audit {opts.audit})")
                if cerbos_target is not None and not opts.quick:
                    notes.append(workload.verify(so.target, cerbos_target, opts.rules))
                notes.append(_check_load_answers(so, cerbos_target, opts.distinct))
            for line in notes:
                print(line, flush=True)
            if not opts.verify_only:
                rows = compare(
                    signoffs,
                    server,
                    echo,
                    opts.concurrency,
                    opts.rounds,
                    opts.seconds,
                    opts.warmup,
                    opts.shapes,
                    opts.distinct,
                )
                for row in rows:
                    row.update(
                        rules=opts.rules, signoff_audit=opts.audit, cerbos_version=cerbos.VERSION
                    )
    finally:
        for so in signoffs.values():
            so.stop()
        if echo is not None:
            echo.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, notes


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


QUICK = Options(
    concurrency=[2],
    rounds=1,
    seconds=0.3,
    warmup=0.1,
    systems=("signoff",),
    distinct=8,
    quick=True,
)


def section(quick: bool = False) -> targets.Section:
    """The server's targets for `make bench`; quick: tiny runs that check every answer."""
    # Four shapes, three to five systems, three rounds: two concurrency levels keep it ~8 min.
    opts = QUICK if quick else Options(concurrency=[8, 32], seconds=4.0)
    rows, notes = measure(opts)
    found = evaluate(rows)
    text = (
        f"Medians of {opts.rounds} alternating rounds of {opts.seconds} s per setting; "
        f"{opts.rules} rules; {os.cpu_count()} cores shared by servers and load. "
        f"Command: `python -m bench.vs_cerbos`.\n\n" + markdown(rows)
    )
    if any(n.startswith("Cerbos skipped") for n in notes):
        text = "\n".join(n for n in notes if n.startswith("Cerbos skipped")) + "\n\n" + text
    return targets.Section("signoff vs Cerbos and the bare gRPC floor", found, text, {"grpc": rows})


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny runs, answers still checked")
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
        help="signoff configurations to measure",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=[s.name for s in shapes(1)],
        default=[],
        help="request shapes (default: all)",
    )
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    began = time.monotonic()
    if args.quick:
        opts = QUICK
    else:
        opts = Options(
            concurrency=args.concurrency,
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            rules=args.rules,
            audit=args.audit == "on",
            systems=args.systems,
            shapes=args.shapes,
            verify_only=args.verify_only,
        )
    rows, _notes = measure(opts)
    if rows:
        print()
        print(
            f"medians of {opts.rounds} alternating rounds of {opts.seconds} s; "
            f"{opts.rules} rules; {os.cpu_count()} cores shared by servers and load"
        )
        print(report(rows))
        print()
        for t in evaluate(rows) + evaluate(rows, "signoff-1proc"):
            print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured} (limit {t.limit})")
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"total time {time.monotonic() - began:.0f} s", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
