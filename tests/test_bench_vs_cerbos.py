"""The server comparison benchmark's quick mode runs end to end and checks every answer."""

from __future__ import annotations

from bench import vs_cerbos


def test_quick_vs_cerbos_bench_measures_every_shape_with_right_answers() -> None:
    # Quick mode checks the answers to every load payload (repeated and distinct) before
    # timing, and a wrong answer raises; every measured call must succeed too.
    result = vs_cerbos.section(quick=True)
    rows = result.data["grpc"]
    assert rows
    assert all(r["ok"] for r in rows)
    assert {r["shape"] for r in rows} == {"check", "1x3", "20x3", "20x3-distinct"}
    assert {"signoff", "echo"} <= {r["system"] for r in rows}
    names = [t.name for t in result.targets]
    assert any(n.startswith("unary Check, server CPU per request vs bare gRPC echo") for n in names)
    if any(r["system"] == "cerbos" for r in rows):  # skipped only when npm cannot install it
        assert len(names) == 3
    for target in result.targets:
        assert target.measured.endswith("x")
