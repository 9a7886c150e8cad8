"""Checks through the shipped Python client: coalesced vs unary vs asyncio, and against Cerbos.

Cerbos's 1x3 workload at concurrency 32: Cerbos driven by the shared load generator
(`bench.loadgen`, pre-serialized CheckResources bytes), signoff by 32 callers that each call
`SignoffClient.check_batch` with the same three checks (one principal, one resource, three
actions), through the client as shipped: with coalescing (the default), with it off (every
call its own RPC), and the asyncio client with 32 tasks. Every answer is checked. Each client
setting runs in spawned processes of its own; server CPU is read from /proc for the server's
process tree, as the load generator does. Settings alternate (A B C D A B C D ...), medians.

Quick mode (`--quick`) runs tiny sizes against the bundled rules, without Cerbos, and checks
that coalesced, unary and asyncio calls give the answers unary Check gives.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import statistics
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import redis

from bench import loadgen
from bench.signoff_server import SignoffServer, start_signoff
from bench.targets import Section, Target, ratio_target
from signoff.audit import StreamKeys
from signoff.client import (
    CheckItem,
    Coalescing,
    Decision,
    Principal,
    Resource,
    SignoffClient,
)
from signoff.client.aio import AsyncSignoffClient

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
# Client settings measured: how the callers reach signoff.
MODES = ("coalesced", "unary", "asyncio")
PROCESSES = 2  # client processes per setting, as the load generator runs for Cerbos
# The HTTP gateway as shipped, on a free port: 8080 may be taken on a shared machine.
FREE_HTTP = ("--http-address", "127.0.0.1:0")
QUICK_SECONDS = 0.2


@dataclass(frozen=True)
class Workload:
    """The checks every caller repeats and the verdict names each must get."""

    items: tuple[CheckItem, ...]
    expected: tuple[str, ...]


@dataclass
class Run:
    """One measured client setting."""

    mode: str
    seconds: float
    calls: int  # check_batch calls (1x3 requests)
    checks: int
    errors: int
    wrong: int  # answers that were not the expected verdicts
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_s: float
    # Audit records the server wrote per check it decided (warm-up included). Below 1 means
    # its audit queue overflowed and records were dropped (and counted): the CPU they would
    # have cost is then missing from server_cpu_s.
    audit_kept: float = float("nan")

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_us_per_check(self) -> float:
        return self.server_cpu_s / self.checks * 1e6 if self.checks else float("nan")


# ------------------------------------------------------------------------ the load processes


def _verdicts(results: Sequence[object]) -> tuple[str, ...]:
    return tuple(r.verdict.name if isinstance(r, Decision) else "ERROR" for r in results)


def _caller_loop(
    call: Callable[[], Sequence[object]],
    expected: tuple[str, ...],
    until: float,
    lat: array[float],
    counts: list[int],
) -> None:
    while time.monotonic() < until:
        t0 = time.perf_counter()
        counts[2] += 1
        try:
            results = call()
        except Exception:
            counts[0] += 1
            continue
        lat.append((time.perf_counter() - t0) * 1e3)
        if _verdicts(results) != expected:
            counts[1] += 1


def _threads(
    target: str, mode: str, work: Workload, callers: int, warmup: float, seconds: float, sync: Any
) -> tuple[array[float], list[int]]:
    coalescing = None if mode == "unary" else Coalescing()
    client = SignoffClient(target, timeout=30, coalescing=coalescing)
    lats = [array("d") for _ in range(callers)]
    counts = [[0, 0, 0] for _ in range(callers)]
    warm = [[0, 0, 0] for _ in range(callers)]
    go = threading.Barrier(callers + 1)
    ends: list[float] = []

    def call() -> Sequence[object]:
        return client.check_batch(work.items)

    def run(i: int) -> None:
        _caller_loop(call, work.expected, time.monotonic() + warmup, array("d"), warm[i])
        go.wait()
        go.wait()
        _caller_loop(call, work.expected, ends[0], lats[i], counts[i])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(callers)]
    for t in threads:
        t.start()
    go.wait()  # warmed up
    sync()
    ends.append(time.monotonic() + seconds)
    go.wait()
    for t in threads:
        t.join()
    client.close()
    return _merge(lats), _totals(counts, warm)


def _tasks(
    target: str, work: Workload, callers: int, warmup: float, seconds: float, sync: Any
) -> tuple[array[float], list[int]]:
    lats = [array("d") for _ in range(callers)]
    counts = [[0, 0, 0] for _ in range(callers)]
    warm = [[0, 0, 0] for _ in range(callers)]

    async def caller(client: AsyncSignoffClient, i: int, until: float, measure: bool) -> None:
        lat, cnt = (lats[i], counts[i]) if measure else (array("d"), warm[i])
        while time.monotonic() < until:
            t0 = time.perf_counter()
            cnt[2] += 1
            try:
                results = await client.check_batch(work.items)
            except Exception:
                cnt[0] += 1
                continue
            lat.append((time.perf_counter() - t0) * 1e3)
            if measure and _verdicts(results) != work.expected:
                cnt[1] += 1

    async def main() -> None:
        async with AsyncSignoffClient(target, timeout=30) as client:
            until = time.monotonic() + warmup
            await asyncio.gather(*(caller(client, i, until, False) for i in range(callers)))
            await asyncio.to_thread(sync)
            until = time.monotonic() + seconds
            await asyncio.gather(*(caller(client, i, until, True) for i in range(callers)))

    asyncio.run(main())
    return _merge(lats), _totals(counts, warm)


def _totals(counts: list[list[int]], warm: list[list[int]]) -> list[int]:
    """Errors and wrong answers measured, and every call made (warm-up included)."""
    return [
        sum(c[0] for c in counts),
        sum(c[1] for c in counts),
        sum(c[2] for c in counts) + sum(c[2] for c in warm),
    ]


def _merge(lats: list[array[float]]) -> array[float]:
    out = array("d")
    for a in lats:
        out.extend(a)
    return out


def _process(
    target: str,
    mode: str,
    work: Workload,
    callers: int,
    warmup: float,
    seconds: float,
    barrier: Barrier,
    out: Any,
) -> None:
    """One client process: warm up, wait for the others, measure, report."""
    cpu: list[float] = []

    def sync() -> None:
        barrier.wait()  # every process warmed up: the parent reads CPU and starts the clock
        cpu.append(time.process_time())

    if mode == "asyncio":
        lat, counts = _tasks(target, work, callers, warmup, seconds, sync)
    else:
        lat, counts = _threads(target, mode, work, callers, warmup, seconds, sync)
    used = time.process_time() - cpu[0]
    barrier.wait()  # every process done: the parent stops the clock and reads CPU
    out.put((lat.tobytes(), counts, used))


def measure(
    server: SignoffServer,
    mode: str,
    work: Workload,
    concurrency: int = CONCURRENCY,
    seconds: float = 4.0,
    warmup: float = 1.0,
    processes: int = PROCESSES,
) -> Run:
    """`concurrency` callers (over `processes` spawned processes; 0: a thread of this one, for
    the quick mode) through the client in `mode`."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC state
    nproc = max(1, min(processes, concurrency))
    shares = [concurrency // nproc + (1 if i < concurrency % nproc else 0) for i in range(nproc)]
    barrier = ctx.Barrier(nproc + 1)
    out = ctx.Queue()
    spawn: Callable[..., Any] = ctx.Process if processes else threading.Thread
    procs = [
        spawn(
            target=_process,
            args=(server.target, mode, work, n, warmup, seconds, barrier, out),
            daemon=True,
        )
        for n in shares
    ]
    audit = redis.Redis.from_url(server.redis_url)
    stream = StreamKeys.of(server.prefix, "decisions").stream
    written0 = audit.xlen(stream)
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=warmup + 120)
        cpu0 = _server_cpu(server.pid)
        t0 = time.monotonic()
        barrier.wait(timeout=seconds + 120)
        wall = time.monotonic() - t0
        cpu1 = _server_cpu(server.pid)
        reports = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive() and isinstance(p, multiprocessing.process.BaseProcess):
                p.kill()
    lat = array("d")
    errors = wrong = made = 0
    client_cpu = 0.0
    for raw, (errs, bad, calls), used in reports:
        part = array("d")
        part.frombytes(raw)
        lat.extend(part)
        errors += errs
        wrong += bad
        made += calls
        client_cpu += used
    written = _settled_length(audit, stream) - written0
    audit.close()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return Run(
        mode=mode,
        seconds=wall,
        calls=len(lat),
        checks=len(lat) * len(work.items),
        errors=errors,
        wrong=wrong,
        p50_ms=q[49],
        p99_ms=q[98],
        server_cpu_s=sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items()),
        client_cpu_s=client_cpu,
        audit_kept=written / (made * len(work.items)) if made else float("nan"),
    )


def _settled_length(audit: redis.Redis, stream: str) -> int:
    """The stream's length once the server's audit writer has caught up (stops growing)."""
    length = audit.xlen(stream)
    for _ in range(50):
        time.sleep(0.1)
        now = audit.xlen(stream)
        if now == length:
            break
        length = now
    return int(length)


def _server_cpu(pid: int) -> dict[int, float]:
    out = {}
    for p in loadgen.process_tree(pid):
        try:
            out[p] = loadgen.cpu_seconds(p)
        except (OSError, IndexError, ValueError):  # it exited
            continue
    return out


# ------------------------------------------------------------------------------- workloads


def cerbos_workload() -> Workload:
    """Cerbos's 1x3 load request as client CheckItems: the hot case's three actions."""
    from bench import workload  # cedarpy and Cerbos's protos: only the full run needs them

    case = workload.hot_case()
    p, r = case.principal, case.resource
    principal = Principal(p.id, roles=p.roles, attributes=p.attr())
    resource = Resource(r.kind, id=r.id, attributes=r.attr())
    return Workload(
        items=tuple(CheckItem(principal, action, resource) for action in case.actions),
        expected=tuple(verdict for _, verdict in case.expected),
    )


def bundled_workload(target: str) -> Workload:
    """Three checks on the bundled rules (allow, mask, deny), their answers from unary Check."""
    alice = Principal("alice@acme.io", roles=("analyst",), attributes={"tenant": "acme"})
    fields = ("customers.*.email", "pii.email"), ("customers.*.country", "")
    from signoff.client import Context, Field

    customers = Resource(
        "customer_table",
        id="crm.customers",
        attributes={"tenant": "acme"},
        fields=tuple(Field(path, (tag,) if tag else ()) for path, tag in fields),
    )
    prod = Context(environment="prod")
    items = (
        CheckItem(alice, "read", customers, prod, {"row_limit": 20}),
        CheckItem(alice, "export", customers, prod, {"target": "s3://acme/x.parquet"}),
        CheckItem(alice, "delete", customers, prod),
    )
    with SignoffClient(target, coalescing=None) as client:
        expected = tuple(client.check_item(item).verdict.name for item in items)
    return Workload(items, expected)


# ---------------------------------------------------------------------------------- the run


def _median(runs: list[Run], key: Callable[[Run], float]) -> float:
    return statistics.median(key(r) for r in runs)


def compare(
    server: SignoffServer,
    work: Workload,
    rounds: int,
    seconds: float,
    warmup: float,
    cerbos_run: Callable[[], loadgen.Result] | None,
    modes: Sequence[str] = MODES,
    concurrency: int = CONCURRENCY,
    processes: int = PROCESSES,
) -> tuple[dict[str, list[Run]], list[loadgen.Result]]:
    """Alternating rounds: Cerbos (when given), then each client mode; every run reported."""
    runs: dict[str, list[Run]] = {mode: [] for mode in modes}
    cerbos_runs: list[loadgen.Result] = []
    for _ in range(rounds):
        if cerbos_run is not None:
            res = cerbos_run()
            cerbos_runs.append(res)
            print(
                f"  cerbos            {res.rps:8.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                f"p99 {res.p99_ms:6.2f} ms  cpu {res.cpu_us_per_call() / 3:6.1f} µs/check",
                flush=True,
            )
        for mode in modes:
            run = measure(server, mode, work, concurrency, seconds, warmup, processes)
            runs[mode].append(run)
            print(
                f"  signoff {mode:<9} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                f"p99 {run.p99_ms:6.2f} ms  cpu {run.cpu_us_per_check:6.1f} µs/check  "
                f"client {run.client_cpu_s / max(1, run.checks) * 1e6:6.1f} µs/check  "
                f"audit kept {run.audit_kept:.0%}"
                + (f"  ERRORS {run.errors} WRONG {run.wrong}" if run.errors or run.wrong else ""),
                flush=True,
            )
    return runs, cerbos_runs


def _table(runs: dict[str, list[Run]], cerbos_runs: list[loadgen.Result]) -> str:
    head = (
        "| system | requests/s | checks/s | p50 ms | p99 ms | server CPU µs/check "
        "| client CPU µs/check | audit records kept | errors |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for mode, rs in runs.items():
        lines.append(
            f"| signoff client, {mode} | {_median(rs, lambda r: r.rps):.0f} "
            f"| {_median(rs, lambda r: r.rps * 3):.0f} | {_median(rs, lambda r: r.p50_ms):.2f} "
            f"| {_median(rs, lambda r: r.p99_ms):.2f} "
            f"| {_median(rs, lambda r: r.cpu_us_per_check):.1f} "
            f"| {_median(rs, lambda r: r.client_cpu_s / max(1, r.checks) * 1e6):.1f} "
            f"| {min(r.audit_kept for r in rs):.0%} "
            f"| {sum(r.errors + r.wrong for r in rs)} |"
        )
    if cerbos_runs:
        rps = statistics.median(r.rps for r in cerbos_runs)
        lines.append(
            f"| Cerbos (load generator) | {rps:.0f} | {rps * 3:.0f} "
            f"| {statistics.median(r.p50_ms for r in cerbos_runs):.2f} "
            f"| {statistics.median(r.p99_ms for r in cerbos_runs):.2f} "
            f"| {statistics.median(r.cpu_us_per_call() / 3 for r in cerbos_runs):.1f} "
            f"| {statistics.median(r.client_cpu_s / r.calls / 3 * 1e6 for r in cerbos_runs):.1f} "
            f"| (audit off) | {sum(r.errors for r in cerbos_runs)} |"
        )
    return "\n".join(lines)


def _targets(runs: dict[str, list[Run]], cerbos_runs: list[loadgen.Result]) -> list[Target]:
    co, un = runs["coalesced"], runs["unary"]
    out: list[Target] = []
    if cerbos_runs:
        cerbos_cpu = statistics.median(r.cpu_us_per_call() / 3 for r in cerbos_runs)
        cerbos_rps = statistics.median(r.rps for r in cerbos_runs)
        best = {mode: rs for mode, rs in runs.items() if mode != "unary"}
        for mode, rs in best.items():
            out += [
                ratio_target(
                    f"client {mode} 1x3 at concurrency {CONCURRENCY}, server CPU per check "
                    "vs Cerbos",
                    _median(rs, lambda r: r.cpu_us_per_check),
                    cerbos_cpu,
                    "µs",
                    0.5,
                    at_most=True,
                ),
                ratio_target(
                    f"client {mode} 1x3 at concurrency {CONCURRENCY}, throughput vs Cerbos",
                    _median(rs, lambda r: r.rps),
                    cerbos_rps,
                    "req/s",
                    1.5,
                    at_most=False,
                ),
            ]
    out.append(
        ratio_target(
            "client coalesced vs unary, server CPU per check (same client, same run)",
            _median(co, lambda r: r.cpu_us_per_check),
            _median(un, lambda r: r.cpu_us_per_check),
            "µs",
            1.0,
            at_most=True,
        )
    )
    return out


def section(quick: bool = False) -> Section:
    """The client transport's targets and tables (quick: bundled rules, no Cerbos)."""
    if quick:
        return _quick()
    return _full(rounds=3, seconds=4.0, warmup=1.0)


def _full(
    rounds: int,
    seconds: float,
    warmup: float,
    serve_args: Sequence[str] = (),
    processes: int = PROCESSES,
) -> Section:
    from bench import cerbos, workload

    binary = cerbos.install()
    tmp = Path(tempfile.mkdtemp(prefix="signoff-client-bench-"))
    signoff_dir, cerbos_dir = tmp / "signoff", tmp / "cerbos"
    workload.write_signoff_rules(signoff_dir)
    workload.write_cerbos_policies(cerbos_dir)
    payload = workload.payloads().cerbos_1x3
    work = cerbos_workload()
    try:
        with (
            start_signoff(signoff_dir, True, *FREE_HTTP, *serve_args) as server,
            cerbos.start(cerbos_dir, binary) as cb,
        ):
            print(f"signoff pid {server.pid} on {server.target}; cerbos pid {cb.pid}", flush=True)

            def cerbos_run() -> loadgen.Result:
                return loadgen.run(
                    cb.target,
                    workload.CERBOS_CHECK,
                    payload,
                    CONCURRENCY,
                    seconds,
                    lambda: loadgen.process_tree(cb.pid),
                    warmup,
                )

            runs, cerbos_runs = compare(
                server, work, rounds, seconds, warmup, cerbos_run, MODES, CONCURRENCY, processes
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    callers = f"{CONCURRENCY} callers in {processes} client processes"
    return _section(runs, cerbos_runs, rounds, seconds, callers)


def _quick() -> Section:
    with start_signoff(REPO / "rules", True, *FREE_HTTP) as server:
        work = bundled_workload(server.target)
        runs, _ = compare(server, work, 1, QUICK_SECONDS, 0.1, None, MODES, 4, 0)
    for mode, rs in runs.items():
        for r in rs:
            if r.errors or r.wrong or not r.calls:
                raise AssertionError(
                    f"client {mode}: {r.calls} calls, {r.errors} errors, {r.wrong} wrong answers"
                )
    return _section(runs, [], 1, QUICK_SECONDS, "4 callers in this process")


def _section(
    runs: dict[str, list[Run]],
    cerbos_runs: list[loadgen.Result],
    rounds: int,
    seconds: float,
    callers: str,
) -> Section:
    note = (
        f"{callers}, each calling "
        "`check_batch` with one principal, one resource and three actions; "
        f"medians of {rounds} alternating rounds of {seconds} s. "
        "Reproduce: `python -m bench.client_transport`."
    )
    return Section(
        title="Checks through the shipped client",
        targets=_targets(runs, cerbos_runs),
        markdown=note + "\n\n" + _table(runs, cerbos_runs),
        data={
            "runs": {mode: [vars(r) for r in rs] for mode, rs in runs.items()},
            "cerbos": [
                {"rps": r.rps, "cpu_us_per_check": r.cpu_us_per_call() / 3} for r in cerbos_runs
            ],
        },
    )


def main(argv: list[str] | None = None) -> Section:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no Cerbos")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--serve-args", default="", help="extra `signoff serve` options, e.g. '--processes 2'"
    )
    parser.add_argument("--client-processes", type=int, default=PROCESSES)
    args = parser.parse_args(argv)
    serve = args.serve_args.split()
    result = (
        _quick()
        if args.quick
        else _full(args.rounds, args.seconds, args.warmup, serve, args.client_processes)
    )
    print()
    print(result.markdown)
    print()
    for t in result.targets:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured} (limit {t.limit})")
    return result


if __name__ == "__main__":
    main()
