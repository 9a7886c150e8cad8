"""`signoff test --coverage`: which rules the cases exercise, and the --min-coverage gate."""

from __future__ import annotations

import argparse
import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from signoff.cmd.test import add_test_arguments, run_test
from signoff.engine.cel import BACKENDS
from signoff.policy.loader import load_bundle
from signoff.policytest import run_suites

RULES = Path(__file__).resolve().parents[2] / "rules"

POLICIES = """\
schema:
  principal: {tenant: string}
derived_roles:
  - name: senior
    parent_roles: [staff]
    when: principal.id.startsWith('senior')
  - name: auditing
    parent_roles: [auditor]
    when: "true"
policies:
  - id: docs
    resources: [doc]
    actions: [read, write]
    rules:
      - id: deny-outsiders
        effect: deny
        when: has(principal.attr.tenant) && principal.attr.tenant != 'acme'
      - id: allow-staff-read
        effect: allow
        roles: [staff]
        when: action == 'read'
      - id: allow-senior-write
        effect: allow
        roles: [senior]
        when: action == 'write'
      - id: allow-auditors
        effect: allow
        roles: [auditing]
"""

SUITE = """\
suite: docs
now: "2026-03-02T14:00:00Z"
principals:
  staff: {id: bob, kind: human, roles: [staff], attr: {tenant: acme}}
  senior: {id: senior-sue, kind: human, roles: [staff], attr: {tenant: acme}}
  outsider: {id: eve, kind: human, roles: [staff], attr: {tenant: evil}}
cases:
  - name: staff read
    principal: staff
    action: read
    resource: {kind: doc}
    expect: {verdict: allow, rules: [docs/allow-staff-read]}
  - name: a senior writes
    principal: senior
    action: write
    resource: {kind: doc}
    expect: {verdict: allow, rules: [docs/allow-senior-write]}
  - name: an outsider is denied
    principal: outsider
    action: read
    resource: {kind: doc}
    expect: {verdict: deny, rules: [docs/deny-outsiders]}
  - name: staff cannot write
    principal: staff
    action: write
    resource: {kind: doc}
    expect: {verdict: deny, rules: []}
"""


def bundle(tmp_path: Path, policies: str = POLICIES, suite: str = SUITE) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "docs.yaml").write_text(policies, encoding="utf-8")
    (rules / "docs_test.yaml").write_text(suite, encoding="utf-8")
    return rules


def run(
    rules: Path,
    *,
    min_coverage: float | None = None,
    junit: Path | None = None,
    backends: Sequence[str] = BACKENDS,
) -> tuple[int, str]:
    out = io.StringIO()
    code = run_suites(
        rules,
        out=out,
        coverage=True,
        min_coverage=min_coverage,
        junit=junit,
        backends=backends,
    )
    return code, out.getvalue()


def line_of(path: Path, needle: str) -> int:
    text = path.read_text(encoding="utf-8")
    return text.count("\n", 0, text.index(needle)) + 1


def test_coverage_counts_exercised_rules_and_names_the_others(tmp_path: Path) -> None:
    rules = bundle(tmp_path)
    code, output = run(rules)

    assert code == 0, output
    assert "coverage: 3 of 4 rule(s) exercised (75.0%) on cel-expr, cel-python" in output
    policy = rules / "docs.yaml"
    rule_line = line_of(policy, "- id: allow-auditors")
    assert f"  not exercised: docs/allow-auditors  ({policy}:{rule_line})" in output
    role_line = line_of(policy, "- name: auditing")
    assert f"  derived role never held: auditing  ({policy}:{role_line})" in output
    assert "never held: senior" not in output
    assert "not matched by any case" not in output  # the coverage section replaces the warning


def test_min_coverage_fails_below_the_threshold_and_passes_above(tmp_path: Path) -> None:
    rules = bundle(tmp_path)

    code, output = run(rules, min_coverage=80)
    assert code == 1, output
    assert "error: rule coverage 75.0% is below the minimum of 80%" in output
    assert "4 passed, 0 failed" in output

    code, output = run(rules, min_coverage=70)
    assert code == 0, output
    assert "below the minimum" not in output
    assert run(rules, min_coverage=75)[0] == 0  # the minimum itself is enough


def test_a_rule_matched_only_after_a_deny_decided_is_not_exercised(tmp_path: Path) -> None:
    # The outsider also holds `staff`, so allow-staff-read matches in the explanation, but
    # the deny already decided: it was not counted and proves nothing about the allow.
    suite = SUITE.split("  - name: a senior writes")[0].replace(
        "  - name: staff read", "  - name: an outsider is denied", 1
    )
    suite = suite.replace("    principal: staff\n", "    principal: outsider\n", 1).replace(
        "{verdict: allow, rules: [docs/allow-staff-read]}", "{verdict: deny}"
    )
    code, output = run(bundle(tmp_path, suite=suite))
    assert code == 0, output
    assert "coverage: 1 of 4 rule(s) exercised (25.0%)" in output
    assert "not exercised: docs/allow-staff-read" in output


def test_coverage_is_the_union_of_the_backends_run(tmp_path: Path) -> None:
    # A time parsed from a string keeps nanoseconds on cel-expr and microseconds on
    # cel-python (a documented divergence): only cel-expr matches the rule.
    policies = """\
schema:
  payload: {t: string}
policies:
  - id: p
    resources: [doc]
    actions: [read]
    rules:
      - id: level-one
        effect: allow
        when: timestamp(payload.t) > timestamp('2026-01-01T00:00:00.000001Z')
"""
    suite = """\
suite: numbers
now: "2026-03-02T14:00:00Z"
cases:
  - name: a time finer than a microsecond
    principal: {id: u, kind: human}
    action: read
    resource: {kind: doc}
    payload: {t: "2026-01-01T00:00:00.0000019Z"}
    expect: {verdict: allow}
"""
    rules = bundle(tmp_path, policies, suite)
    code, output = run(rules)
    assert code == 1, output  # the backends disagree
    assert "coverage: 1 of 1 rule(s) exercised (100.0%) on cel-expr, cel-python" in output
    code, output = run(rules, backends=("cel-python",))
    assert "coverage: 0 of 1 rule(s) exercised (0.0%) on cel-python" in output


def test_a_shadow_rule_counts_when_it_matches(tmp_path: Path) -> None:
    policies = POLICIES.replace(
        "      - id: allow-auditors\n",
        "      - id: trial-deny-writes\n        effect: deny\n        shadow: true\n"
        "        when: action == 'write'\n      - id: allow-auditors\n",
    )
    rules = bundle(tmp_path, policies)
    code, output = run(rules)
    assert code == 0, output
    assert "coverage: 4 of 5 rule(s) exercised (80.0%)" in output
    assert "not exercised: docs/trial-deny-writes" not in output
    # Without --coverage the warning about unmatched rules sees the shadow match too.
    out = io.StringIO()
    assert run_suites(rules, out=out) == 0
    assert "docs/allow-auditors" in out.getvalue()
    assert "docs/trial-deny-writes" not in out.getvalue()


def test_junit_report_carries_the_coverage(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    code, output = run(bundle(tmp_path), min_coverage=80, junit=report)
    assert code == 1, output

    root = ET.parse(report).getroot()
    suite_el = root.find("./testsuite[@name='policy coverage']")
    assert suite_el is not None
    props = {p.attrib["name"]: p.attrib["value"] for p in suite_el.iter("property")}
    assert props["coverage_percent"] == "75.0"
    assert (props["rules_exercised"], props["rules_total"]) == ("3", "4")
    assert props["rules_not_exercised"] == "docs/allow-auditors"
    assert props["derived_roles_never_held"] == "auditing"
    failure = suite_el.find("testcase[@name='rule coverage >= 80%']/failure")
    assert failure is not None
    assert failure.attrib["message"] == "rule coverage 75.0% is below the minimum of 80%"
    assert (root.attrib["tests"], root.attrib["failures"]) == ("5", "1")


def test_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_test_arguments(parser)
    rules = bundle(tmp_path)

    assert run_test(parser.parse_args([str(rules), "--min-coverage", "80"])) == 1
    assert "coverage: 3 of 4" in capsys.readouterr().out
    assert run_test(parser.parse_args([str(rules), "--min-coverage", "70%"])) == 0
    assert run_test(parser.parse_args([str(rules), "--coverage"])) == 0
    assert "75.0%" in capsys.readouterr().out
    assert run_test(parser.parse_args([str(rules)])) == 0
    assert "coverage:" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args([str(rules), "--min-coverage", "120"])
    assert "between 0 and 100" in capsys.readouterr().err


def test_the_bundled_suites_exercise_every_rule_and_derived_role() -> None:
    code, output = run(RULES, min_coverage=100)
    assert code == 0, output
    count = load_bundle(RULES).rule_count
    assert f"coverage: {count} of {count} rule(s) exercised (100.0%)" in output
    assert "never held" not in output
