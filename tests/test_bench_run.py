"""`python -m bench.run`: every section's targets reported, results where asked, errors fail."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bench import run
from bench.targets import Section, Target

REPO = Path(__file__).resolve().parent.parent


def test_quick_run_reports_every_sections_targets_and_writes_only_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = {p: p.read_bytes() for p in (run.DOC, run.RESULTS / "latest.md")}

    code = run.main(["--quick", "--no-doc", "--results", str(tmp_path)])

    out = capsys.readouterr().out
    assert code == 0, out
    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["quick"] is True
    assert list(document["sections"]) == run.SECTIONS
    assert all(not s["error"] for s in document["sections"].values())
    for name in run.SECTIONS:
        mine = [t for t in document["targets"] if t["section"] == name]
        assert mine, f"{name} reported no target"
        for t in mine:
            assert f"{'PASS' if t['passed'] else 'FAIL'}  {t['name']}" in out
    markdown = (tmp_path / "latest.md").read_text()
    assert "QUICK sizes" in markdown
    assert markdown.count("| PASS |") + markdown.count("| **FAIL** |") == len(document["targets"])
    # The gRPC comparison's rows reach the chart (its section hands them over as "grpc").
    assert f"]({run.CHART_NAME})" in markdown
    # Quick figures never replace the published ones.
    assert {p: p.read_bytes() for p in published} == published


def _module(monkeypatch: pytest.MonkeyPatch, name: str, section: object) -> None:
    module = types.ModuleType(f"bench.{name}")
    module.section = section  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"bench.{name}", module)


def test_a_section_that_raises_is_a_fail_target_and_the_run_exits_1_after_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(quick: bool = False) -> Section:
        raise RuntimeError("server did not start")

    def fine(quick: bool = False) -> Section:
        return Section("Fine", [Target("fine target", "1.0x", "<= 2x", True)], "| a |")

    _module(monkeypatch, "t_broken", broken)
    _module(monkeypatch, "t_fine", fine)
    monkeypatch.setattr(run, "SECTIONS", ["t_broken", "t_fine"])

    code = run.main(["--quick", "--results", str(tmp_path)])

    assert code == 1
    document = json.loads((tmp_path / "latest.json").read_text())
    first, second = document["targets"]
    assert first["section"] == "t_broken"
    assert first["passed"] is False
    assert first["measured"] == "RuntimeError: server did not start"
    assert second == {
        "section": "t_fine",
        "name": "fine target",
        "measured": "1.0x",
        "limit": "<= 2x",
        "passed": True,
    }
    assert document["sections"]["t_broken"]["error"] == "RuntimeError: server did not start"


ROWS = [
    {
        "system": system,
        "shape": shape,
        "concurrency": c,
        "checks_per_s": 1000.0 * c,
        "server_cpu_us_per_check": 50.0,
    }
    for system in ("signoff", "cerbos")
    for shape in ("1x3", "20x3")
    for c in (1, 8, 32)
]


def test_the_chart_is_drawn_from_the_first_section_with_grpc_rows_and_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    _module(monkeypatch, "t_plain", lambda quick=False: Section("Plain", data={"x": 1}))
    _module(monkeypatch, "t_grpc", lambda quick=False: Section("gRPC", data={"grpc": ROWS}))
    monkeypatch.setattr(run, "SECTIONS", ["t_plain", "t_grpc"])

    assert run.main(["--quick", "--results", str(tmp_path)]) == 0

    png = (tmp_path / run.CHART_NAME).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert f"]({run.CHART_NAME})" in (tmp_path / "latest.md").read_text()


def test_results_are_strict_json_even_with_a_call_never_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    never = {"p99_ms": float("inf"), "rows": [float("nan"), 1.5]}
    _module(monkeypatch, "t_inf", lambda quick=False: Section("Inf", data={"x": never}))
    monkeypatch.setattr(run, "SECTIONS", ["t_inf"])

    assert run.main(["--quick", "--results", str(tmp_path)]) == 0

    text = (tmp_path / "latest.json").read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert document["sections"]["t_inf"]["data"]["x"] == {"p99_ms": "inf", "rows": ["nan", 1.5]}


def test_no_grpc_rows_means_no_chart_and_no_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(monkeypatch, "t_plain", lambda quick=False: Section("Plain", data={"x": 1}))
    monkeypatch.setattr(run, "SECTIONS", ["t_plain"])

    assert run.main(["--quick", "--results", str(tmp_path)]) == 0

    assert not (tmp_path / run.CHART_NAME).exists()
    assert "![" not in (tmp_path / "latest.md").read_text()


def test_the_doc_is_rewritten_only_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"intro\n{run.START}\nold\n{run.END}\nafter\n")

    run.update_doc(doc, "new table")

    assert doc.read_text() == f"intro\n{run.START}\nnew table\n{run.END}\nafter\n"
    doc.write_text("no markers")
    with pytest.raises(RuntimeError, match="results:start"):
        run.update_doc(doc, "x")


def test_the_published_doc_keeps_its_results_markers() -> None:
    text = run.DOC.read_text()
    assert text.count(run.START) == 1
    assert text.count(run.END) == 1
    assert text.index(run.START) < text.index(run.END)
