from __future__ import annotations

from dataclasses import replace

from signoff.engine.evaluator import Engine
from signoff.engine.model import RuleOutcome, Verdict
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules, fixed_clock
from tests.engine.test_evaluator import SCHEMA, req

POLICIES = """
policies:
  - id: live
    resources: [db]
    actions: [read]
    rules:
      - {id: analysts, effect: allow, roles: [analyst]}
      - {id: mask-pii, effect: mask, roles: [analyst], when: "principal.attr.level < 2", mask: [{tags: [pii], operator: redact}]}
  - id: stricter
    resources: [db]
    actions: [read]
    rules:
      - {id: mfa-only, effect: deny, when: "!principal.attr.mfa", shadow: true, reason: needs mfa}
      - {id: broken, effect: deny, when: "principal.attr.level / 0 > 1", shadow: true}
  - id: trial
    shadow: true
    resources: [db]
    actions: [read]
    rules:
      - {id: approve-bulk, effect: require_approval, when: "principal.attr.level > 5", approval: {approvers: {roles: [boss]}}}
"""


def engine(write_rules: WriteRules, backend: str, policies: str = POLICIES) -> Engine:
    root = write_rules(schema=SCHEMA, policies=policies)
    return Engine(load_bundle(root, backend=backend), clock=fixed_clock("2026-03-02T14:00:00Z"))


def test_a_shadow_deny_is_recorded_but_not_enforced(write_rules: WriteRules, backend: str) -> None:
    decision = engine(write_rules, backend).decide(
        req(roles=("analyst",), pattr={"mfa": False, "level": 3})
    )
    assert decision.verdict is Verdict.ALLOW
    assert decision.matched_rules == ("live/analysts",)
    assert decision.shadow is not None
    assert decision.shadow.verdict is Verdict.DENY
    assert "live/analysts" not in decision.shadow.matched_rules
    assert decision.shadow.matched_rules == ("stricter/mfa-only",)
    assert decision.shadow.errored_rules == ("stricter/broken",)
    assert "needs mfa" in decision.shadow.reasons


def test_a_shadow_policy_marks_every_rule_as_audit_only(
    write_rules: WriteRules, backend: str
) -> None:
    e = engine(write_rules, backend)
    rules = {r.rule_id: r for r in e.candidates("db", "read")}
    assert rules["trial/approve-bulk"].shadow
    assert not rules["live/analysts"].shadow
    decision = e.decide(req(roles=("analyst",), pattr={"mfa": True, "level": 9}))
    assert decision.verdict is Verdict.ALLOW
    assert decision.approval is None
    assert decision.shadow is not None
    assert "trial/approve-bulk" in decision.shadow.matched_rules


def test_when_shadow_rules_agree_the_would_be_verdict_is_the_enforced_one(
    write_rules: WriteRules, backend: str
) -> None:
    policies = POLICIES.replace(
        '      - {id: broken, effect: deny, when: "principal.attr.level / 0 > 1", shadow: true}\n',
        "",
    )
    decision = engine(write_rules, backend, policies).decide(
        req(roles=("analyst",), pattr={"mfa": True, "level": 1}, fields=())
    )
    assert decision.shadow is not None
    assert decision.shadow.verdict is decision.verdict


def test_no_shadow_outcome_without_shadow_rules(write_rules: WriteRules, backend: str) -> None:
    policies = POLICIES.split("  - id: stricter")[0]
    decision = engine(write_rules, backend, policies).decide(req(roles=("analyst",)))
    assert decision.shadow is None


def test_explanations_list_shadow_rules_as_such(write_rules: WriteRules, backend: str) -> None:
    decision = engine(write_rules, backend).decide(
        replace(req(roles=("analyst",), pattr={"mfa": False, "level": 3}), explain=True)
    )
    assert decision.explanation is not None
    traces = {t.rule_id: t for t in decision.explanation.rules}
    assert traces["stricter/mfa-only"].shadow
    assert traces["stricter/mfa-only"].outcome is RuleOutcome.MATCHED
    assert not traces["stricter/mfa-only"].counted
    assert traces["stricter/broken"].outcome is RuleOutcome.ERROR
    assert decision.explanation.decided_by == ("live/analysts",)
