"""bench/approvals.py: its open-loop load counts queueing in full, and its quick mode runs."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import pytest

from bench import approvals


def test_quick_approvals_bench_measures_every_phase_with_every_answer_checked() -> None:
    # main() checks each answer (REQUIRE_APPROVAL with an id; pending with one vote after
    # Approve) and raises on a wrong one; each principal is new, so no pending cap is met.
    result = approvals.main(["--quick"])
    for load in ("closed", "open", "open_half_max"):
        for phase in ("pending", "approve"):
            r = result[load][phase]
            assert r["calls"] >= 10
            assert r["calls_per_s"] > 0
            assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"]
    assert result["open"]["pending"]["offered_per_s"] == approvals.TARGET_RATE
    half = result["closed"]["approve"]["calls_per_s"] / 2
    assert result["open_half_max"]["approve"]["offered_per_s"] == pytest.approx(half)
    assert [t.name for t in approvals.targets(result)] == [
        "approvals, Check->pending p99, open-loop at 200/s",
        "approvals, Approve p99, open-loop at 200/s",
    ]


def test_open_loop_latency_runs_from_the_scheduled_send_time_so_queueing_shows() -> None:
    # A server that answers one call at a time in 20 ms, offered 100 calls/s (one per 10 ms):
    # the queue grows by 10 ms a call. A closed loop would report 20 ms for every call.
    server = futures.ThreadPoolExecutor(max_workers=1)

    def answer(n: int) -> int:
        time.sleep(0.02)
        return n

    def send(n: int) -> futures.Future[int]:
        return server.submit(answer, n)

    seen: list[int] = []
    lock = threading.Lock()

    def check(n: int, answer: Any) -> None:
        assert answer == n
        with lock:
            seen.append(n)

    try:
        result = approvals.open_loop(100.0, range(20), send, check)  # type: ignore[arg-type]
    finally:
        server.shutdown()
    assert sorted(seen) == list(range(20))
    # The last call waited for the 19 before it: ~20 * 20 ms - 19 * 10 ms = ~210 ms.
    assert result["max_ms"] >= 180
    assert result["p50_ms"] >= 90
    assert result["offered_per_s"] == 100.0


def test_open_loop_fails_the_run_when_a_call_fails() -> None:
    def send(n: int) -> futures.Future[int]:
        done: futures.Future[int] = futures.Future()
        done.set_exception(RuntimeError(f"call {n} refused"))
        return done

    with pytest.raises(AssertionError, match="call 0 failed"):
        approvals.open_loop(1000.0, range(3), send, lambda n, a: None)  # type: ignore[arg-type]


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 1001)]
    assert approvals.percentile(samples, 0.5) == 500.0
    assert approvals.percentile(samples, 0.99) == 990.0
    assert approvals.percentile(samples, 0.999) == 999.0
    assert approvals.percentile([7.0], 0.999) == 7.0


def test_compare_measures_server_cpu_per_call_of_another_revision_alternately() -> None:
    # HEAD against this checkout: both run every phase with every answer checked.
    result = approvals.main(["--compare", "HEAD", "--quick"])
    assert set(result) == {"pending", "approve"}
    for phase in result.values():
        assert phase["base_cpu_ms"] >= 0
        assert phase["this_cpu_ms"] >= 0
