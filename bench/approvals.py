"""Approval path latency, open-loop at fixed offered rates, and its closed-loop maximum.

Latency is measured open-loop: requests leave on a fixed schedule (one every 1/rate seconds)
whether or not earlier ones have been answered, and each latency runs from the request's
*scheduled* send time to its answer. A closed loop of N callers (send, wait, send again) measures
throughput instead: when the server slows down, the callers send less, and the queueing that an
independent stream of requests would meet never shows in the figures (coordinated omission).

Against one `signoff serve` on the bundled rules (an IAM admin granting a prod role: the rules
want two security approvers), per phase:
  Check->pending  a Check that creates a pending approval (one Redis transition), and
  Approve         the first vote on one of those approvals (a full vote transition);
first the maximum closed-loop rate of each (`--callers` callers), then open-loop at 200/s and at
half that maximum, p50 / p99 / p99.9 each. Every answer is checked (REQUIRE_APPROVAL with an
approval id; the approval still pending with one vote); a wrong answer fails the run.

    python -m bench.approvals                   # ~1 minute
    python -m bench.approvals --quick           # seconds: what the test suite runs
    python -m bench.approvals --compare main    # server CPU per call vs another revision
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf import struct_pb2

from bench.loadgen import cpu_seconds, machine_cpu_seconds, process_tree
from bench.targets import Section, Target
from signoff.devtokens import create_dev_keys, mint
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parent.parent
HASH_KEY = "bench-secret-bench-secret-bench-secret-0123"
TARGET_RATE = 200.0  # offered load of the latency target, approvals per second
TARGET_P99_MS = 5.0
PHASES = (("pending", "Check->pending"), ("approve", "Approve"))


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


def plain_request(n: int) -> pb.CheckRequest:
    """An analyst reading 20 customer rows: ALLOW, no approval. Each has its own analyst, so
    the decision cache never answers it (an approval Check is never a repeat either)."""
    return pb.CheckRequest(
        principal=pb.Principal(
            id=f"analyst-{n}@acme.io",
            kind=pb.PRINCIPAL_KIND_HUMAN,
            roles=["analyst"],
            attributes=struct({"tenant": "acme"}),
        ),
        action="read",
        resource=pb.Resource(
            kind="customer_table", id="crm.customers", attributes=struct({"tenant": "acme"})
        ),
        context=pb.Context(environment="prod"),
        payload=struct({"row_limit": 20}),
    )


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q of all samples at or below."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(latencies_ms: list[float], seconds: float) -> dict[str, float]:
    """Percentiles over every call (an unanswered one as infinite); calls/s answered."""
    answered = sum(math.isfinite(x) for x in latencies_ms)
    return {
        "calls": float(len(latencies_ms)),
        "p50_ms": statistics.median(latencies_ms),
        "p99_ms": percentile(latencies_ms, 0.99),
        "p999_ms": percentile(latencies_ms, 0.999),
        "max_ms": max(latencies_ms),
        "calls_per_s": answered / seconds,
    }


# --- the server under test ----------------------------------------------------------------


@dataclass
class Service:
    """A running `signoff serve` with its stubs, approver tokens and Redis key prefix."""

    proc: subprocess.Popen[str]
    decisions: pb_grpc.DecisionServiceStub
    approvals: apb_grpc.ApprovalServiceStub
    approver_token: str
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's whole process tree (all --processes)."""
        total = 0.0
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):  # it exited
                total += cpu_seconds(pid)
        return total

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the server is idle (its audit writer has caught up with the last phase),
        so no phase pays for the one before it."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.cpu_seconds()
            if now - last < 0.02:  # under a tenth of a core
                return
            last = now

    def numbers(self, count: int) -> range:
        """`count` request numbers never used before on this server: each is its own admin,
        so no principal's pending cap is reached and no Check finds an earlier approval."""
        with self._lock:
            first, self._next = self._next, self._next + count
        return range(first, first + count)


@contextmanager
def serve(
    redis_url: str = REDIS_URL, processes: int | None = None, source: Path | None = None
) -> Iterator[Service]:
    """`signoff serve` on the bundled rules with a development JWKS, on a free port, with its
    own Redis prefix (every key under it deleted afterwards); the signoff package from
    `source` (a checkout's service/ directory) when given, else this one."""
    keys = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    jwks = create_dev_keys(keys)
    prefix = f"signoff:bench:{uuid.uuid4().hex[:12]}:"
    env = {
        **os.environ,
        **({"PYTHONPATH": str(source)} if source else {}),
        "SIGNOFF_JWKS": str(jwks),
        "SIGNOFF_JWT_ISSUER": "signoff-dev",
        "SIGNOFF_JWT_AUDIENCE": "signoff",
        "SIGNOFF_HASH_KEY": HASH_KEY,
        "SIGNOFF_LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    # As shipped, apart from the port, the Redis prefix and (when asked) the process count.
    extra = ["--processes", str(processes)] if processes else []
    command = [sys.executable, "-m", "signoff.cli", "serve", "--address", "127.0.0.1:0"]
    command += ["--rules", str(REPO / "rules"), "--redis-url", redis_url, "--redis-prefix", prefix]
    server = subprocess.Popen(command + extra, env=env, stdout=subprocess.PIPE, text=True)
    channel: grpc.Channel | None = None
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 60)
        line = server.stdout.readline() if ready else ""
        if not line.startswith("signoff listening on "):
            raise RuntimeError(f"signoff serve did not start: {line!r}")
        port = int(line.split()[3].rsplit(":", 1)[1])
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        token = mint(
            keys,
            subject="sec0@acme.io",
            roles=["security"],
            issuer="signoff-dev",
            audience="signoff",
        )
        yield Service(
            server,
            pb_grpc.DecisionServiceStub(channel),
            apb_grpc.ApprovalServiceStub(channel),
            token,
        )
    finally:
        if channel is not None:
            channel.close()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
        client = redis.Redis.from_url(redis_url)
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(stale), 1000):
            client.delete(*stale[i : i + 1000])
        client.close()


# --- the two calls, as futures ------------------------------------------------------------

# One call: send request number n and return its future; then check its answer (raising on a
# wrong one) once it is done.
Send = Callable[[int], "grpc.Future[Any]"]
Check = Callable[[int, Any], None]


def create_calls(svc: Service, ids: dict[int, str]) -> tuple[Send, Check]:
    """Check -> pending: the answer must be REQUIRE_APPROVAL with an approval id (kept in
    `ids` for the Approve phase)."""

    def send(n: int) -> grpc.Future[Any]:
        return svc.decisions.Check.future(grant_request(n), timeout=10)

    def check(n: int, resp: pb.CheckResponse) -> None:
        if resp.verdict != pb.VERDICT_REQUIRE_APPROVAL or not resp.approval_id:
            raise AssertionError(f"Check {n}: {pb.Verdict.Name(resp.verdict)}, not pending")
        ids[n] = resp.approval_id

    return send, check


def plain_calls(svc: Service) -> tuple[Send, Check]:
    """The baseline: a Check that needs no approval (the answer must be ALLOW)."""

    def send(n: int) -> grpc.Future[Any]:
        return svc.decisions.Check.future(plain_request(n), timeout=10)

    def check(n: int, resp: pb.CheckResponse) -> None:
        if resp.verdict != pb.VERDICT_ALLOW:
            raise AssertionError(f"plain Check {n}: {pb.Verdict.Name(resp.verdict)}, not ALLOW")

    return send, check


def approve_calls(svc: Service, ids: dict[int, str]) -> tuple[Send, Check]:
    """Approve: the first of two votes, so the approval stays pending with one vote."""
    meta = (("authorization", f"Bearer {svc.approver_token}"),)

    def send(n: int) -> grpc.Future[Any]:
        request = apb.ApproveRequest(approval_id=ids[n], reason="bench")
        return svc.approvals.Approve.future(request, metadata=meta, timeout=10)

    def check(n: int, resp: apb.ApproveResponse) -> None:
        a = resp.approval
        if a.id != ids[n] or a.state != apb.APPROVAL_STATE_PENDING or len(a.votes) != 1:
            raise AssertionError(f"Approve {n}: {apb.ApprovalState.Name(a.state)}, {a.votes}")

    return send, check


# --- load shapes --------------------------------------------------------------------------


def closed_loop(
    callers: int,
    per_caller: int,
    numbers: range,
    send: Send,
    check: Check,
    cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, float]:
    """`callers` threads, each sending its next request when the last one is answered."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(callers + 1)

    def worker(w: int) -> None:
        mine = []
        start.wait()
        for i in range(per_caller):
            n = numbers[w * per_caller + i]
            t0 = time.perf_counter()
            resp = send(n).result()
            mine.append((time.perf_counter() - t0) * 1000)
            check(n, resp)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(callers)]
    for t in threads:
        t.start()
    cpu0 = cpu()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    used = cpu() - cpu0
    if len(latencies) != callers * per_caller:
        raise AssertionError(f"{callers * per_caller - len(latencies)} closed-loop calls failed")
    return summary(latencies, seconds) | {
        "callers": float(callers),
        "server_cpu_ms_per_call": used / len(latencies) * 1000,
    }


def open_loop(
    rate: float,
    numbers: Sequence[int],
    send: Send,
    check: Check,
    cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, float]:
    """One request every 1/rate s on a fixed schedule, never waiting for answers; each latency
    is from the request's scheduled send time, so a late sender or a queue counts in full.
    A call the server sheds under overload (RESOURCE_EXHAUSTED) counts as never answered (an
    infinite latency); any other error fails the run."""
    count = len(numbers)
    latencies: list[float] = [math.nan] * count
    answers: list[Any] = [None] * count
    left = threading.Semaphore(0)

    def done(i: int, due: float, future: grpc.Future[Any]) -> None:
        latencies[i] = (time.perf_counter() - due) * 1000
        answers[i] = future.exception() or future.result()
        left.release()

    lag = 0.0
    cpu0, mine0, machine0 = cpu(), time.process_time(), machine_cpu_seconds()
    t0 = time.perf_counter() + 0.02
    for i, n in enumerate(numbers):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        lag = max(lag, time.perf_counter() - due)
        send(n).add_done_callback(functools.partial(done, i, due))
    for _ in range(count):
        if not left.acquire(timeout=30):
            raise TimeoutError("open-loop calls were not all answered in 30 s")
    seconds = time.perf_counter() - t0
    used, mine = cpu() - cpu0, time.process_time() - mine0
    others = machine_cpu_seconds() - machine0 - used - mine
    shed = 0
    for i, n in enumerate(numbers):
        if _shed(answers[i]):
            shed += 1
            latencies[i] = math.inf
        elif isinstance(answers[i], BaseException):
            raise AssertionError(f"call {n} failed: {answers[i]!r}")
        else:
            check(n, answers[i])
    return summary(latencies, seconds) | {
        "offered_per_s": rate,
        "shed": float(shed),
        # How late the sender itself ran (a busy machine): already inside every latency.
        "max_send_lag_ms": lag * 1000,
        "server_cpu_ms_per_call": used / count * 1000,
        # Cores kept busy by everything but the server and this load generator: on a shared
        # machine, what the tail latencies also wait for.
        "other_load_cores": max(0.0, others / seconds),
    }


def _shed(answer: Any) -> bool:
    return isinstance(answer, grpc.RpcError) and (
        answer.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    )


# --- the measurement ----------------------------------------------------------------------


def measure(
    *,
    callers: int = 16,
    per_caller: int = 50,
    seconds: float = 10.0,
    rate: float = TARGET_RATE,
    redis_url: str = REDIS_URL,
    processes: int | None = None,
) -> dict[str, Any]:
    """Per phase: open-loop at `rate` (and plain Checks at `rate`, the baseline), the
    closed-loop maximum, then open-loop at half that maximum; the server idle before each."""
    out: dict[str, Any] = {"closed": {}, "open": {}, "open_half_max": {}}
    with serve(redis_url, processes) as svc:
        ids: dict[int, str] = {}
        calls = {"pending": create_calls(svc, ids), "approve": approve_calls(svc, ids)}
        # Warm both paths (connections, scripts loaded, code paths run once) before measuring.
        each = min(10, per_caller)
        warm = svc.numbers(2 * each)
        for phase, _ in PHASES:
            closed_loop(2, each, warm, *calls[phase])

        def open_phases(key: str, rates: dict[str, float]) -> None:
            fresh = svc.numbers(max(10, round(rates["pending"] * seconds)))
            for phase, _ in PHASES:
                # Approve votes on the approvals its Check->pending phase created (a Check the
                # server shed created none).
                numbers = fresh if phase == "pending" else [n for n in fresh if n in ids]
                svc.settle()
                out[key][phase] = open_loop(rates[phase], numbers, *calls[phase], svc.cpu_seconds)

        open_phases("open", {"pending": rate, "approve": rate})
        # The same load without the approval step: what the approval path adds.
        svc.settle()
        plain = svc.numbers(max(10, round(rate * seconds)))
        out["open"]["plain"] = open_loop(rate, plain, *plain_calls(svc), svc.cpu_seconds)
        # Each Approve phase votes on the approvals its Check->pending phase just created.
        fresh = svc.numbers(callers * per_caller)
        for phase, _ in PHASES:
            svc.settle()
            out["closed"][phase] = closed_loop(
                callers, per_caller, fresh, *calls[phase], svc.cpu_seconds
            )
        open_phases("open_half_max", {p: out["closed"][p]["calls_per_s"] / 2 for p, _ in PHASES})
    out["settings"] = {
        "callers": callers,
        "per_caller": per_caller,
        "open_seconds": seconds,
        "rate": rate,
        "processes": processes or 0,
    }
    return out


def targets(result: dict[str, Any]) -> list[Target]:
    out = []
    for phase, label in PHASES:
        r = result["open"][phase]
        out.append(
            Target(
                f"approvals, {label} p99, open-loop at {r['offered_per_s']:.0f}/s",
                f"{r['p99_ms']:.2f} ms (p50 {r['p50_ms']:.2f}, p99.9 {r['p999_ms']:.2f}; other "
                f"load {r['other_load_cores']:.1f} cores) = {r['p99_ms'] / TARGET_P99_MS:.2f}x "
                "of limit",
                f"<= {TARGET_P99_MS:.0f} ms",
                r["p99_ms"] <= TARGET_P99_MS,
            )
        )
    return out


def table(result: dict[str, Any]) -> str:
    callers = result["settings"]["callers"]
    lines = [
        "| load | phase | offered/s | answered/s | p50 ms | p99 ms | p99.9 ms | max ms | calls "
        "| shed | server CPU ms/call | other load (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, load in (
        ("open", "open-loop"),
        ("open_half_max", "open-loop, 50% of max"),
        ("closed", f"closed-loop, {callers} callers (max)"),
    ):
        for phase, label in (*PHASES, ("plain", "Check, ALLOW (baseline)")):
            if phase not in result[key]:
                continue
            r = result[key][phase]
            open_loop = "other_load_cores" in r
            offered = f"{r['offered_per_s']:.0f}" if open_loop else "-"
            shed = f"{r['shed']:.0f}" if open_loop else "-"
            others = f"{r['other_load_cores']:.2f}" if open_loop else "-"
            lines.append(
                f"| {load} | {label} | {offered} | {r['calls_per_s']:.0f} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['max_ms']:.2f} "
                f"| {r['calls']:.0f} | {shed} | {r['server_cpu_ms_per_call']:.2f} | {others} |"
            )
    return "\n".join(lines)


# Tiny sizes for the test suite: every phase runs and every answer is checked, in seconds.
QUICK_CALLERS, QUICK_PER_CALLER, QUICK_SECONDS = 2, 5, 0.1


def section(quick: bool = False) -> Section:
    """The approval latency targets for `make bench` (quick: tiny sizes, every answer checked)."""
    if quick:
        result = measure(callers=QUICK_CALLERS, per_caller=QUICK_PER_CALLER, seconds=QUICK_SECONDS)
    else:
        result = measure()
    closed = result["closed"]
    note = (
        f"Open-loop: requests sent on a fixed schedule, latency from the scheduled send time; "
        f"closed-loop: {result['settings']['callers']} callers, each waiting for its answer "
        f"(maximum throughput: Check->pending {closed['pending']['calls_per_s']:.0f}/s, "
        f"Approve {closed['approve']['calls_per_s']:.0f}/s). `python -m bench.approvals`"
    )
    return Section(
        title="Approval path",
        targets=targets(result),
        markdown=f"{table(result)}\n\n{note}",
        data={"approvals": result},
    )


def compare(revision: str, rounds: int = 3, calls: int = 1200) -> dict[str, dict[str, float]]:
    """Server CPU per call of each phase, the signoff of git `revision` against this checkout's,
    alternately (A B A B), closed-loop with 4 callers; medians and their ratio. CPU per call,
    unlike a latency percentile, holds its ratio on a busy machine."""
    samples: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
    with tempfile.TemporaryDirectory(prefix="signoff-base-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision, "service"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for _ in range(rounds):
            for variant, source in (("base", Path(tmp, "service")), ("this", None)):
                with serve(source=source) as svc:
                    ids: dict[int, str] = {}
                    calls_of = {
                        "pending": create_calls(svc, ids),
                        "approve": approve_calls(svc, ids),
                    }
                    warm = svc.numbers(40)
                    for phase, _ in PHASES:
                        closed_loop(4, 10, warm, *calls_of[phase])
                    fresh = svc.numbers(calls)
                    for phase, _ in PHASES:
                        r = closed_loop(4, calls // 4, fresh, *calls_of[phase], svc.cpu_seconds)
                        mine = samples[variant].setdefault(phase, [])
                        mine.append(r["server_cpu_ms_per_call"])
    out = {}
    for phase, label in PHASES:
        base = statistics.median(samples["base"][phase])
        this = statistics.median(samples["this"][phase])
        ratio = this / base if base else math.inf
        out[phase] = {"base_cpu_ms": base, "this_cpu_ms": this, "ratio": ratio}
        print(
            f"{label:<15} server CPU per call: {revision} {base:.3f} ms, this checkout "
            f"{this:.3f} ms = {ratio:.2f}x ({rounds} alternating rounds, medians)"
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", type=int, default=16, help="closed-loop callers")
    parser.add_argument("--per-caller", type=int, default=50, help="closed-loop calls each")
    parser.add_argument("--seconds", type=float, default=10.0, help="each open-loop phase")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop calls/s")
    parser.add_argument("--processes", type=int, help="signoff serve --processes (as shipped)")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument(
        "--compare",
        metavar="REVISION",
        help="instead: server CPU per call against the signoff of this git revision, A B A B",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(
            args.compare, rounds=1 if args.quick else 3, calls=40 if args.quick else 1200
        )
    if args.quick:
        args.callers, args.per_caller = QUICK_CALLERS, QUICK_PER_CALLER
        args.seconds = QUICK_SECONDS
    result = measure(
        callers=args.callers,
        per_caller=args.per_caller,
        seconds=args.seconds,
        rate=args.rate,
        redis_url=args.redis_url,
        processes=args.processes,
    )
    print(table(result))
    for t in targets(result):
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}  {t.measured}  ({t.limit})")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
