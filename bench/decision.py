"""Per-decision time in-process on a generated 30-rule bundle, median of repeated runs.

python bench/decision.py            # or `make bench-decision`
python -m bench.decision --quick    # a second: what the test suite runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from signoff.engine.evaluator import Engine
from signoff.engine.model import Context, FieldRef, Principal, PrincipalKind, Request, Resource
from signoff.policy.loader import load_bundle

KINDS = ["customer_table", "orders_table", "iam_role", "k8s_deployment", "s3_bucket"]
ACTIONS = ["read", "export", "write", "delete", "grant"]


def write_bundle(root: Path, rules_total: int = 30) -> None:
    """`rules_total` rules over five kinds: role, attribute and time conditions, all effects."""
    schema = {
        "schema": {
            "principal": {"tenant": "string", "mfa": "bool", "clearance": "int"},
            "resource": {"tenant": "string", "rows": "int", "classification": "string"},
            "context": {"ticket": "string"},
        }
    }
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    per_kind = rules_total // len(KINDS)
    conditions = [
        ("deny", "principal.attr.tenant != resource.attr.tenant"),
        ("allow", "'analyst' in principal.roles && principal.attr.mfa"),
        ("mask", "!('steward' in principal.roles)"),
        ("require_approval", "resource.attr.rows > 10000 && principal.kind == 'agent'"),
        ("deny", "principal.attr.clearance < 2 && resource.attr.classification == 'secret'"),
        ("allow", "now.getHours('UTC') >= 8 && now.getHours('UTC') < 20"),
    ]
    policies = []
    for kind in KINDS:
        rules = []
        for i in range(per_kind):
            effect, when = conditions[i % len(conditions)]
            rule: dict[str, object] = {"id": f"r{i}", "effect": effect, "when": when}
            if effect == "mask":
                rule["mask"] = [
                    {"tags": ["pii.email"], "operator": "email"},
                    {"tags": ["pii.card"], "operator": "redact"},
                ]
            if effect == "require_approval":
                rule["approval"] = {"approvers": {"roles": ["steward"]}, "quorum": 1}
            rules.append(rule)
        policies.append(
            {"id": kind.replace("_", "-"), "resources": [kind], "actions": ACTIONS, "rules": rules}
        )
    (root / "policies.yaml").write_text(yaml.safe_dump({"policies": policies}))


def request() -> Request:
    return Request(
        principal=Principal(
            "alice@acme.io",
            PrincipalKind.HUMAN,
            ("analyst",),
            {"tenant": "acme", "mfa": True, "clearance": 3},
        ),
        action="export",
        resource=Resource(
            "customer_table",
            "crm.customers",
            {"tenant": "acme", "rows": 500, "classification": "internal"},
            (FieldRef("rows.*.email", ("pii.email",)), FieldRef("rows.*.card", ("pii.card",))),
        ),
        context=Context(environment="prod"),
    )


def measure(engine: Engine, req: Request, n: int, repeats: int) -> list[float]:
    engine.decide(req)  # warm the candidate index
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            engine.decide(req)
        samples.append((time.perf_counter() - start) / n * 1e6)
    return samples


# The request's answer on the generated bundle, from its rules: the tenants match, alice is an
# MFA analyst (allow) but no steward (mask), at 14:00 UTC (allow); no deny or approval applies.
EXPECTED = "MASK"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a few hundred decisions")
    args = parser.parse_args(argv)
    # Decisions per sample: cel-python is ~50x slower than cel-expr.
    sizes = {"cel-expr": 5000, "cel-python": 100}
    if args.quick:
        sizes = {"cel-expr": 200, "cel-python": 10}
    repeats = 2 if args.quick else args.repeats
    clock = dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC)
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_bundle(root, args.rules)
        print(f"bundle: {args.rules} rules over {len(KINDS)} kinds, export on customer_table")
        print(
            f"{'backend':<12} {'candidates':>10} {'median µs/decision':>20} {'min':>8} {'max':>8}"
        )
        for backend, n in sizes.items():
            engine = Engine(load_bundle(root, backend=backend), clock=lambda: clock)
            req = request()
            cands = len(engine.candidates(req.resource.kind, req.action))
            s = measure(engine, req, n, repeats)
            med = statistics.median(s)
            verdict = engine.decide(req).verdict.name
            print(f"{backend:<12} {cands:>10} {med:>20.1f} {min(s):>8.1f} {max(s):>8.1f}")
            print(f"  verdict: {verdict}")
            if verdict != EXPECTED:
                raise AssertionError(f"{backend} decided {verdict}, not {EXPECTED}")
            out[backend] = {"candidates": cands, "median_us": med, "verdict": verdict}
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
