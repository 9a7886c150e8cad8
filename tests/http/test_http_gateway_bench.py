"""bench/http_vs_grpc.py's quick mode: both faces answer ALLOW and report throughput and CPU."""

from __future__ import annotations

import math

from bench import http_vs_grpc


def test_quick_benchmark_measures_both_faces() -> None:
    result = http_vs_grpc.main(["--quick"])
    for face in ("http", "grpc"):
        assert result[face]["decisions_per_s"] > 0
        assert math.isfinite(result[face]["server_cpu_us_per_decision"])
