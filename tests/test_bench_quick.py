"""Every bench script has a quick mode that a test runs, so no change can silently break one.

A script (a bench/*.py with a top-level `main`) is reached through `make bench`'s list
(bench.run.SECTIONS: tests/test_bench_run.py runs every section at quick size), through
STANDALONE below (the test that runs its `main --quick`), or both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench import run

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

# Scripts whose `main --quick` a test runs directly -> that test.
STANDALONE = {
    "approvals": "tests/test_bench_approvals.py",
    "cerbos": "tests/test_bench_cerbos.py",
    "decision": "tests/test_bench_decision.py",
    "fuzz_grpc": "tests/server/test_fuzz_grpc.py",
    "http_frameworks": "tests/test_bench_http_frameworks.py",
    "http_vs_grpc": "tests/http/test_http_gateway_bench.py",
    "run": "tests/test_bench_run.py",
    "scale": "tests/test_bench_scale.py",
}
# Servers a benchmark starts as a process, not benchmarks: -> the section whose quick mode
# starts them (and so runs their `main`).
SERVERS = {"echo": "vs_cerbos"}


def _tree(name: str) -> ast.Module:
    return ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))


def _defines(tree: ast.Module, function: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)


def _has_quick_flag(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "add_argument"
        and any(isinstance(a, ast.Constant) and a.value == "--quick" for a in n.args)
        for n in ast.walk(tree)
    )


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if _defines(_tree(p.stem), "main"))


def test_the_scripts_are_found() -> None:
    assert {"approvals", "run", "scale", "decision"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_bench_script_has_a_quick_mode_and_a_test_that_runs_it(name: str) -> None:
    if name in SERVERS:
        assert SERVERS[name] in run.SECTIONS
        assert f"bench.{name}" in (BENCH / f"{SERVERS[name]}.py").read_text(encoding="utf-8")
        return
    tree = _tree(name)
    assert _has_quick_flag(tree), f"bench/{name}.py has a main() but no --quick mode"
    in_sections = name in run.SECTIONS
    assert in_sections or name in STANDALONE, (
        f"no test runs bench/{name}.py's quick mode: add it to bench.run.SECTIONS (with a "
        f"section()) or to STANDALONE in {Path(__file__).name} with the test that runs it"
    )
    if name in STANDALONE:
        test = REPO / STANDALONE[name]
        source = test.read_text(encoding="utf-8")
        assert f"from bench import {name}" in source or f"bench.{name}" in source, test
        assert "quick" in source, f"{test} does not run bench/{name}.py's quick mode"


@pytest.mark.parametrize("name", run.SECTIONS)
def test_every_make_bench_section_defines_section_and_a_quick_main(name: str) -> None:
    tree = _tree(name)
    assert _defines(tree, "section"), f"bench/{name}.py is in SECTIONS but has no section()"
    assert _defines(tree, "main"), f"bench/{name}.py: no main()"
    assert _has_quick_flag(tree), f"bench/{name}.py: main() has no --quick"
