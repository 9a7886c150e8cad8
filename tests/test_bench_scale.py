"""bench/scale.py's quick mode: both bundles load and decide alike in fresh processes."""

from __future__ import annotations

from bench import scale


def test_quick_scale_bench_loads_and_decides_both_bundles_alike() -> None:
    # run() raises when the two bundles decide the request differently.
    figures = scale.main(["--quick"])
    assert figures["big_rules"] == 200
    assert figures["small_rules"] == 10
    # Only the request's kind is a candidate, whatever the bundle size.
    assert figures["decide_candidates_big"] == figures["decide_candidates_small"] == 10
    assert figures["load_s_median"] > 0
    assert figures["rss_after_load_mb"] > 0
    assert figures["decide_ratio"] > 0
    names = [t.name for t in scale.targets(figures)]
    assert names == [
        "decision cost, 200 rules over 20 kinds vs 10 rules",
        "loading 200 rules",
        "RSS with 200 rules loaded",
    ]
