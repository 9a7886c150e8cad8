"""Role semantics: any role holds, errors count only when nothing holds, `*`, order-free."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.engine.evaluator import EVALUATION_ERROR, Engine
from signoff.engine.model import Principal, PrincipalKind, Request, Resource, RuleOutcome, Verdict
from signoff.errors import PolicyError
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules

SCHEMA = """
schema:
  principal: {department: string}
  resource: {owner: string, department: string}
"""

BOB_EXPORTS_HIS_OWN_TABLE = Request(
    principal=Principal("bob", PrincipalKind.HUMAN, ("data_steward",), {}),
    action="export",
    resource=Resource("table", "t1", {"owner": "bob", "department": "finance"}),
)


def steward_roles(steward_name: str) -> str:
    return f"""
derived_roles:
  - name: owner
    when: resource.attr.owner == principal.id
  - name: {steward_name}
    parent_roles: [data_steward]
    when: principal.attr.department == resource.attr.department
"""


@pytest.mark.parametrize("steward_name", ["department_steward", "zz_department_steward"])
def test_a_role_that_holds_wins_over_a_role_that_fails_whatever_their_names(
    write_rules: WriteRules, backend: str, steward_name: str
) -> None:
    # bob has no department, so the steward role fails to evaluate; he owns the table, so the
    # owner role holds. Before, roles were tried in name order and the first error denied.
    rules = write_rules(
        schema=SCHEMA,
        roles=steward_roles(steward_name),
        p=f"""
        policies:
          - id: tables
            resources: [table]
            actions: [export]
            rules:
              - {{id: allow, effect: allow, roles: [owner, {steward_name}]}}
        """,
    )
    decision = Engine(load_bundle(rules, backend=backend)).decide(BOB_EXPORTS_HIS_OWN_TABLE)
    assert decision.verdict is Verdict.ALLOW, decision


def test_a_failing_role_denies_when_no_other_role_holds(
    write_rules: WriteRules, backend: str
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        roles=steward_roles("department_steward"),
        p="""
        policies:
          - id: tables
            resources: [table]
            actions: [export]
            rules:
              - {id: allow, effect: allow, roles: [owner, department_steward]}
        """,
    )
    someone_elses = Request(
        principal=BOB_EXPORTS_HIS_OWN_TABLE.principal,
        action="export",
        resource=Resource("table", "t1", {"owner": "carol", "department": "finance"}),
    )
    decision = Engine(load_bundle(rules, backend=backend)).decide(someone_elses)
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == (EVALUATION_ERROR,)
    assert decision.errored_rules == ("tables/allow",)


STEWARD_POLICY = """
derived_roles:
  - name: steward
    when: principal.attr.department == resource.attr.department
policies:
  - id: tables
    resources: [table]
    actions: {actions}
    rules:
      - {{id: read-any, effect: allow, when: "action == 'read'"}}
      - id: export-steward
        effect: allow
        roles: [steward]
        {export_when}
"""


@pytest.mark.parametrize(
    ("actions", "export_when"),
    [('["*"]', "when: action == 'export'"), ("[read, export]", "when: action == 'export'")],
)
def test_a_failing_role_does_not_deny_what_the_rule_could_never_apply_to(
    write_rules: WriteRules, backend: str, actions: str, export_when: str
) -> None:
    rules = write_rules(
        schema=SCHEMA, p=STEWARD_POLICY.format(actions=actions, export_when=export_when)
    )
    engine = Engine(load_bundle(rules, backend=backend))
    reader = Request(
        principal=Principal("s", PrincipalKind.HUMAN, ("data_steward",), {}),
        action="read",
        resource=Resource("table", "t1", {"owner": "x", "department": "finance"}),
    )
    assert engine.decide(reader).verdict is Verdict.ALLOW
    exporter = Request(reader.principal, "export", reader.resource)
    decision = engine.decide(exporter)
    assert (decision.verdict, decision.reasons) == (Verdict.DENY, (EVALUATION_ERROR,))


def test_explain_names_the_failing_role_only_when_it_decides(
    write_rules: WriteRules, backend: str
) -> None:
    rules = write_rules(schema=SCHEMA, p=STEWARD_POLICY.format(actions='["*"]', export_when=""))
    engine = Engine(load_bundle(rules, backend=backend))
    exporter = Request(
        principal=Principal("s", PrincipalKind.HUMAN, (), {}),
        action="export",
        resource=Resource("table", "t1", {"owner": "x", "department": "finance"}),
        explain=True,
    )
    decision = engine.decide(exporter)
    assert decision.explanation is not None
    traces = {t.rule_id: t for t in decision.explanation.rules}
    failed = traces["tables/export-steward"]
    assert failed.outcome is RuleOutcome.ERROR
    assert failed.error == "derived role steward: no such key: department"
    assert traces["tables/read-any"].outcome is RuleOutcome.NOT_MATCHED


# --- `*` in roles ----------------------------------------------------------------------------


def test_a_lone_star_in_roles_means_any_role(write_rules: WriteRules, backend: str) -> None:
    rules = write_rules(
        schema=SCHEMA,
        p="""
        derived_roles:
          - name: anyone_in_department
            parent_roles: ["*"]
            when: principal.attr.department == resource.attr.department
        policies:
          - id: tables
            resources: [table]
            actions: [read, export]
            rules:
              - {id: read, effect: allow, roles: ["*"], when: "action == 'read'"}
              - {id: export, effect: allow, roles: [anyone_in_department], when: "action == 'export'"}
        """,
    )
    engine = Engine(load_bundle(rules, backend=backend))

    def verdict(roles: tuple[str, ...], action: str) -> Verdict:
        request = Request(
            principal=Principal("u", PrincipalKind.HUMAN, roles, {"department": "finance"}),
            action=action,
            resource=Resource("table", "t", {"owner": "x", "department": "finance"}),
        )
        return engine.decide(request).verdict

    assert verdict(("viewer",), "read") is Verdict.ALLOW
    assert verdict(("viewer",), "export") is Verdict.ALLOW
    # "Any role" needs a role: a principal holding none holds no role, as with any glob.
    assert verdict((), "read") is Verdict.DENY
    assert verdict((), "export") is Verdict.DENY


@pytest.mark.parametrize("pattern", ["data_*", "?dmin", "[ab]dmin", "admin*"])
def test_role_patterns_other_than_a_lone_star_are_refused_at_load(
    write_rules: WriteRules, pattern: str
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        p=f"""
        derived_roles:
          - name: d
            parent_roles: ["{pattern}"]
            when: "true"
        policies:
          - id: tables
            resources: [table]
            actions: [read]
            rules:
              - {{id: r, effect: allow, roles: ["{pattern}", d]}}
        """,
    )
    with pytest.raises(PolicyError) as raised:
        load_bundle(rules)
    messages = [(p.rule_id, p.message) for p in raised.value.problems]
    expected = f"role {pattern!r}: role names are matched exactly; only a lone '*' means any role"
    assert messages == [("derived_role:d", expected), ("tables/r", expected)]


# --- the verdict ignores names, order, and where actions are written -------------------------

ROLE_CONDITIONS = [
    "resource.attr.owner == principal.id",
    "principal.attr.department == resource.attr.department",  # fails without a department
    "principal.id.startsWith('a')",
    "false",
]
RULE_CONDITIONS = [
    None,
    "true",
    "resource.attr.department == 'finance'",
    "principal.attr.department == 'finance'",  # fails without a department
    "principal.id == 'bob'",
]
STATIC_ROLES = ["analyst", "data_steward"]
ACTIONS = ["read", "export", "delete"]
EFFECTS = ["allow", "deny", "mask", "require_approval"]

derived_st = st.lists(
    st.tuples(
        st.sampled_from(ROLE_CONDITIONS), st.lists(st.sampled_from(STATIC_ROLES), max_size=2)
    ),
    min_size=1,
    max_size=3,
)
rule_st = st.tuples(
    st.sampled_from(EFFECTS),
    st.sampled_from(RULE_CONDITIONS),
    st.lists(st.integers(0, 2), max_size=2, unique=True),  # derived roles by index
    st.lists(st.sampled_from(STATIC_ROLES), max_size=1, unique=True),
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2, unique=True),
)


def _rule(i: int, effect: str, when: str | None, roles: list[str]) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"r{i}", "effect": effect, "reason": f"because r{i}"}
    if when is not None:
        rule["when"] = when
    if roles:
        rule["roles"] = roles
    if effect == "mask":
        rule["mask"] = [{"tags": ["pii"], "operator": "redact"}]
    if effect == "require_approval":
        rule["approval"] = {"approvers": {"roles": ["boss"]}}
    return rule


def _write(root: Path, doc: dict[str, Any]) -> Path:
    root.mkdir()
    schema = {
        "principal": {"department": "string"},
        "resource": {"owner": "string", "department": "string"},
    }
    (root / "schema.yaml").write_text(yaml.safe_dump({"schema": schema}))
    (root / "p.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def _variants(
    derived: list[tuple[str, list[str]]], rules: list[tuple[Any, ...]], seed: int, tmp: Path
) -> list[Path]:
    """The same policy written three ways: as drawn; derived roles renamed and everything
    listed in another order; each rule's actions moved from `actions:` into its condition."""
    names = [f"role{i}" for i in range(len(derived))]
    renamed = {n: f"{'zyx'[i % 3]}_{n}_renamed" for i, n in enumerate(names)}

    def derived_doc(name_of: dict[str, str], reverse: bool) -> list[dict[str, Any]]:
        out = [
            {"name": name_of[n], "when": when, **({"parent_roles": ps} if ps else {})}
            for n, (when, ps) in zip(names, derived, strict=True)
        ]
        return out[::-1] if reverse else out

    def roles_of(rule: tuple[Any, ...], name_of: dict[str, str], reverse: bool) -> list[str]:
        picked = [name_of[names[k]] for k in rule[2] if k < len(names)] + list(rule[3])
        return picked[::-1] if reverse else picked

    plain = {n: n for n in names}
    first = {
        "derived_roles": derived_doc(plain, False),
        "policies": [
            {
                "id": f"p{i}",
                "resources": ["table"],
                "actions": rule[4],
                "rules": [_rule(i, rule[0], rule[1], roles_of(rule, plain, False))],
            }
            for i, rule in enumerate(rules)
        ],
    }
    order = list(range(len(rules)))
    order = order[seed % max(len(order), 1) :] + order[: seed % max(len(order), 1)]
    second = {
        "derived_roles": derived_doc(renamed, True),
        "policies": [
            {
                "id": f"p{i}",
                "resources": ["table"],
                "actions": rules[i][4][::-1],
                "rules": [_rule(i, rules[i][0], rules[i][1], roles_of(rules[i], renamed, True))],
            }
            for i in reversed(order)
        ],
    }

    def moved(rule: tuple[Any, ...]) -> str:
        guard = f"action in {list(rule[4])!r}"
        # Either side of && first: the answer must not depend on it.
        if rule[1] is None:
            return guard
        return f"({rule[1]}) && {guard}" if seed % 2 else f"{guard} && ({rule[1]})"

    third = {
        "derived_roles": derived_doc(plain, False),
        "policies": [
            {
                "id": "all",
                "resources": ["table"],
                "actions": ["*"],
                "rules": [
                    _rule(i, rule[0], moved(rule), roles_of(rule, plain, False))
                    for i, rule in enumerate(rules)
                ],
            }
        ],
    }
    return [_write(tmp / str(k), doc) for k, doc in enumerate((first, second, third))]


REQUESTS = [
    Request(
        principal=Principal(pid, PrincipalKind.HUMAN, roles, attrs),
        action=action,
        resource=Resource("table", "t", {"owner": owner, "department": "finance"}),
    )
    for pid, roles, attrs, action, owner in itertools.product(
        ["alice", "bob"],
        [(), ("analyst",), ("data_steward",), ("analyst", "data_steward")],
        [{}, {"department": "finance"}, {"department": "legal"}],
        ACTIONS,
        ["alice", "carol"],
    )
]


@pytest.mark.parametrize("backend_name", ["cel-expr", "cel-python"])
def test_renaming_reordering_and_moving_actions_never_change_a_verdict(backend_name: str) -> None:
    @settings(
        max_examples=25 if backend_name == "cel-expr" else 10,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        derived=derived_st, rules=st.lists(rule_st, min_size=1, max_size=4), seed=st.integers(0, 7)
    )
    def check(
        derived: list[tuple[str, list[str]]], rules: list[tuple[Any, ...]], seed: int
    ) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="signoff-roles-"))
        try:
            engines = [
                Engine(load_bundle(root, backend=backend_name))
                for root in _variants(derived, rules, seed, tmp)
            ]
        finally:
            shutil.rmtree(tmp)
        for request in REQUESTS:
            answers = {(d.verdict, frozenset(d.reasons)) for d in map(_decide(request), engines)}
            assert len(answers) == 1, (request, answers)

    check()


def _decide(request: Request) -> Any:
    return lambda engine: engine.decide(request)
