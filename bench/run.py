"""`make bench`: every performance target of signoff, measured in one run, with PASS/FAIL.

Runs, in order: signoff's engine against cedarpy in-process; the 10,000-rule bundle (load time,
memory, decision cost against 10 rules); the approval path at 16 concurrent callers; and
signoff against Cerbos over gRPC, alternating A B A B with the same load generator. Prints the
targets with their measured ratios, writes everything to bench/results/ and the chart to
docs/performance.png, and refreshes the results section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import approvals, inprocess, scale, vs_cerbos

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CHART = REPO / "docs" / "performance.png"
DOC = REPO / "docs" / "performance.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    passed: bool


def _row(rows: list[dict[str, Any]], system: str, shape: str, conc: int) -> dict[str, Any]:
    for r in rows:
        if (r["system"], r["shape"], r["concurrency"]) == (system, shape, conc):
            return r
    raise KeyError(f"no measurement for {system} {shape} at concurrency {conc}")


def targets(
    grpc_rows: list[dict[str, Any]],
    cedar: list[dict[str, Any]],
    big: dict[str, float],
    approval: dict[str, dict[str, float]],
    conc: int,
) -> list[Target]:
    out = []
    cerbos = _row(grpc_rows, "cerbos", "1x3", conc)
    for system in ("signoff", "signoff-2proc"):
        s = _row(grpc_rows, system, "1x3", conc)
        cpu = s["server_cpu_us_per_check"] / cerbos["server_cpu_us_per_check"]
        rps = s["requests_per_s"] / cerbos["requests_per_s"]
        out += [
            Target(
                f"unary 1x3, CPU per check vs Cerbos ({system})",
                f"{s['server_cpu_us_per_check']:.0f} vs {cerbos['server_cpu_us_per_check']:.0f}"
                f" µs = {cpu:.2f}x",
                "<= 0.5x",
                cpu <= 0.5,
            ),
            Target(
                f"unary 1x3, throughput at concurrency {conc} vs Cerbos ({system})",
                f"{s['requests_per_s']:.0f} vs {cerbos['requests_per_s']:.0f} req/s = {rps:.2f}x",
                ">= 1.5x",
                rps >= 1.5,
            ),
        ]
    batch = min(
        (_row(grpc_rows, system, "20x3", conc) for system in ("signoff", "signoff-2proc")),
        key=lambda r: float(r["server_cpu_us_per_check"]),
    )
    out.append(
        Target(
            f"CheckBatch of 60, server CPU per check ({batch['system']})",
            f"{batch['server_cpu_us_per_check']:.1f} µs",
            "<= 15 µs",
            batch["server_cpu_us_per_check"] <= 15,
        )
    )
    every = next(f for f in cedar if f["workload"] == "all cases")
    ratio = every["signoff_over_cedar"]
    out.append(
        Target(
            "in-process decision, 30 rules, vs cedarpy",
            f"{every['signoff_us']:.1f} vs {every['cedar_us']:.1f} µs = {ratio:.2f}x",
            "<= 0.5x",
            ratio <= 0.5,
        )
    )
    out += [
        Target(
            "decision cost, 10,000 rules over 1,000 kinds vs 10 rules",
            f"{big['decide_cpu_us_big']:.1f} vs {big['decide_cpu_us_small']:.1f} µs CPU = "
            f"{big['decide_ratio']:.2f}x",
            f"<= {scale.MAX_DECISION_RATIO}x",
            bool(big["pass_decide_ratio"]),
        ),
        Target(
            "loading 10,000 rules",
            f"{big['load_s_median']:.2f} s",
            f"<= {scale.MAX_LOAD_SECONDS:.0f} s",
            bool(big["pass_load_time"]),
        ),
        Target(
            "RSS with 10,000 rules loaded",
            f"{big['rss_after_load_mb']:.0f} MB",
            f"<= {scale.MAX_RSS_MB:.0f} MB",
            bool(big["pass_rss"]),
        ),
    ]
    for phase, label in (("pending", "Check->pending"), ("approve", "Approve")):
        p = approval[phase]
        out.append(
            Target(
                f"approval path, {label} p99 at 16 callers",
                f"{p['p99_ms']:.1f} ms (p50 {p['p50_ms']:.1f}, {p['calls_per_s']:.0f}/s)",
                "<= 5 ms",
                p["p99_ms"] <= 5.0,
            )
        )
    return out


def targets_table(found: list[Target]) -> str:
    lines = ["| target | measured | limit | result |", "| --- | --- | --- | --- |"]
    for t in found:
        lines.append(f"| {t.name} | {t.measured} | {t.limit} | {'PASS' if t.passed else 'FAIL'} |")
    return "\n".join(lines)


def grpc_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| concurrency | shape | system | requests/s | checks/s | p50 ms | p99 ms "
        "| server CPU µs/check | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['shape']} | {r['system']} | {r['requests_per_s']:.0f} "
            f"| {r['checks_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['server_cpu_us_per_check']:.1f} | {r['errors']} |"
        )
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Throughput and server CPU per check against concurrency, per system and shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    systems = sorted({r["system"] for r in rows}, key=lambda s: (s != "cerbos", s))
    for system in systems:
        for shape, style in (("1x3", "-o"), ("20x3", "--s")):
            mine = sorted(
                (r for r in rows if r["system"] == system and r["shape"] == shape),
                key=lambda r: int(r["concurrency"]),
            )
            if not mine:
                continue
            x = [r["concurrency"] for r in mine]
            label = f"{system} {shape}"
            left.plot(x, [r["checks_per_s"] for r in mine], style, label=label)
            right.plot(x, [r["server_cpu_us_per_check"] for r in mine], style, label=label)
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
    right.legend(fontsize=8)
    fig.suptitle("signoff vs Cerbos, same 2-core machine, same load generator, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_doc(section: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{DOC} has no {START} ... {END} section")
    DOC.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-doc", action="store_true", help="leave docs/performance.md as is")
    args = parser.parse_args(argv)
    conc = max(args.concurrency)
    began = time.monotonic()
    print("== in-process: signoff engine vs cedarpy", flush=True)
    cedar = inprocess.main([])
    print("\n== 10,000 rules over 1,000 kinds vs 10 rules", flush=True)
    big = scale.run()
    print(scale.report(big), flush=True)
    print("\n== approval path, 16 concurrent callers", flush=True)
    approval = approvals.measure(16, 50)
    print(json.dumps(approval, indent=2), flush=True)
    print("\n== signoff vs Cerbos over gRPC", flush=True)
    grpc_rows = vs_cerbos.main(
        [
            "--concurrency",
            *map(str, args.concurrency),
            "--rounds",
            str(args.rounds),
            "--seconds",
            str(args.seconds),
        ]
    )
    found = targets(grpc_rows, cedar, big, approval, conc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(grpc_rows, CHART)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    command = "make bench"
    section = "\n\n".join(
        [
            f"Measured {stamp} on {machine} by `{command}` "
            f"({args.rounds} alternating rounds of {args.seconds:.0f} s per setting, medians; "
            "load generator and servers share the cores).",
            "### Targets",
            targets_table(found),
            "### signoff vs Cerbos over gRPC",
            grpc_table(grpc_rows),
            "![throughput and CPU per check vs concurrency](performance.png)",
        ]
    )
    (RESULTS / "latest.md").write_text(section + "\n", encoding="utf-8")
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "measured": stamp,
                "machine": machine,
                "targets": [t.__dict__ for t in found],
                "grpc": grpc_rows,
                "inprocess": cedar,
                "scale": big,
                "approvals": approval,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    if not args.no_doc:
        update_doc(section)
    print("\n== targets")
    width = max(len(t.name) for t in found)
    for t in found:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name:<{width}}  {t.measured}  ({t.limit})")
    print(f"\nwrote {RESULTS / 'latest.md'}, {RESULTS / 'latest.json'}, {CHART}")
    print(f"total {time.monotonic() - began:.0f} s", file=sys.stderr)
    # The benchmark reports; it does not gate. A run that could not measure fails instead.
    return 0


if __name__ == "__main__":
    sys.exit(main())
