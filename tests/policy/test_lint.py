"""`signoff lint`: each class of finding on a seeded bundle, exact positions, exit codes."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest

from signoff.cmd.lint import main, register
from signoff.engine import cel
from signoff.policy.lint import (
    ERROR,
    LOAD_ERROR,
    MIXED_NUMERIC,
    NEVER_MATCHES,
    NULL_COMPARISON,
    UNREACHABLE,
    UNUSED_DERIVED_ROLE,
    UNUSED_VARIABLE,
    WARNING,
    Finding,
    lint,
)
from tests.conftest import RULES, WriteRules

SCHEMA = """
schema:
  principal: {tenant: string, level: int}
  resource: {rows: int}
  payload: {level: dyn, spec: dyn}
"""


def position(path: Path, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based line and column of the `nth` occurrence of `needle` in `path`."""
    text = path.read_text(encoding="utf-8")
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


def codes(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.code, f.rule_id) for f in findings]


# --- load problems ---------------------------------------------------------------------------


def test_type_errors_and_other_load_problems_are_errors_reported_together(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        a="""
        policies:
          - id: a
            resources: [doc]
            actions: [read]
            rules:
              - id: rows
                effect: allow
                when: resource.attr.rows > 1.5
        """,
        b="""
        policies:
          - id: b
            resources: [doc]
            actions: [read]
            rules:
              - {id: r, effect: permit}
        """,
    )
    findings = lint(rules)

    errors = [f for f in findings if f.severity == ERROR]
    assert codes(errors) == [(LOAD_ERROR, "a/rows"), (LOAD_ERROR, "b/r")]
    line, column = position(rules / "a.yaml", "resource.attr.rows > 1.5")
    type_error = errors[0]
    assert (type_error.file, type_error.line) == (str(rules / "a.yaml"), line)
    assert type_error.column == column + len("resource.attr.rows ")  # at the operator
    assert "no matching overload for '_>_' applied to '(int, double)'" in type_error.message
    assert "'permit' is not one of" in errors[1].message
    # Typed operands are the checker's business: no second, backend-difference finding.
    assert not [f for f in findings if f.code == MIXED_NUMERIC]


def test_findings_print_as_file_line_column_rule_severity_message_code(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - {id: r, effect: permit}
        """
    )
    (finding,) = lint(rules)
    assert str(finding) == (
        f"{rules / 'p.yaml'}:6:25 [p/r]: error: policies.0.rules.0.effect: 'permit' is not one "
        "of ['allow', 'deny', 'mask', 'require_approval'] (load-error)"
    )


def test_lint_still_reports_warnings_in_a_bundle_that_does_not_load(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            variables:
              spare: principal.id == 'x'
            rules:
              - {id: r, effect: allow, when: principal.rol == 'x'}
        """
    )
    assert codes(lint(rules)) == [(UNUSED_VARIABLE, "p:V.spare"), (LOAD_ERROR, "p/r")]


# --- rules that can never fire ---------------------------------------------------------------

GUARD = """
policies:
  - id: guard
    resources: ["*"]
    actions: ["*"]
    rules:
      - id: deny-contractors
        effect: deny
        roles: [contractor, intern]
        reason: contractors use the other system
"""


def test_a_rule_under_an_unconditional_deny_with_a_superset_of_its_roles_is_unreachable(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        guard=GUARD,
        docs="""
        policies:
          - id: docs
            resources: [doc, "sheet.*"]
            actions: [read]
            rules:
              - id: allow-contractors
                effect: allow
                roles: [contractor]
              - id: allow-staff
                effect: allow
                roles: [staff, contractor]
        """,
    )
    finding = only(lint(rules), UNREACHABLE)
    line, column = position(rules / "docs.yaml", "id: allow-contractors")
    assert (finding.file, finding.line, finding.column) == (str(rules / "docs.yaml"), line, column)
    assert (finding.rule_id, finding.severity) == ("docs/allow-contractors", WARNING)
    guard_line, _ = position(rules / "guard.yaml", "id: deny-contractors")
    assert f"guard/deny-contractors ({rules / 'guard.yaml'}:{guard_line})" in finding.message


def test_a_deny_without_roles_or_condition_covers_globbed_kinds(write_rules: WriteRules) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: freeze
            resources: ["infra.*"]
            actions: [deploy, destroy]
            rules:
              - {id: deny-all, effect: deny, when: "true"}
          - id: infra
            resources: [infra.k8s_deployment, "infra.tf*"]
            actions: [deploy]
            rules:
              - {id: allow-sre, effect: allow, roles: [sre]}
              - id: approve
                effect: require_approval
                approval: {approvers: {roles: [lead]}}
        """
    )
    findings = lint(rules)
    assert codes(findings) == [(UNREACHABLE, "infra/allow-sre"), (UNREACHABLE, "infra/approve")]
    assert findings[0].line == position(rules / "p.yaml", "id: allow-sre")[0]


@pytest.mark.parametrize(
    ("deny", "scope"),
    [
        ("{id: d, effect: deny, when: principal.kind == 'agent'}", '["*"]'),  # guarded
        ("{id: d, effect: deny, roles: [contractor]}", '["*"]'),  # fewer roles than the rule
        ("{id: d, effect: deny}", "[doc]"),  # does not cover every kind the rule applies to
        ("{id: d, effect: deny}", '["she*"]'),  # a glob that does not provably cover `sheet?`
        ("{id: d, effect: deny, shadow: true}", '["*"]'),  # audit only: never enforced
    ],
)
def test_no_unreachable_finding_when_the_deny_does_not_always_apply(
    write_rules: WriteRules, deny: str, scope: str
) -> None:
    rules = write_rules(
        p=f"""
        policies:
          - id: guard
            resources: {scope}
            actions: ["*"]
            rules:
              - {deny}
          - id: docs
            resources: [doc, "sheet?"]
            actions: [read]
            rules:
              - {{id: allow-some, effect: allow, roles: [contractor, staff]}}
        """
    )
    assert lint(rules) == []


def test_a_shadow_rule_under_an_enforced_deny_is_reported_like_any_rule(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        guard=GUARD,
        p="""
        policies:
          - id: trial
            shadow: true
            resources: [doc]
            actions: [read]
            rules:
              - {id: allow-contractors, effect: allow, roles: [contractor]}
        """,
    )
    assert codes(lint(rules)) == [(UNREACHABLE, "trial/allow-contractors")]


@pytest.mark.parametrize("condition", ['"false"', '"!true"', '"1 == 2"', "\"size('ab') > 5\""])
def test_a_constant_false_condition_never_matches(write_rules: WriteRules, condition: str) -> None:
    rules = write_rules(
        p=f"""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - id: r
                effect: allow
                when: {condition}
        """
    )
    finding = only(lint(rules), NEVER_MATCHES)
    line, column = position(rules / "p.yaml", condition)
    assert (finding.rule_id, finding.line, finding.column) == ("p/r", line, column)
    assert finding.message == "can never match: its condition is always false"


def test_a_constant_false_variable_in_a_conjunction_never_matches(write_rules: WriteRules) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            variables:
              switched_on: "1 > 2"
            rules:
              - id: r
                effect: allow
                when: principal.kind == 'human' && V.switched_on
        """
    )
    finding = only(lint(rules), NEVER_MATCHES)
    assert (finding.rule_id, finding.line) == ("p/r", 10)


@pytest.mark.parametrize(
    "condition",
    [
        "has(principal.attr.tenant)",  # cel-python alone says false with nothing bound
        "principal.kind == 'human' && true",
        "principal.kind == 'human' || false",
        "[1, 2].exists(x, x > 1)",
        "now.getHours('UTC') > 25 || principal.kind == 'agent'",
    ],
)
def test_conditions_that_depend_on_the_request_are_not_called_constant(
    write_rules: WriteRules, condition: str
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        p=f"""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - id: r
                effect: allow
                when: "{condition}"
        """,
    )
    assert lint(rules) == []


def test_a_derived_role_that_is_never_held_and_the_rule_selecting_it(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        roles="""
        derived_roles:
          - name: retired
            parent_roles: [staff]
            when: "false"
          - name: anyone
            parent_roles: []
            when: "true"
        """,
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - {id: only-retired, effect: allow, roles: [retired]}
              - {id: retired-or-anyone, effect: allow, roles: [retired, anyone]}
        """,
    )
    findings = lint(rules)
    assert codes(findings) == [  # sorted by file: p.yaml, then roles.yaml
        (NEVER_MATCHES, "p/only-retired"),
        (NEVER_MATCHES, "derived_role:retired"),
    ]
    rule, role = findings
    assert (role.file, role.line) == (str(rules / "roles.yaml"), 4)
    assert (rule.line, rule.column) == position(rules / "p.yaml", "[retired]}")
    assert rule.message == "can never match: it selects only derived roles nobody holds (retired)"


# --- unused names ----------------------------------------------------------------------------


def test_unused_variables_including_ones_only_unused_variables_read(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            variables:
              human: principal.kind == 'human'
              staff: V.human && 'staff' in principal.roles
              leftover: V.base
              base: principal.id != ''
              quoted: "'V.human'"
            rules:
              - {id: r, effect: allow, when: V.staff}
        """
    )
    findings = lint(rules)
    assert [(f.rule_id, f.line, f.column) for f in findings] == [
        ("p:V.leftover", 8, 7),
        ("p:V.base", 9, 7),
        ("p:V.quoted", 10, 7),
    ]
    assert {f.code for f in findings} == {UNUSED_VARIABLE}
    assert findings[0].message == "variable V.leftover is used by no rule and no other variable"
    assert findings[1].message == "variable V.base is used only by unused variable(s) V.leftover"


def test_an_unused_derived_role(write_rules: WriteRules) -> None:
    rules = write_rules(
        roles="""
        derived_roles:
          - name: owner
            when: principal.id == resource.id
          - name: stale
            when: principal.kind == 'human'
        """,
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - {id: r, effect: allow, roles: [owner]}
        """,
    )
    finding = only(lint(rules), UNUSED_DERIVED_ROLE)
    assert (finding.rule_id, finding.file, finding.line, finding.column) == (
        "derived_role:stale",
        str(rules / "roles.yaml"),
        4,
        11,
    )


# --- CEL that means different things on the two backends -------------------------------------


def evaluate_on_both(expression: str, payload: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in cel.BACKENDS:
        backend = cel.backend(name)
        data = {"payload": payload, "now": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
        try:
            out[name] = backend.compile(expression).evaluate(backend.activation(data))
        except cel.CelEvalError:
            out[name] = "error"
    return out


def test_the_backends_agree_on_json_numbers_and_null() -> None:
    # Every JSON number is a double, and both backends compare numbers across types by value
    # and anything with null by kind (cel-spec's heterogeneous equality).
    assert evaluate_on_both("payload.level > 1.5", {"level": 2.0}) == {
        "cel-expr": True,
        "cel-python": True,
    }
    assert evaluate_on_both("payload.level == 2", {"level": 2.0}) == {
        "cel-expr": True,
        "cel-python": True,
    }
    assert evaluate_on_both("payload.level != null", {"level": 2.0}) == {
        "cel-expr": True,
        "cel-python": True,
    }
    assert set(evaluate_on_both("payload.level != null", {}).values()) == {"error"}
    # Arithmetic has no double-with-int overload: an error on both.
    assert set(evaluate_on_both("payload.level + 1 == 3", {"level": 2.0}).values()) == {"error"}


def test_a_json_number_in_arithmetic_with_an_int_is_a_mixed_numeric_warning(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            variables:
              scaled: payload.spec.replicas * 2
            rules:
              - id: r
                effect: allow
                when: |-
                  principal.kind == 'human'
                    && payload.level > 1.5 && payload.level % 2 == 0 && V.scaled > 3
        """,
    )
    findings = lint(rules)
    assert codes(findings) == [(MIXED_NUMERIC, "p:V.scaled"), (MIXED_NUMERIC, "p/r")]
    variable, rule = findings
    assert (rule.line, rule.column) == position(rules / "p.yaml", "payload.level % 2")
    assert rule.message == (
        "`payload.level % 2` mixes a JSON number with an int: every JSON number is a double, so "
        "with payload.level = 2.0 both backends fail; use a double literal or convert "
        "explicitly, e.g. int(payload.level)"
    )
    assert (variable.line, variable.column) == position(rules / "p.yaml", "payload.spec")


def test_a_comparison_with_null_is_reported_with_what_each_backend_does(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        roles="""
        derived_roles:
          - name: configured
            when: payload.spec != null
        """,
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - {id: r, effect: allow, roles: [configured], when: "null == context.time"}
        """,
    )
    findings = lint(rules)
    assert codes(findings) == [
        (NULL_COMPARISON, "p/r"),
        (NULL_COMPARISON, "derived_role:configured"),
    ]
    rule, role = findings
    assert (role.line, role.column) == (3, 11)
    assert role.message == (
        "`payload.spec != null` compares with null, which is not a presence test: an absent "
        "value is an evaluation error on both backends; test presence with has()"
    )
    assert (rule.line, rule.column) == position(rules / "p.yaml", "null == context.time")


# --- the bundled rules and the command -------------------------------------------------------


def test_the_bundled_rules_lint_clean() -> None:
    assert lint(RULES) == []


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="signoff")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *argv])
    code: int = args.run(args)
    return code, capsys.readouterr().out


WARNS = """
policies:
  - id: p
    resources: [doc]
    actions: [read]
    variables:
      spare: "true"
    rules:
      - {id: r, effect: allow}
"""


def test_exit_codes(write_rules: WriteRules, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write_rules(p=WARNS.replace("effect: allow}", "effect: allow, when: V.spare}"))
    warns = write_rules(p=WARNS)
    broken = write_rules(p=WARNS.replace("effect: allow", "effect: permit"))

    assert run_cli([str(clean)], capsys) == (0, f"signoff lint {clean}: no findings\n")
    code, out = run_cli([str(warns)], capsys)
    assert code == 0
    assert out.endswith("0 error(s), 1 warning(s)\n")
    assert run_cli([str(warns), "--strict"], capsys)[0] == 1
    assert run_cli([str(broken)], capsys)[0] == 1
    assert main([str(broken.parent / "missing")]) == 2
    assert "rules directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2


def test_json_output(write_rules: WriteRules, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(p=WARNS)
    code, out = run_cli([str(rules), "--json", "--strict"], capsys)
    document = json.loads(out)
    assert code == document["exit_code"] == 1
    assert (document["errors"], document["warnings"]) == (0, 1)
    assert document["findings"] == [
        {
            "file": str(rules / "p.yaml"),
            "line": 6,
            "column": 7,
            "rule": "p:V.spare",
            "severity": "warning",
            "code": "unused-variable",
            "message": "variable V.spare is used by no rule and no other variable",
        }
    ]


def test_a_problem_with_no_position_prints_the_file_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    code, out = run_cli([str(empty)], capsys)

    assert code == 1
    assert out.startswith(f"{empty}: error: no policy files (*.yaml) found (load-error)\n")
