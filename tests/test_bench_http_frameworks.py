"""bench/http_frameworks.py's quick mode: Starlette and FastAPI both answer right and are measured."""

from __future__ import annotations

import math

from bench import http_frameworks


def test_quick_benchmark_measures_starlette_and_fastapi() -> None:
    # main() checks every answer (allow true, deny false, malformed 4xx) and raises otherwise.
    result = http_frameworks.main(["--quick"])
    for name in ("starlette", "fastapi"):
        assert result[name]["requests_per_s"] > 0
        assert math.isfinite(result[name]["server_cpu_us_per_request"])
    assert result["fastapi_over_starlette_cpu"] > 0
