"""`make bench`: every performance target of signoff, measured in one run, with PASS/FAIL.

Runs each benchmark module of SECTIONS in order; each hands back a `bench.targets.Section`
(its targets, its tables, its raw data). Prints every target with its verdict and measured
ratio, writes bench/results/latest.{md,json}, draws the gRPC chart (from the first section whose
data has "grpc" rows) and refreshes the results section of docs/performance.md.

    python -m bench.run                       # = make bench; several minutes
    python -m bench.run --only approvals      # some sections only (the doc is left alone)
    python -m bench.run --quick --no-doc --results /tmp/x   # every section at tiny sizes

A section that raises is reported as a FAIL target naming the error, the other sections still
run, and the command exits 1: a run that could not measure fails; a missed target only reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.targets import Section, SectionFn, Target

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
CHART_NAME = "performance.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# The benchmark modules `make bench` runs, in this order; each defines
# `section(quick: bool = False) -> bench.targets.Section`. Cheap, self-contained ones first.
SECTIONS: list[str] = [
    "inprocess",
    "embedded",
    "scale",
    "masking",
    "approvals",
    "vs_cerbos",
    "client_transport",
    "observability",
]


@dataclass(frozen=True)
class Ran:
    """One section as run: its module, what it handed back, how long it took, its error."""

    module: str
    section: Section
    seconds: float
    error: str = ""


def run_section(name: str, quick: bool) -> Ran:
    """bench.<name>.section(quick); an exception becomes one FAIL target naming it."""
    began = time.monotonic()
    try:
        fn: SectionFn = importlib.import_module(f"bench.{name}").section
        got = fn(quick)
    # Any error: reported as a FAIL target, the other sections still run, the command exits 1.
    except Exception as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        failed = Target(f"{name}: the benchmark ran to completion", error, "no error", False)
        return Ran(name, Section(title=name, targets=[failed]), time.monotonic() - began, error)
    return Ran(name, got, time.monotonic() - began)


def targets_table(runs: list[Ran]) -> str:
    lines = [
        "| section | target | measured | limit | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        for t in r.section.targets:
            verdict = "PASS" if t.passed else "**FAIL**"
            lines.append(f"| {r.section.title} | {t.name} | {t.measured} | {t.limit} | {verdict} |")
    return "\n".join(lines)


def grpc_rows(runs: list[Ran]) -> list[dict[str, Any]]:
    """The gRPC comparison rows for the chart: the first section's data["grpc"], if any."""
    for r in runs:
        rows = r.section.data.get("grpc")
        if rows:
            return list(rows)
    return []


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Throughput and server CPU per check against concurrency, per system and shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    systems = sorted({r["system"] for r in rows}, key=lambda s: (s != "cerbos", s))
    shapes = sorted({r["shape"] for r in rows})
    styles = ["-o", "--s", ":^", "-.v"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, system in enumerate(systems):
        colour = colours[n % len(colours)]  # one colour a system, one line style a shape
        for shape, style in zip(shapes, styles * len(shapes), strict=False):
            mine = sorted(
                (r for r in rows if r["system"] == system and r["shape"] == shape),
                key=lambda r: int(r["concurrency"]),
            )
            if not mine:
                continue
            x = [r["concurrency"] for r in mine]
            label = f"{system} {shape}"
            left.plot(x, [r["checks_per_s"] for r in mine], style, color=colour, label=label)
            right.plot(
                x, [r["server_cpu_us_per_check"] for r in mine], style, color=colour, label=label
            )
    left.set(
        xlabel="concurrent callers", ylabel="checks / s", title="Throughput (higher is better)"
    )
    right.set(
        xlabel="concurrent callers",
        ylabel="server CPU µs / check",
        title="Server CPU per check (lower is better)",
    )
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("signoff vs Cerbos, same 2-core machine, same load generator, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(runs: list[Ran], header: str, chart_link: str | None) -> str:
    """The results section: the header, every target in one table, each section's tables."""
    parts = [header, "### Targets", targets_table(runs)]
    for r in runs:
        if r.section.markdown:
            parts += [f"### {r.section.title}", r.section.markdown.strip()]
    if chart_link:
        parts.append(f"![throughput and CPU per check vs concurrency]({chart_link})")
    return "\n\n".join(parts)


def update_doc(doc: Path, section: str) -> None:
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{doc} has no {START} ... {END} section")
    doc.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text), encoding="utf-8")


def verdict_line(t: Target, width: int) -> str:
    return f"{'PASS' if t.passed else 'FAIL'}  {t.name:<{width}}  {t.measured}  ({t.limit})"


def _strict(value: Any) -> Any:
    """`value` as strict JSON can carry it: a non-finite number (a latency never answered)
    becomes its name, "inf" or "nan", instead of JavaScript's Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every section at tiny sizes")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/performance.md as is")
    parser.add_argument("--results", type=Path, help="where latest.{md,json} go")
    args = parser.parse_args(argv)
    # Quick figures and partial runs say nothing about performance: they never replace the
    # published results unless a results directory is named explicitly.
    partial = args.quick or bool(args.only)
    results: Path = args.results or (
        Path(tempfile.mkdtemp(prefix="signoff-bench-")) if partial else RESULTS
    )
    write_doc = not (args.no_doc or partial)
    began = time.monotonic()
    runs: list[Ran] = []
    for name in args.only or SECTIONS:
        print(f"\n== {name}{' (quick)' if args.quick else ''}", flush=True)
        ran = run_section(name, args.quick)
        runs.append(ran)
        width = max((len(t.name) for t in ran.section.targets), default=0)
        for t in ran.section.targets:
            print(verdict_line(t, width), flush=True)
        print(f"   ({ran.seconds:.0f} s)", flush=True)

    results.mkdir(parents=True, exist_ok=True)
    rows = grpc_rows(runs)
    chart_path = (DOC.parent if write_doc else results) / CHART_NAME
    if rows:
        chart(rows, chart_path)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    command = "make bench" if not argv else "python -m bench.run " + " ".join(argv)
    header = (
        f"Measured {stamp} on {machine} by `{command}`"
        f"{' (QUICK sizes: checks the benchmarks run, not performance)' if args.quick else ''}. "
        "Ratios are taken within this run (A B A B, medians); load generators and servers "
        "share the cores."
    )

    def link(frm: Path) -> str | None:
        return os.path.relpath(chart_path, frm) if rows else None

    (results / "latest.md").write_text(render(runs, header, link(results)) + "\n", "utf-8")
    document = {
        "measured": stamp,
        "machine": machine,
        "command": command,
        "quick": args.quick,
        "targets": [{"section": r.module, **asdict(t)} for r in runs for t in r.section.targets],
        "sections": {
            r.module: {
                "title": r.section.title,
                "seconds": round(r.seconds, 1),
                "error": r.error,
                "data": r.section.data,
            }
            for r in runs
        },
    }
    (results / "latest.json").write_text(json.dumps(_strict(document), indent=2) + "\n", "utf-8")
    if write_doc:
        update_doc(DOC, render(runs, header, link(DOC.parent)))

    found = [t for r in runs for t in r.section.targets]
    width = max((len(t.name) for t in found), default=0)
    print("\n== targets")
    for t in found:
        print(verdict_line(t, width))
    passed = sum(t.passed for t in found)
    print(f"\n{passed} of {len(found)} targets pass; wrote {results}/latest.{{md,json}}", end="")
    print(f"{', ' + str(chart_path) if rows else ''}{', ' + str(DOC) if write_doc else ''}")
    print(f"total {time.monotonic() - began:.0f} s", file=sys.stderr)
    failed = [r.module for r in runs if r.error]
    if failed:
        print(f"could not measure: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
