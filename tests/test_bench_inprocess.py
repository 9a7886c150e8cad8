"""bench/inprocess.py in quick mode: it runs and every answer agrees with the workload's."""

from __future__ import annotations

from bench import inprocess


def test_the_inprocess_benchmark_runs_quickly_with_every_answer_checked() -> None:
    result = inprocess.section(quick=True)
    [target] = result.targets
    assert "vs cedarpy" in target.name
    assert [f["workload"] for f in result.data["figures"]] == ["all cases", "hot case"]
    assert all(f["signoff_us"] > 0 and f["cedar_us"] > 0 for f in result.data["figures"])
