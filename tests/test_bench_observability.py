"""The tracing and audit overhead benchmark's quick mode runs end to end with real exports."""

from __future__ import annotations

from bench import observability


def test_quick_observability_bench_exports_spans_and_compares_throughput() -> None:
    # A wrong verdict or a failed call raises; no span at the collector raises too.
    result = observability.section(quick=True)
    data = result.data["observability"]
    assert data["spans_received"] > 0
    assert set(data["medians"]) == {"on", "off"}
    (target,) = result.targets
    assert target.limit == ">= 0.85x"
    assert data["throughput_ratio"] > 0
    assert set(data["encoding"]) == {"make_us", "sdk_encode_us", "encode_us"}
