"""bench/embedded.py in quick mode: it runs, its answers are right, no record is lost."""

from __future__ import annotations

from bench import embedded


def test_the_embedded_benchmark_runs_quickly_with_right_answers_and_every_record() -> None:
    result = embedded.section(quick=True)
    data = result.data
    assert data["wrong"] == []
    assert data["decided"] > 0
    assert data["records_in_audit_trail"] == data["decided"]
    assert data["dropped"] == 0
    [target] = result.targets
    assert "vs cedarpy" in target.name
    assert "µs per decision" in result.markdown
