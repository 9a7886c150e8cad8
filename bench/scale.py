"""Scale check: load time, RSS and per-decision cost of a 10,000-rule bundle vs a 10-rule one."""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bench.targets import Section, Target

KINDS_PER_FILE = 100
RULES_PER_KIND = 10
ACTIONS = ["read", "export", "write", "delete", "grant"]
REQUEST_KIND = 0  # the kind every measured request is about (present in both bundles)
CLOCK = dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC)

# Targets from the performance issue.
MAX_DECISION_RATIO = 1.3
MAX_LOAD_SECONDS = 3.0
MAX_RSS_MB = 250.0

T = TypeVar("T")


def kind_name(k: int) -> str:
    return f"table_{k:04d}"


def _rules_for_kind(k: int, count: int, unique: bool = False) -> list[dict[str, Any]]:
    """`count` rules for kind `k`: role selectors, attribute conditions, every effect.

    The rules of a kind depend only on `k`, so kind 0 is identical in every bundle size. About
    half the conditions are the same guard in every policy, as in a real bundle; `unique`
    makes every condition text distinct (a worst case for the loader).
    """
    threshold = 1000 + 37 * k
    level = 1 + k % 4
    templates: list[tuple[str, list[str], str]] = [
        ("deny", [], "principal.attr.tenant != resource.attr.tenant"),
        ("allow", ["analyst", "data_steward"], "principal.attr.mfa"),
        ("mask", ["pii_restricted"], f"resource.attr.rows > {threshold // 10}"),
        (
            "require_approval",
            ["analyst"],
            f"resource.attr.rows > {threshold} && principal.kind == 'agent'",
        ),
        (
            "deny",
            [],
            f"principal.attr.clearance < {level} && resource.attr.classification == 'secret'",
        ),
        ("allow", [], "now.getHours('UTC') >= 8 && now.getHours('UTC') < 20"),
        ("deny", [], f"has(context.attr.ticket) && context.attr.ticket == 'BLOCK-{k}'"),
        ("allow", ["data_steward"], "context.environment != 'prod' || principal.attr.mfa"),
        (
            "mask",
            [],
            "!('data_steward' in principal.roles) && resource.tags.exists(t, t.startsWith('pii.'))",
        ),
        (
            "require_approval",
            ["analyst", "data_steward"],
            f"action == 'delete' && resource.attr.rows > {threshold * 10}",
        ),
    ]
    rules: list[dict[str, Any]] = []
    for i in range(count):
        effect, roles, when = templates[i % len(templates)]
        rule: dict[str, Any] = {"id": f"r{i}", "effect": effect}
        if roles:
            rule["roles"] = roles
        rule["when"] = f"{when} && resource.id != 'k{k}r{i}'" if unique else when
        if effect == "mask":
            rule["mask"] = [
                {"tags": ["pii.email"], "operator": "email"},
                {"tags": ["pci.*"], "operator": "redact"},
            ]
        if effect == "require_approval":
            rule["approval"] = {
                "approvers": {"roles": ["data_steward"]},
                "quorum": 1 + i % 2,
                "pending_ttl": "8h",
                "grant_ttl": "30m",
            }
        if i % 3 == 0:
            rule["reason"] = f"{effect} on {kind_name(k)} (rule {i})"
        rules.append(rule)
    return rules


def write_bundle(
    root: Path, kinds: int, rules_per_kind: int = RULES_PER_KIND, *, unique: bool = False
) -> int:
    """A bundle of `kinds` x `rules_per_kind` rules; returns the rule count.

    One shared schema file, one derived-roles file and one policy file per 100 kinds (one
    policy per kind), as a real bundle would be split.
    """
    root.mkdir(parents=True, exist_ok=True)
    schema = {
        "schema": {
            "principal": {"tenant": "string", "mfa": "bool", "clearance": "int", "owner": "string"},
            "resource": {"tenant": "string", "rows": "int", "classification": "string"},
            "context": {"ticket": "string"},
            "payload": {"row_limit": "int"},
        }
    }
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    roles = {
        "derived_roles": [
            {
                "name": "pii_restricted",
                "description": "An analyst who is not also a data steward.",
                "parent_roles": ["analyst"],
                "when": "!('data_steward' in principal.roles)",
            }
        ]
    }
    (root / "roles.yaml").write_text(yaml.safe_dump(roles, sort_keys=False))
    total = 0
    for first in range(0, kinds, KINDS_PER_FILE):
        policies = []
        for k in range(first, min(first + KINDS_PER_FILE, kinds)):
            rules = _rules_for_kind(k, rules_per_kind, unique)
            total += len(rules)
            policies.append(
                {
                    "id": kind_name(k).replace("_", "-"),
                    "description": f"Access to {kind_name(k)}.",
                    "resources": [kind_name(k)],
                    "actions": ACTIONS,
                    "rules": rules,
                }
            )
        name = f"tables_{first // KINDS_PER_FILE:03d}.yaml"
        (root / name).write_text(yaml.safe_dump({"policies": policies}, sort_keys=False))
    return total


def _request() -> Any:
    from signoff.engine.model import (
        Context,
        FieldRef,
        Principal,
        PrincipalKind,
        Request,
        Resource,
    )

    return Request(
        principal=Principal(
            "alice@acme.io",
            PrincipalKind.HUMAN,
            ("analyst",),
            {"tenant": "acme", "mfa": True, "clearance": 3},
        ),
        action="export",
        resource=Resource(
            kind_name(REQUEST_KIND),
            "crm.customers",
            {"tenant": "acme", "rows": 500, "classification": "internal"},
            (FieldRef("rows.*.email", ("pii.email",)), FieldRef("rows.*.card", ("pci.pan",))),
        ),
        context=Context(environment="prod", attributes={"ticket": "OPS-1"}),
    )


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found")


# --- run in fresh subprocesses ---------------------------------------------------------------


def _load_once(bundle: str, backend: str) -> dict[str, float]:
    """Subprocess: import, note RSS, time one load, note RSS with the bundle held."""
    from signoff.policy.loader import load_bundle

    rss_before = _rss_kb()
    start, cpu = time.perf_counter(), time.process_time()
    loaded = load_bundle(bundle, backend=backend)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_after = _rss_kb()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mb": rss_before / 1024,
        "rss_after_mb": rss_after / 1024,
        "rules": float(loaded.rule_count),
    }


def _decide(bundle: str, backend: str, n: int, repeats: int) -> dict[str, Any]:
    """Subprocess: load, warm, then `repeats` samples of µs per `Engine.decide` over `n` calls."""
    from signoff.engine.evaluator import Engine
    from signoff.policy.loader import load_bundle

    engine = Engine(load_bundle(bundle, backend=backend), clock=lambda: CLOCK)
    req = _request()
    for _ in range(min(n, 500)):
        engine.decide(req)  # warm the candidate index and the runtime
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(n):
            engine.decide(req)
        wall.append((time.perf_counter() - start) / n * 1e6)
        cpu.append((time.process_time() - cpu_start) / n * 1e6)
    return {
        "wall": wall,
        "cpu": cpu,
        "candidates": len(engine.candidates(req.resource.kind, req.action)),
        "verdict": engine.decide(req).verdict.name,
    }


def _fresh(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in a newly spawned interpreter."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def run(
    *,
    backend: str = "cel-expr",
    big_kinds: int = 1000,
    load_runs: int = 3,
    decisions: int = 5000,
    repeats: int = 7,
    rounds: int = 1,
    unique: bool = False,
) -> dict[str, float]:
    """Every figure of the scale check, keyed by name (for a results table).

    Decision timing: `rounds` x (one fresh process per bundle, alternating), each taking
    `repeats` samples of `decisions` calls; medians are over all samples. The decision target
    is judged on CPU time per decision, which other load on the machine disturbs far less
    than wall time; the load target on wall time (both are reported).
    """
    with tempfile.TemporaryDirectory() as tmp:
        small_dir, big_dir = Path(tmp, "small"), Path(tmp, "big")
        small_rules = write_bundle(small_dir, 1, unique=unique)
        big_rules = write_bundle(big_dir, big_kinds, unique=unique)
        loads = [_fresh(_load_once, str(big_dir), backend) for _ in range(load_runs)]
        small: dict[str, list[float]] = {"wall": [], "cpu": []}
        big: dict[str, list[float]] = {"wall": [], "cpu": []}
        verdicts, candidates = set(), {}
        for _ in range(rounds):
            for label, where, into in (("small", small_dir, small), ("big", big_dir, big)):
                got = _fresh(_decide, str(where), backend, decisions, repeats)
                into["wall"] += got["wall"]
                into["cpu"] += got["cpu"]
                verdicts.add(got["verdict"])
                candidates[label] = float(got["candidates"])
    if len(verdicts) != 1:
        raise RuntimeError(f"the two bundles decide differently: {sorted(verdicts)}")
    load_s = statistics.median(x["seconds"] for x in loads)
    rss_after = max(x["rss_after_mb"] for x in loads)
    med = statistics.median
    ratio = med(big["cpu"]) / med(small["cpu"])
    return {
        "small_rules": float(small_rules),
        "big_rules": float(big_rules),
        "big_kinds": float(big_kinds),
        "unique_conditions": float(unique),
        "load_s_median": load_s,
        "load_s_min": min(x["seconds"] for x in loads),
        "load_s_max": max(x["seconds"] for x in loads),
        # CPU time of the loading process: steadier than wall time on a shared machine.
        "load_cpu_s_median": statistics.median(x["cpu_seconds"] for x in loads),
        "rss_before_load_mb": statistics.median(x["rss_before_mb"] for x in loads),
        "rss_after_load_mb": rss_after,
        "decide_us_small": med(small["wall"]),
        "decide_us_big": med(big["wall"]),
        "decide_cpu_us_small": med(small["cpu"]),
        "decide_cpu_us_big": med(big["cpu"]),
        "decide_candidates_small": candidates["small"],
        "decide_candidates_big": candidates["big"],
        "decide_ratio": ratio,
        "decide_wall_ratio": med(big["wall"]) / med(small["wall"]),
        "pass_decide_ratio": float(ratio <= MAX_DECISION_RATIO),
        "pass_load_time": float(load_s <= MAX_LOAD_SECONDS),
        "pass_rss": float(rss_after <= MAX_RSS_MB),
    }


def report(r: dict[str, float]) -> str:
    def verdict(key: str) -> str:
        return "PASS" if r[key] else "FAIL"

    big, small = int(r["big_rules"]), int(r["small_rules"])
    lines = [
        f"bundles: {big} rules over {int(r['big_kinds'])} kinds; {small} rules over 1 kind"
        + (" (every condition distinct)" if r.get("unique_conditions") else ""),
        f"load {big} rules: median {r['load_s_median']:.2f} s "
        f"(min {r['load_s_min']:.2f}, max {r['load_s_max']:.2f}; "
        f"CPU {r['load_cpu_s_median']:.2f} s)  "
        f"target <= {MAX_LOAD_SECONDS:.1f} s  {verdict('pass_load_time')} "
        f"({r['load_s_median'] / MAX_LOAD_SECONDS:.2f}x of budget)",
        f"RSS with {big} rules loaded: {r['rss_after_load_mb']:.0f} MB "
        f"(before load {r['rss_before_load_mb']:.0f} MB)  target <= {MAX_RSS_MB:.0f} MB  "
        f"{verdict('pass_rss')} ({r['rss_after_load_mb'] / MAX_RSS_MB:.2f}x of budget)",
        f"decide (CPU, wall µs/decision): {r['decide_cpu_us_small']:.1f}, "
        f"{r['decide_us_small']:.1f} with {small} rules "
        f"({int(r['decide_candidates_small'])} candidates); {r['decide_cpu_us_big']:.1f}, "
        f"{r['decide_us_big']:.1f} with {big} rules "
        f"({int(r['decide_candidates_big'])} candidates)",
        f"decide ratio {r['decide_ratio']:.2f}x CPU (wall {r['decide_wall_ratio']:.2f}x)  "
        f"target <= {MAX_DECISION_RATIO}x  {verdict('pass_decide_ratio')}",
    ]
    return "\n".join(lines)


def targets(r: dict[str, float]) -> list[Target]:
    big, small = int(r["big_rules"]), int(r["small_rules"])
    return [
        Target(
            f"decision cost, {big:,} rules over {int(r['big_kinds']):,} kinds vs {small} rules",
            f"{r['decide_cpu_us_big']:.1f} vs {r['decide_cpu_us_small']:.1f} µs CPU = "
            f"{r['decide_ratio']:.2f}x",
            f"<= {MAX_DECISION_RATIO}x",
            bool(r["pass_decide_ratio"]),
        ),
        Target(
            f"loading {big:,} rules",
            f"{r['load_s_median']:.2f} s = {r['load_s_median'] / MAX_LOAD_SECONDS:.2f}x of limit",
            f"<= {MAX_LOAD_SECONDS:.0f} s",
            bool(r["pass_load_time"]),
        ),
        Target(
            f"RSS with {big:,} rules loaded",
            f"{r['rss_after_load_mb']:.0f} MB = "
            f"{r['rss_after_load_mb'] / MAX_RSS_MB:.2f}x of limit",
            f"<= {MAX_RSS_MB:.0f} MB",
            bool(r["pass_rss"]),
        ),
    ]


def run_quick(**options: Any) -> dict[str, float]:
    """`run` at tiny sizes for the test suite: every step (fresh processes, both bundles, the
    verdict check) in a few seconds."""
    return run(big_kinds=20, load_runs=1, decisions=200, repeats=2, **options)


def section(quick: bool = False) -> Section:
    """The scale targets for `make bench` (quick: a 200-rule bundle, every step still run)."""
    figures = run_quick() if quick else run()
    return Section(
        title=f"Scale: {int(figures['big_rules']):,} rules",
        targets=targets(figures),
        markdown="```text\n" + report(figures) + "\n```\n\n`python -m bench.scale`",
        data={"scale": figures},
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="cel-expr")
    parser.add_argument("--kinds", type=int, default=1000, help="kinds in the big bundle")
    parser.add_argument("--rounds", type=int, default=1, help="alternating decide rounds")
    parser.add_argument(
        "--unique", action="store_true", help="make every condition text distinct (worst case)"
    )
    parser.add_argument("--write", type=Path, help="only write the big bundle here and exit")
    parser.add_argument("--quick", action="store_true", help="a 200-rule bundle: checks it runs")
    args = parser.parse_args(argv)
    if args.write:
        total = write_bundle(args.write, args.kinds, unique=args.unique)
        print(f"wrote {total} rules to {args.write}")
        return {"rules": float(total)}
    options = {"backend": args.backend, "rounds": args.rounds, "unique": args.unique}
    figures = run_quick(**options) if args.quick else run(big_kinds=args.kinds, **options)
    print(report(figures))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
