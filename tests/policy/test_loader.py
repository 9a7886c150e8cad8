"""Loading bundles: every problem reported at once, each with file, line, column and rule id."""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.errors import PolicyError, Problem
from signoff.policy.loader import load_bundle
from tests.conftest import RULES, WriteRules

HEAD = """
schema:
  principal: {tenant: string, mfa: bool}
  resource: {tenant: string}
policies:
  - id: p
    resources: [db]
    actions: [read]
"""

# (name, rules section appended to HEAD, expected (line, column, rule id, message fragment))
CASES = [
    (
        "unknown principal field",
        "    rules:\n      - {id: r, effect: allow, when: \"principal.rol == 'x'\"}\n",
        (9, 48, "p/r", "undefined field 'rol'"),
    ),
    (
        "bool plus int",
        "    rules:\n      - {id: r, effect: allow, when: 'true + 1 == 2'}\n",
        (9, 44, "p/r", "no matching overload for '_+_'"),
    ),
    (
        "undeclared attribute",
        "    rules:\n      - {id: r, effect: allow, when: 'resource.attr.owner == principal.id'}\n",
        (9, 52, "p/r", "undefined field 'owner' not found in resource.attr"),
    ),
    (
        "condition is not a bool",
        "    rules:\n      - {id: r, effect: deny, when: 'principal.id'}\n",
        (9, 38, "p/r", "must be a bool"),
    ),
    (
        "syntax error in a block scalar",
        "    rules:\n      - id: r\n        effect: allow\n        when: |\n          principal.attr.mfa &&\n            (principal.id ==\n",
        (13, 29, "p/r", "Syntax error"),
    ),
    (
        "unknown variable",
        "    rules:\n      - {id: r, effect: allow, when: 'V.trusted'}\n",
        (9, 39, "p/r", "unknown variable V.trusted"),
    ),
    (
        "error inside a variable points into the variable",
        "    variables:\n      t: principal.attr.mfaa\n    rules:\n      - {id: r, effect: allow, when: V.t}\n",
        (9, 24, "p:V.t", "undefined field 'mfaa'"),
    ),
    (
        "variable cycle",
        "    variables:\n      a: V.b\n      b: V.a\n    rules:\n      - {id: r, effect: allow, when: V.a}\n",
        (9, 10, "p", "cycle"),
    ),
    (
        "mask effect without mask",
        "    rules:\n      - {id: r, effect: mask}\n",
        (9, 9, "p/r", "'mask' is a required property"),
    ),
    (
        "approval on an allow rule",
        "    rules:\n      - {id: r, effect: allow, approval: {approvers: {roles: [x]}}}\n",
        (9, 9, "p/r", "this effect does not take that section"),
    ),
    (
        "unknown effect",
        "    rules:\n      - {id: r, effect: permit}\n",
        (9, 25, "p/r", "'permit' is not one of"),
    ),
    (
        "duplicate rule id",
        "    rules:\n      - {id: r, effect: allow}\n      - {id: r, effect: deny}\n",
        (10, 14, "p/r", "duplicate rule id"),
    ),
    (
        "bad duration",
        "    rules:\n      - {id: r, effect: require_approval, approval: {approvers: {roles: [x]}, pending_ttl: soon}}\n",
        (9, 92, "p/r", "does not match"),
    ),
    (
        "duration units out of order",
        "    rules:\n      - {id: r, effect: require_approval, approval: {approvers: {roles: [x]}, grant_ttl: 30m1h}}\n",
        (9, 90, "p/r", "does not match"),
    ),
    (
        "keep_last on redact",
        "    rules:\n      - {id: r, effect: mask, mask: [{tags: [pii], operator: redact, keep_last: 4}]}\n",
        (9, 38, "p/r", "only to the partial operator"),
    ),
    (
        "typo in a rule key",
        "    rules:\n      - {id: r, effect: allow, wehn: 'true'}\n",
        (9, 9, "p/r", "'wehn' was unexpected"),
    ),
]


@pytest.mark.parametrize(("name", "rules", "expected"), CASES, ids=[c[0] for c in CASES])
def test_compile_error_is_located(
    write_rules: WriteRules, name: str, rules: str, expected: tuple[int, int, str, str]
) -> None:
    root = write_rules(p=HEAD + rules)
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    line, column, rule_id, fragment = expected
    problems = info.value.problems
    assert any(
        (p.line, p.column, p.rule_id) == (line, column, rule_id) and fragment in p.message
        for p in problems
    ), "\n".join(map(str, problems))
    assert all(p.file == str(root / "p.yaml") for p in problems)


def test_every_problem_is_reported_at_once(write_rules: WriteRules) -> None:
    root = write_rules(
        a=HEAD
        + "    rules:\n"
        + "      - {id: r1, effect: allow, when: 'principal.rol'}\n"
        + "      - {id: r2, effect: mask}\n"
        + "      - {id: r3, effect: deny, when: 'resource.attr.x'}\n",
        b="policies:\n  - id: p\n    resources: [x]\n    actions: [y]\n    rules: [{id: q, effect: allow, when: '1 +'}]\n",
    )
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    located = {(Path(p.file).name, p.rule_id) for p in info.value.problems}
    assert {("a.yaml", "p/r1"), ("a.yaml", "p/r2"), ("a.yaml", "p/r3")} <= located
    assert ("b.yaml", "p") in located  # duplicate policy id
    assert ("b.yaml", "p/q") in located  # its syntax error is still reported
    text = str(info.value)
    assert "a.yaml:9:" in text


def test_yaml_syntax_error_is_located(write_rules: WriteRules) -> None:
    root = write_rules(p="policies:\n  - id: p\n   resources: [x\n")
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    (problem,) = info.value.problems
    assert problem.line >= 2
    assert "invalid YAML" in problem.message


def test_duplicate_yaml_keys_are_rejected(write_rules: WriteRules) -> None:
    root = write_rules(p="policies: []\npolicies: []\n")
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    assert info.value.problems == [
        Problem(str(root / "p.yaml"), 2, 1, "", "duplicate key 'policies'")
    ]


def test_conflicting_schema_declarations_are_rejected(write_rules: WriteRules) -> None:
    root = write_rules(
        a="schema:\n  principal: {tenant: string}\n",
        b="schema:\n  principal: {tenant: int}\n",
    )
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    assert "declared as int here but as string" in str(info.value)


def test_missing_directory_and_empty_bundle_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(PolicyError, match="no policy files"):
        load_bundle(tmp_path)


def test_suite_files_are_not_policies(write_rules: WriteRules) -> None:
    root = write_rules(
        {"p.yaml": HEAD + "    rules: [{id: r, effect: allow}]\n", "p_test.yaml": "cases: []\n"}
    )
    assert load_bundle(root).files == (str(root / "p.yaml"),)


def test_revision_changes_with_content_and_only_with_content(write_rules: WriteRules) -> None:
    text = HEAD + "    rules: [{id: r, effect: allow}]\n"
    a = load_bundle(write_rules(p=text)).revision
    b = load_bundle(write_rules(p=text)).revision
    c = load_bundle(write_rules(p=text + "# comment\n")).revision
    assert a == b
    assert a != c
    assert len(a) == 64


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
def test_bundled_rules_load(backend: str) -> None:
    bundle = load_bundle(RULES, backend=backend)
    assert bundle.rule_count > 0


def test_one_bad_schema_entry_does_not_cascade(write_rules: WriteRules) -> None:
    root = write_rules(
        schema="schema:\n  principal: {tenant: string, level: integer}\n",
        p="policies:\n  - id: p\n    resources: [db]\n    actions: [read]\n"
        "    rules: [{id: r, effect: allow, when: 'principal.attr.level > 2'}]\n",
    )
    with pytest.raises(PolicyError) as info:
        load_bundle(root)
    (problem,) = info.value.problems
    assert (Path(problem.file).name, problem.line) == ("schema.yaml", 2)
    assert "'integer' is not one of" in problem.message


def test_suites_named_yml_are_not_policies(write_rules: WriteRules) -> None:
    root = write_rules(
        {"p.yaml": HEAD + "    rules: [{id: r, effect: allow}]\n", "p_test.yml": "cases: []\n"}
    )
    assert load_bundle(root).files == (str(root / "p.yaml"),)


# --- messages that point a policy author at the real cause -----------------------------------


def problems_of(rules: Path) -> list[tuple[int, int, str, str]]:
    with pytest.raises(PolicyError) as raised:
        load_bundle(rules)
    return [(p.line, p.column, p.rule_id, p.message) for p in raised.value.problems]


def test_now_called_as_a_function_says_now_is_a_variable(write_rules: WriteRules) -> None:
    rules = write_rules(
        p=HEAD + '    rules:\n      - {id: r, effect: allow, when: "now() > context.time"}\n'
    )
    assert problems_of(rules) == [
        (
            9,
            42,
            "p/r",
            "`now` is a variable (the time of the decision), not a function: write `now`",
        )
    ]


def test_a_broken_variable_is_reported_once_at_its_own_text(write_rules: WriteRules) -> None:
    rules = write_rules(
        p=HEAD
        + """    variables:
      broken: principal.attr.nope == 1
      uses: V.broken && principal.attr.mfa
      uses_uses: V.uses || false
    rules:
      - {id: r, effect: allow, when: "V.uses_uses && V.broken"}
"""
    )
    assert problems_of(rules) == [
        (9, 29, "p:V.broken", "undefined field 'nope' not found in principal.attr")
    ]


def test_a_derived_role_reading_a_variable_says_roles_cannot(write_rules: WriteRules) -> None:
    rules = write_rules(
        p="""
        derived_roles:
          - name: same_tenant
            when: V.tenant_match
        policies:
          - id: p
            resources: [db]
            actions: [read]
            variables:
              tenant_match: "true"
            rules:
              - {id: r, effect: allow, roles: [same_tenant]}
        """
    )
    ((line, column, rule_id, message),) = problems_of(rules)
    assert (line, column, rule_id) == (3, 11, "derived_role:same_tenant")
    assert message.startswith("V.tenant_match: derived roles cannot read policy variables")
