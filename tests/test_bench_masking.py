"""bench/masking.py's quick mode: every way of masking agrees, and every figure is measured."""

from __future__ import annotations

import math

import pytest

from bench import masking


def test_quick_benchmark_checks_every_answer_and_measures_rows_and_columns() -> None:
    pytest.importorskip("pyarrow")  # the dev extra installs it, so the suite runs the columns
    # section() asserts that apply_mask, the compiled plan, the reference algorithm and the
    # hand-written masker give the same rows, and mask_column the row path's values.
    result = masking.main(["--quick"])
    assert [t.name.split(",")[0] for t in result.targets] == [
        "apply_mask",
        "columnar masking (pyarrow)",
    ]
    for mix in result.data["rows"]["mixes"].values():
        assert all(math.isfinite(v) and v > 0 for v in mix["ns_per_row"].values())
    rates = result.data["columns"]["operators"]
    assert set(rates) >= set(masking.VECTORISED)
    assert all(r["million_values_per_cpu_s"] > 0 for r in rates.values())
    assert "| EMAIL + PARTIAL + REDACT | apply_mask(rows) |" in result.markdown
