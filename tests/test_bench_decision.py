"""bench/decision.py's quick mode: both CEL backends give the bundle's expected answer."""

from __future__ import annotations

from bench import decision


def test_quick_decision_bench_times_both_backends_with_the_expected_verdict() -> None:
    # main() raises when a backend decides anything but the expected verdict.
    result = decision.main(["--quick"])
    assert set(result) == {"cel-expr", "cel-python"}
    for figures in result.values():
        assert figures["verdict"] == decision.EXPECTED
        assert figures["candidates"] == 6
        assert figures["median_us"] > 0
