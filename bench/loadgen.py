"""One gRPC load generator for every system: pre-serialized bytes, spawned processes, server CPU."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import statistics
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 4  # per load process


@dataclass
class Result:
    """One measured run; `ok` is False when any call failed."""

    target: str
    method: str
    concurrency: int
    seconds: float  # measured wall time
    calls: int
    errors: int
    error_codes: dict[str, int]
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_s: float  # the load processes' own CPU in the same window
    machine_cpu_s: float  # every process on the machine, same window: shows interference
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.calls > 0

    def cpu_us_per_call(self) -> float:
        return self.server_cpu_s / self.calls * 1e6 if self.calls else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all cores, every process), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):  # it exited
            out[pid] = cpu_seconds(pid)
    return out


def _worker(
    target: str,
    method: str,
    payload: bytes | Sequence[bytes],
    threads: int,
    warmup: float,
    seconds: float,
    barrier: Barrier,
    out: Any,
) -> None:
    """One load process: `threads` threads over up to CONNECTIONS connections; warm up, wait
    for all, measure."""
    import grpc

    # Several connections, as many callers would open: a server whose processes share the port
    # only sees its load spread when there is more than one connection to spread.
    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, min(threads, CONNECTIONS)))
    ]
    calls = [c.unary_unary(method, None, None) for c in channels]  # bytes in, bytes out
    start = threading.Event()
    warmed = threading.Barrier(threads + 1)
    latencies = [array("d") for _ in range(threads)]
    errors: list[dict[str, int]] = [{} for _ in range(threads)]
    bodies = [payload] if isinstance(payload, bytes) else list(payload)
    turns = [itertools.cycle(bodies[i * len(bodies) // threads :] + bodies) for i in range(threads)]

    def once(call: Any, body: bytes) -> str | None:
        """One call; the status code's name when it failed."""
        try:
            call(body, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return code.name if code is not None else "UNKNOWN"
        return None

    def run(i: int) -> None:
        lat, errs, call, turn = latencies[i], errors[i], calls[i % len(calls)], turns[i]
        end = time.monotonic() + warmup
        while time.monotonic() < end:
            failed = once(call, next(turn))
            if failed:
                errs[f"{failed} (warm-up)"] = errs.get(f"{failed} (warm-up)", 0) + 1
        warmed.wait()
        start.wait()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            body = next(turn)
            t0 = time.perf_counter()
            failed = once(call, body)
            if failed:
                errs[failed] = errs.get(failed, 0) + 1
            else:
                lat.append((time.perf_counter() - t0) * 1e3)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    warmed.wait()
    barrier.wait()  # every process warmed up: the parent reads CPU and starts the clock
    cpu0 = time.process_time()
    start.set()
    for w in workers:
        w.join()
    cpu = time.process_time() - cpu0
    barrier.wait()  # every process done: the parent stops the clock and reads CPU
    for c in channels:
        c.close()
    merged: dict[str, int] = {}
    for e in errors:
        for k, v in e.items():
            merged[k] = merged.get(k, 0) + v
    lat_all = array("d")
    for a in latencies:
        lat_all.extend(a)
    out.put((lat_all.tobytes(), merged, cpu))


def run(
    target: str,
    method: str,
    payload: bytes | Sequence[bytes],
    concurrency: int,
    seconds: float,
    pids: Callable[[], list[int]],
    warmup: float = 1.0,
    processes: int = 2,
) -> Result:
    """`concurrency` callers (threads spread over `processes` spawned processes) send `payload`
    (or each of a sequence of payloads in turn, each caller from its own place in it)
    to `method` on `target` for `seconds` after `warmup`; returns throughput, latency and the
    server CPU spent in the measured window, summed over `pids()` (read at start and end)."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC state
    nproc = max(1, min(processes, concurrency))
    shares = [concurrency // nproc + (1 if i < concurrency % nproc else 0) for i in range(nproc)]
    barrier = ctx.Barrier(nproc + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(target, method, payload, n, warmup, seconds, barrier, out),
            daemon=True,
        )
        for n in shares
    ]
    for p in procs:
        p.start()
    finished = threading.Event()

    def watch() -> None:
        """A load process that dies would leave the others waiting at the barrier for ever."""
        while not finished.wait(0.2):
            if any(p.exitcode not in (None, 0) for p in procs):
                barrier.abort()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        try:
            barrier.wait(timeout=warmup + 120)
            cpu0, machine0 = _cpu(pids()), machine_cpu_seconds()
            t0 = time.monotonic()
            barrier.wait(timeout=seconds + 120)
            wall = time.monotonic() - t0
            cpu1, machine1 = _cpu(pids()), machine_cpu_seconds()
        except threading.BrokenBarrierError:
            codes = [p.exitcode for p in procs]
            raise RuntimeError(f"a load process failed (exit codes {codes})") from None
        reports = [out.get(timeout=60) for _ in procs]
    finally:
        finished.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    # A process that appeared during the run counts from zero; one that exited is lost.
    server_cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    latencies: list[float] = []
    errors: dict[str, int] = {}
    client_cpu = 0.0
    for raw, errs, cpu in reports:
        client_cpu += cpu
        a = array("d")
        a.frombytes(raw)
        latencies.extend(a)
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
    calls = len(latencies)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return Result(
        target=target,
        method=method,
        concurrency=concurrency,
        seconds=wall,
        calls=calls,
        errors=sum(errors.values()),
        error_codes=errors,
        rps=calls / wall,
        p50_ms=q[49],
        p99_ms=q[98],
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        machine_cpu_s=machine1 - machine0,
        latencies_ms=latencies,
    )
