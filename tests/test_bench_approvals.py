"""The approvals benchmark's quick mode runs end to end, so no change can silently break it."""

from __future__ import annotations

from bench import approvals


def test_quick_approvals_bench_creates_and_approves_every_request() -> None:
    # 2 callers x 3 calls: every Check must come back REQUIRE_APPROVAL with an id and every
    # Approve must succeed (the bench asserts both), under one principal's pending cap or not.
    result = approvals.measure(callers=2, per_caller=12)
    assert set(result) == {"pending", "approve"}
    for phase in result.values():
        assert phase["calls_per_s"] > 0
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
