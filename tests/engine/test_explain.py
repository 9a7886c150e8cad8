from __future__ import annotations

from dataclasses import replace

from signoff.engine.evaluator import Engine
from signoff.engine.model import Request, RuleOutcome, RuleTrace, Verdict
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules, fixed_clock
from tests.engine.test_evaluator import SCHEMA, one_policy, req

RULES = one_policy(
    '      - {id: deny-foreign, effect: deny, when: "principal.attr.tenant != resource.attr.tenant"}',
    '      - {id: boom, effect: deny, when: "principal.attr.level / 0 > 1", roles: [auditor]}',
    "      - {id: analysts, effect: allow, roles: [analyst]}",
    '      - {id: mfa, effect: allow, when: "principal.attr.mfa"}',
)


def engine(write_rules: WriteRules, backend: str) -> Engine:
    root = write_rules(schema=SCHEMA, policies=RULES)
    return Engine(load_bundle(root, backend=backend), clock=fixed_clock("2026-03-02T14:00:00Z"))


def explained(e: Engine, request: Request) -> dict[str, RuleTrace]:
    decision = e.decide(replace(request, explain=True))
    assert decision.explanation is not None
    assert decision == replace(e.decide(request), explanation=decision.explanation)
    return {t.rule_id: t for t in decision.explanation.rules}


def test_each_candidate_rule_reports_its_outcome_and_the_deciding_rules(
    write_rules: WriteRules, backend: str
) -> None:
    e = engine(write_rules, backend)
    request = req(roles=("analyst",), pattr={"tenant": "a", "mfa": False}, rattr={"tenant": "a"})
    decision = e.decide(replace(request, explain=True))
    assert decision.verdict is Verdict.ALLOW
    assert decision.explanation is not None
    assert decision.explanation.decided_by == ("p/analysts",)
    rules = {t.rule_id: t for t in decision.explanation.rules}
    assert rules["p/deny-foreign"].outcome is RuleOutcome.NOT_MATCHED
    assert rules["p/deny-foreign"].condition == "principal.attr.tenant != resource.attr.tenant"
    assert rules["p/boom"].outcome is RuleOutcome.ROLE_NOT_HELD
    assert rules["p/boom"].roles == ("auditor",)
    assert rules["p/analysts"].outcome is RuleOutcome.MATCHED
    assert rules["p/analysts"].condition == ""
    assert rules["p/mfa"].outcome is RuleOutcome.NOT_MATCHED
    assert all(t.counted for t in rules.values())


def test_an_erroring_rule_is_explained_with_its_error_and_decides_the_deny(
    write_rules: WriteRules, backend: str
) -> None:
    e = engine(write_rules, backend)
    request = req(
        roles=("auditor", "analyst"), pattr={"tenant": "a", "level": 3}, rattr={"tenant": "a"}
    )
    decision = e.decide(replace(request, explain=True))
    assert decision.verdict is Verdict.DENY
    assert decision.explanation is not None
    assert decision.explanation.decided_by == ("p/boom",)
    boom = {t.rule_id: t for t in decision.explanation.rules}["p/boom"]
    assert boom.outcome is RuleOutcome.ERROR
    assert boom.error
    assert "3" not in boom.error  # names no request value


def test_rules_a_deny_made_irrelevant_are_still_explained_but_not_counted(
    write_rules: WriteRules, backend: str
) -> None:
    e = engine(write_rules, backend)
    request = req(roles=("analyst",), pattr={"tenant": "a", "mfa": True}, rattr={"tenant": "b"})
    rules = explained(e, request)
    assert rules["p/deny-foreign"].outcome is RuleOutcome.MATCHED
    assert rules["p/deny-foreign"].counted
    assert rules["p/analysts"].outcome is RuleOutcome.MATCHED
    assert not rules["p/analysts"].counted
    assert not rules["p/mfa"].counted


def test_no_explanation_unless_asked(write_rules: WriteRules, backend: str) -> None:
    e = engine(write_rules, backend)
    assert (
        e.decide(req(roles=("analyst",), pattr={"tenant": "a"}, rattr={"tenant": "a"})).explanation
        is None
    )


def test_the_default_deny_is_decided_by_no_rule(write_rules: WriteRules, backend: str) -> None:
    e = engine(write_rules, backend)
    decision = e.decide(
        replace(req(pattr={"tenant": "a", "mfa": False}, rattr={"tenant": "a"}), explain=True)
    )
    assert decision.verdict is Verdict.DENY
    assert decision.explanation is not None
    assert decision.explanation.decided_by == ()


def error_of(write_rules: WriteRules, backend: str, when: str, payload: dict[str, object]) -> str:
    root = write_rules(
        schema="schema:\n  payload: {m: dyn, k: string}\n",
        policies=one_policy(f'      - {{id: r, effect: allow, when: "{when}"}}'),
    )
    e = Engine(load_bundle(root, backend=backend))
    (trace,) = explained(e, req(payload=payload)).values()
    assert trace.outcome is RuleOutcome.ERROR
    return trace.error


def test_an_evaluation_error_says_what_went_wrong_in_the_same_words_on_both_backends(
    write_rules: WriteRules, backend: str
) -> None:
    assert error_of(write_rules, backend, "payload.m.level == 1.0", {"m": [1]}) == (
        "field selection on a non-map value"
    )
    assert error_of(write_rules, backend, "payload.m + 1 == 2", {"m": 1}) in (
        "no such overload: _+_(double, int64)",  # cel-expr names the operand types
        "no such overload",
    )


def test_a_missing_key_is_named_when_the_policy_spells_it_and_never_otherwise(
    write_rules: WriteRules, backend: str
) -> None:
    assert error_of(write_rules, backend, "payload.m.department == 'x'", {"m": {}}) == (
        "no such key: department"
    )
    # The key came from the request: it could be anything, so it is not repeated.
    secret = "4111-1111-1111-1111"
    error = error_of(write_rules, backend, "payload.m[payload.k] == 1.0", {"m": {}, "k": secret})
    assert error == "no such key"
