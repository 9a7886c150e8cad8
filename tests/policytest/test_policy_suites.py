"""The bundled policy suites and the `signoff test` runner, end to end on real bundles."""

from __future__ import annotations

import argparse
import io
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from signoff.cmd.test import add_test_arguments, run_test
from signoff.engine.cel import BACKENDS
from signoff.policy.loader import load_bundle
from signoff.policytest import run_suites

RULES = Path(__file__).resolve().parents[2] / "rules"


def run(
    rules: Path, *, junit: Path | None = None, backends: Sequence[str] = BACKENDS
) -> tuple[int, str]:
    out = io.StringIO()
    code = run_suites(rules, junit=junit, backends=backends, out=out)
    return code, out.getvalue()


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """A scratch copy of the bundled rules that a test may break."""
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur exactly once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def line_and_column(path: Path, needle: str) -> tuple[int, int]:
    text = path.read_text(encoding="utf-8")
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def case_count(rules: Path) -> int:
    return sum(
        len(re.findall(r"^  - name: ", p.read_text(encoding="utf-8"), flags=re.MULTILINE))
        for p in rules.glob("*_test.yaml")
    )


# --- the bundled suites ----------------------------------------------------------------------


def test_bundled_suites_pass_on_both_backends() -> None:
    code, output = run(RULES)
    assert code == 0, output
    assert f"{case_count(RULES)} passed, 0 failed" in output
    assert "FAIL" not in output
    assert "disagree" not in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_bundled_suites_pass_on_each_backend_alone(backend: str) -> None:
    code, output = run(RULES, backends=(backend,))
    assert code == 0, output
    assert f"on {backend};" in output


def test_every_bundled_rule_is_matched_by_some_case() -> None:
    code, output = run(RULES)
    assert code == 0, output
    assert "not matched by any case" not in output
    bundle = load_bundle(RULES)
    assert bundle.rule_count >= 10


def test_bundled_rules_load_identically_on_both_backends() -> None:
    revisions = {load_bundle(RULES, backend=b).revision for b in BACKENDS}
    assert len(revisions) == 1


# --- failures and errors ---------------------------------------------------------------------


def test_a_broken_expectation_fails_with_a_diff_and_exit_code_1(rules_copy: Path) -> None:
    suite = rules_copy / "iam_test.yaml"
    replace_once(
        suite,
        "      verdict: allow\n      rules: [iam-grants/allow-human-admins]\n",
        "      verdict: deny\n      rules: [iam-grants/allow-human-admins]\n",
    )
    line, _ = line_and_column(suite, "  - name: admin grants a role in staging")

    code, output = run(rules_copy)

    assert code == 1, output
    assert f"FAIL  admin grants a role in staging  ({suite}:{line})" in output
    assert "on cel-expr, cel-python:" in output
    assert "verdict: expected deny, got allow" in output
    assert f"{case_count(rules_copy) - 1} passed, 1 failed" in output


def test_a_wrong_mask_expectation_names_the_field_and_both_operators(rules_copy: Path) -> None:
    replace_once(
        rules_copy / "customer_data_test.yaml",
        """        "customers.*.card_number": redact
        "customers.*.id": hash

  - name: analyst read without""",
        """        "customers.*.card_number": nullify
        "customers.*.id": hash

  - name: analyst read without""",
    )
    code, output = run(rules_copy)
    assert code == 1, output
    assert "masked customers.*.card_number: expected nullify, got redact" in output


def test_a_broken_cel_expression_exits_2_and_points_at_file_line_column(
    rules_copy: Path,
) -> None:
    policy = rules_copy / "customer_data.yaml"
    replace_once(policy, "touches_pii: resource.tags.exists", "touches_pii: resource.tagz.exists")
    line, column = line_and_column(policy, ".tagz")

    code, output = run(rules_copy)

    assert code == 2, output
    assert f"{policy}:{line}:{column} [customer-data:V.touches_pii]:" in output
    assert "tagz" in output
    assert "passed" not in output


def test_a_malformed_suite_exits_2_with_file_and_line(rules_copy: Path) -> None:
    suite = rules_copy / "guardrails_test.yaml"
    replace_once(
        suite,
        "      rules: [customer-data/allow-analysts]\n\n  - name: cross-tenant read is",
        "      rules: [customer-data/allow-analysts]\n      bogus: 1\n\n"
        "  - name: cross-tenant read is",
    )
    line, column = line_and_column(suite, "bogus: 1")

    code, output = run(rules_copy)

    assert code == 2, output
    assert f"{suite}:{line}:{column}: unknown key 'bogus'" in output


def test_a_suite_that_is_not_yaml_exits_2(rules_copy: Path) -> None:
    (rules_copy / "broken_test.yaml").write_text("suite: x\ncases: [\n", encoding="utf-8")
    code, output = run(rules_copy)
    assert code == 2, output
    assert f"{rules_copy / 'broken_test.yaml'}:3:1: invalid YAML" in output


def test_an_unknown_fixture_is_reported_where_it_is_used(rules_copy: Path) -> None:
    suite = rules_copy / "iam_test.yaml"
    replace_once(
        suite,
        "  - name: a non-admin cannot grant roles\n    principal: alice",
        "  - name: a non-admin cannot grant roles\n    principal: alicia",
    )
    line, column = line_and_column(suite, "alicia")
    code, output = run(rules_copy)
    assert code == 2, output
    assert f"{suite}:{line}:{column}: unknown principal fixture 'alicia'" in output


def test_backends_that_disagree_fail_the_case_and_show_both_answers(tmp_path: Path) -> None:
    # A time parsed from a string keeps nanoseconds on cel-expr and microseconds on
    # cel-python (a documented divergence), so only cel-expr sees it as later.
    (tmp_path / "p.yaml").write_text(
        """
schema:
  payload: {t: string}
policies:
  - id: p
    resources: [doc]
    actions: [read]
    rules:
      - id: later
        effect: allow
        when: timestamp(payload.t) > timestamp('2026-01-01T00:00:00.000001Z')
""",
        encoding="utf-8",
    )
    (tmp_path / "p_test.yaml").write_text(
        """
suite: times
now: "2026-03-02T14:00:00Z"
cases:
  - name: a time finer than a microsecond
    principal: {id: u, kind: human}
    action: read
    resource: {kind: doc}
    payload: {t: "2026-01-01T00:00:00.0000019Z"}
    expect: {verdict: allow}
""",
        encoding="utf-8",
    )
    code, output = run(tmp_path)
    assert code == 1, output
    assert "backends disagree:" in output
    assert "cel-expr:   allow rules=[p/later]" in output
    assert "cel-python: deny rules=[] reasons=[no_matching_rule]" in output or (
        "cel-python: deny rules=[]" in output
    )
    assert "1 with backends disagreeing" in output


def test_an_uncovered_rule_is_reported_as_a_warning(rules_copy: Path) -> None:
    (rules_copy / "iam_test.yaml").unlink()
    code, output = run(rules_copy)
    assert code == 0, output
    assert "warning: 3 rule(s) not matched by any case:" in output
    assert "  iam-grants/deny-self-grant" in output


# --- the clock -------------------------------------------------------------------------------


def test_the_pinned_clock_decides_a_time_based_verdict(rules_copy: Path) -> None:
    (rules_copy / "clock_test.yaml").write_text(
        """
suite: clock
principals:
  bot:
    id: agent:export-bot
    kind: agent
    roles: [analyst]
    attr: {tenant: acme, owner: alice@acme.io, owner_mfa: true}
resources:
  customers:
    kind: customer_table
    attr: {tenant: acme}
    fields: [{path: "c.*.email", tags: [pii.email]}]
cases:
  - name: by day
    principal: bot
    action: export
    resource: customers
    now: "2026-03-02T14:00:00Z"
    expect: {verdict: mask}
  - name: at night
    principal: bot
    action: export
    resource: customers
    now: "2026-03-02T23:00:00+00:00"
    expect: {verdict: require_approval}
""",
        encoding="utf-8",
    )
    code, output = run(rules_copy)
    assert code == 0, output
    assert "PASS  by day  [mask]" in output
    assert "PASS  at night  [require_approval]" in output


def test_a_caller_stated_clock_is_ignored_by_rules_that_read_the_context(
    rules_copy: Path,
) -> None:
    # The infrastructure rules read context.environment; the caller also states context.time.
    (rules_copy / "caller_clock_test.yaml").write_text(
        """
suite: caller clock
cases:
  - name: a pipeline claiming office hours still needs approval at night
    principal:
      {id: svc:deploy-bot, kind: service, roles: [deployer], attr: {tenant: acme, owner: dana@acme.io}}
    action: deploy
    resource: {kind: infra.k8s_deployment, id: prod/checkout, attr: {tenant: acme}}
    context: {environment: prod, time: "2026-03-03T10:00:00Z"}
    now: "2026-03-03T21:30:00Z"
    expect:
      verdict: require_approval
      rules: [infra-change/after-hours-prod-change, infra-change/allow-engineers]
""",
        encoding="utf-8",
    )
    code, output = run(rules_copy)
    assert code == 0, output


def test_moving_the_suite_clock_changes_the_verdict(rules_copy: Path) -> None:
    suite = rules_copy / "infrastructure_test.yaml"
    replace_once(suite, 'now: "2026-03-03T10:00:00Z" # Tuesday', 'now: "2026-03-03T22:00:00Z" #')
    code, output = run(rules_copy)
    assert code == 1, output
    assert "FAIL  pipeline deploys to prod in business hours" in output
    assert "verdict: expected allow, got require_approval" in output


# --- JUnit and the CLI -----------------------------------------------------------------------


def test_junit_report_counts_cases_and_failures(rules_copy: Path, tmp_path: Path) -> None:
    replace_once(rules_copy / "iam_test.yaml", "      quorum: 2\n", "      quorum: 3\n")
    report = tmp_path / "out" / "policy.junit.xml"

    code, output = run(rules_copy, junit=report)

    assert code == 1, output
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    failures = root.findall("./testsuite/testcase/failure")
    assert int(root.attrib["tests"]) == len(cases) == case_count(rules_copy)
    assert int(root.attrib["failures"]) == len(failures) == 1
    assert failures[0].attrib["message"] == "approval quorum: expected 3, got 2"
    assert str(rules_copy / "iam_test.yaml") in (failures[0].text or "")
    for suite_el in root.findall("testsuite"):
        assert int(suite_el.attrib["tests"]) == len(suite_el.findall("testcase"))
        assert int(suite_el.attrib["failures"]) == len(suite_el.findall("testcase/failure"))


def test_junit_report_records_a_bundle_that_does_not_load(rules_copy: Path, tmp_path: Path) -> None:
    replace_once(rules_copy / "iam.yaml", "when: V.prod\n", "when: V.production\n")
    report = tmp_path / "policy.junit.xml"
    code, _ = run(rules_copy, junit=report)
    assert code == 2
    root = ET.parse(report).getroot()
    assert root.attrib["errors"] == "1"
    error = root.find("./testsuite/testcase/error")
    assert error is not None
    assert "unknown variable V.production" in (error.text or "")


def test_cli_arguments_select_a_backend_and_run(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_test_arguments(parser)
    args = parser.parse_args([str(RULES), "--backend", "cel-python"])
    assert run_test(args) == 0
    assert "on cel-python;" in capsys.readouterr().out


def test_cli_defaults_to_both_backends_and_the_rules_directory() -> None:
    parser = argparse.ArgumentParser()
    add_test_arguments(parser)
    args = parser.parse_args([])
    assert args.rules_dir == Path("rules")
    assert args.backend == "both"
    assert args.junit is None


def test_an_unknown_backend_exits_2() -> None:
    code, output = run(RULES, backends=("cel-go",))
    assert code == 2
    assert "cel-go" in output
