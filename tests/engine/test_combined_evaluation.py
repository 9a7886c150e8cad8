"""The combined evaluation (one CEL call per request) decides exactly as rule by rule does."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.engine import cel
from signoff.engine.evaluator import Engine
from signoff.engine.model import FieldRef, Principal, PrincipalKind, Request, Resource
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules, fixed_clock

SCHEMA = {
    "principal": {"tenant": "string", "level": "int", "owner": "string", "extra": "dyn"},
    "resource": {"tenant": "string", "rows": "int"},
}
CONDITIONS = [
    None,
    "true",
    "false",
    "principal.attr.level > 2",
    "principal.attr.tenant == resource.attr.tenant",
    "'admin' in principal.roles",
    "principal.kind == 'agent'",
    "resource.attr.rows / principal.attr.level > 10",  # divide by zero at level 0
    "principal.attr.owner == 'x'",  # an error when the request leaves owner out
    "principal.attr.extra",  # dyn: a bool, a number (not a bool) or missing (an error)
    "principal.attr.level > 1 // a comment ends the line\n  && resource.attr.rows < 100",
    "principal.attr.extra || principal.attr.level > 3",  # an error absorbed by ||
]
SCHEMA_YAML = yaml.safe_dump({"schema": SCHEMA})
EFFECTS = ["allow", "deny", "mask", "require_approval"]

rule_st = st.tuples(
    st.sampled_from(EFFECTS),
    st.sampled_from(CONDITIONS),
    st.lists(st.integers(0, 2), max_size=2, unique=True),  # derived roles named
    st.sampled_from([[], ["admin"], ["viewer", "*"]]),  # static roles
    st.booleans(),  # shadow
)
derived_st = st.lists(
    st.tuples(st.sampled_from([c for c in CONDITIONS if c]), st.sampled_from([[], ["viewer"]])),
    max_size=3,
)

EXTRAS: list[dict[str, Any]] = [{}, {"extra": True}, {"extra": False}, {"extra": 2}]
REQUESTS = [
    Request(
        principal=Principal(
            "u",
            kind,
            roles,
            {"tenant": "a", "level": level, **extra, **({"owner": "x"} if owned else {})},
        ),
        action="read",
        resource=Resource("db", "1", {"tenant": tenant, "rows": 500}, (FieldRef("e", ("pii",)),)),
    )
    for kind, roles, level, extra, owned, tenant in itertools.product(
        [PrincipalKind.HUMAN, PrincipalKind.AGENT],
        [(), ("admin",), ("viewer",)],
        [0, 3],
        EXTRAS,
        [False, True],
        ["a", "b"],
    )
]


def _rule(i: int, spec: tuple[Any, ...], derived: int) -> dict[str, Any]:
    effect, when, named, static, shadow = spec
    rule: dict[str, Any] = {"id": f"r{i}", "effect": effect, "reason": f"r{i}"}
    if when is not None:
        rule["when"] = when
    roles = [f"d{k}" for k in named if k < derived] + static
    if roles:
        rule["roles"] = roles
    if shadow:
        rule["shadow"] = True
    if effect == "mask":
        rule["mask"] = [{"tags": ["pii"], "operator": ["redact", "hash", "email"][i % 3]}]
    if effect == "require_approval":
        rule["approval"] = {
            "approvers": {"roles": [f"boss{i % 2}"]},
            "quorum": 1 + i % 2,
            **({"requester_identities": ["principal.attr.owner"]} if i % 2 else {}),
        }
    return rule


def _write(root: Path, derived: list[tuple[str, list[str]]], rules: list[Any]) -> None:
    doc: dict[str, Any] = {
        "policies": [
            {
                "id": "p",
                "resources": ["db"],
                "actions": ["read"],
                "rules": [_rule(i, r, len(derived)) for i, r in enumerate(rules)],
            }
        ]
    }
    if derived:
        doc["derived_roles"] = [
            {"name": f"d{k}", "when": when, **({"parent_roles": ps} if ps else {})}
            for k, (when, ps) in enumerate(derived)
        ]
    (root / "schema.yaml").write_text(yaml.safe_dump({"schema": SCHEMA}))
    (root / "p.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _engines(root: Path, backend: str) -> tuple[Engine, Engine]:
    bundle = load_bundle(root, backend=backend)
    clock = fixed_clock("2026-03-02T14:00:00Z")
    combining = bundle
    if backend == "cel-python":
        # Off by default there (it costs more than it saves): on here, to hold the combined
        # evaluation to cel-python's semantics too.
        combining = replace(bundle, backend=cel.CelPythonBackend(combine=True))
    return Engine(combining, clock), Engine(bundle, clock, combined=False)


@pytest.mark.parametrize("backend_name", ["cel-expr", "cel-python"])
def test_the_combined_evaluation_decides_exactly_as_rule_by_rule(backend_name: str) -> None:
    @settings(
        max_examples=40 if backend_name == "cel-expr" else 8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(derived=derived_st, rules=st.lists(rule_st, min_size=1, max_size=6))
    def check(derived: list[tuple[str, list[str]]], rules: list[Any]) -> None:
        root = Path(tempfile.mkdtemp(prefix="signoff-combined-"))
        try:
            _write(root, derived, rules)
            fast, slow = _engines(root, backend_name)
        finally:
            shutil.rmtree(root)
        for request in REQUESTS:
            # Every field: verdict, rules, reasons, errors, masking plan, approval, shadow.
            assert fast.decide(request) == slow.decide(request), request

    # cel-python raises the recursion limit when first used, which hypothesis would flag.
    warm = (
        cel.CelExprBackend() if backend_name == "cel-expr" else cel.CelPythonBackend(combine=True)
    )
    warm.compile("1 == 1")
    warm.compile_many(["1 == 1", "true"])
    check()


def test_an_erroring_condition_falls_back_to_the_exact_error(
    write_rules: WriteRules, backend: str
) -> None:
    root = write_rules(
        schema=SCHEMA_YAML,
        policies="""
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - {id: ok, effect: allow}
      - {id: broken, effect: deny, when: "resource.attr.rows / principal.attr.level > 1"}
""",
    )
    fast, slow = _engines(root, backend)
    request = REQUESTS[0]  # level 0: the deny rule divides by zero
    decision = fast.decide(request)
    assert decision == slow.decide(request)
    assert decision.errored_rules == ("p/broken",)


def test_conditions_are_combined_into_one_program(write_rules: WriteRules, backend: str) -> None:
    root = write_rules(
        schema=SCHEMA_YAML,
        policies="""
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - {id: a, effect: allow, when: "principal.attr.level > 2"}
      - {id: b, effect: deny, when: "principal.attr.tenant != resource.attr.tenant"}
""",
    )
    fast, slow = _engines(root, backend)
    assert fast._index.lookup("db", "read").fast is not None
    assert slow._index.lookup("db", "read").fast is None


def test_cel_python_evaluates_rule_by_rule_unless_asked_to_combine(
    write_rules: WriteRules,
) -> None:
    root = write_rules(
        schema=SCHEMA_YAML,
        policies="""
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - {id: a, effect: allow, when: "principal.attr.level > 2"}
""",
    )
    assert Engine(load_bundle(root, backend="cel-python"))._index.lookup("db", "read").fast is None


def test_many_candidate_rules_are_still_combined_and_decide_alike(
    write_rules: WriteRules, backend: str
) -> None:
    # 120 conditions: joined naively, CEL's parser would refuse them (32 levels at most).
    rules = "\n".join(
        f"      - {{id: r{i}, effect: {EFFECTS[i % 2]}, when: {json.dumps(CONDITIONS[1 + i % 10])}}}"
        for i in range(120)
    )
    root = write_rules(
        schema=SCHEMA_YAML,
        policies=f"""
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
{rules}
""",
    )
    fast, slow = _engines(root, backend)
    assert fast._index.lookup("db", "read").fast is not None
    for request in REQUESTS[:: 4 if backend == "cel-expr" else 24]:
        assert fast.decide(request) == slow.decide(request)


def test_masking_plans_follow_each_requests_fields(write_rules: WriteRules, backend: str) -> None:
    root = write_rules(
        schema=SCHEMA_YAML,
        policies="""
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - {id: m, effect: mask, mask: [{tags: [pii], operator: redact}, {paths: [n], operator: hash}]}
""",
    )
    fast, slow = _engines(root, backend)
    base = REQUESTS[0]
    shapes = [
        (FieldRef("e", ("pii",)),),
        (FieldRef("e", ("pii",)), FieldRef("n")),
        (FieldRef("n"),),
        (FieldRef("x", ("other",)),),
    ]
    plans = []
    for fields in shapes * 2:  # the second time from the kept plans
        request = replace(base, resource=replace(base.resource, fields=fields))
        decision = fast.decide(request)
        assert decision == slow.decide(request)
        plans.append(tuple(m.path for m in decision.masking_plan))
    assert plans[:4] == [("e",), ("e", "n"), ("n",), ()]
    assert plans[4:] == plans[:4]
