"""Decision semantics: default deny, precedence, merging, fail-closed errors, indexing."""

from __future__ import annotations

import datetime as dt

import pytest

from signoff.engine.evaluator import EVALUATION_ERROR, NO_MATCH, Engine
from signoff.engine.model import (
    Context,
    FieldRef,
    MaskOp,
    Principal,
    PrincipalKind,
    Request,
    Resource,
    Verdict,
)
from signoff.errors import InvalidRequest
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules, fixed_clock

SCHEMA = """
schema:
  principal: {tenant: string, mfa: bool, level: int}
  resource: {tenant: string, rows: int}
  context: {ticket: string}
  payload: {target: string}
"""


def engine_for(write_rules: WriteRules, backend: str, policies: str, **extra: str) -> Engine:
    root = write_rules(schema=SCHEMA, policies=policies, **extra)
    return Engine(load_bundle(root, backend=backend), clock=fixed_clock("2026-03-02T14:00:00Z"))


def req(
    *,
    kind: PrincipalKind = PrincipalKind.HUMAN,
    roles: tuple[str, ...] = (),
    pattr: dict[str, object] | None = None,
    action: str = "read",
    rkind: str = "db",
    rattr: dict[str, object] | None = None,
    fields: tuple[FieldRef, ...] = (),
    payload: dict[str, object] | None = None,
) -> Request:
    return Request(
        principal=Principal("alice", kind, roles, pattr or {}),
        action=action,
        resource=Resource(rkind, "r1", rattr or {}, fields),
        context=Context(environment="prod"),
        payload=payload or {},
    )


def one_policy(*rules: str, resources: str = "[db]", actions: str = "[read]") -> str:
    body = "\n".join(rules)
    return f"""
policies:
  - id: p
    resources: {resources}
    actions: {actions}
    rules:
{body}
"""


ALLOW = "      - {id: allow, effect: allow}"
DENY = "      - {id: deny, effect: deny, reason: forbidden}"
MASK = "      - {id: mask, effect: mask, mask: [{tags: [pii], operator: redact}]}"
APPROVE = "      - {id: approve, effect: require_approval, approval: {approvers: {roles: [boss]}}}"


def test_no_candidate_rule_is_default_deny(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(write_rules, backend, one_policy(ALLOW))
    decision = engine.decide(req(rkind="unknown_kind"))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == (NO_MATCH,)


def test_candidate_rules_that_do_not_match_are_default_deny(
    write_rules: WriteRules, backend: str
) -> None:
    engine = engine_for(
        write_rules, backend, one_policy("      - {id: a, effect: allow, when: 'false'}")
    )
    assert engine.decide(req()).verdict is Verdict.DENY


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ((ALLOW,), Verdict.ALLOW),
        ((MASK,), Verdict.MASK),
        ((ALLOW, MASK), Verdict.MASK),
        ((ALLOW, MASK, APPROVE), Verdict.REQUIRE_APPROVAL),
        ((APPROVE, ALLOW), Verdict.REQUIRE_APPROVAL),
        ((ALLOW, MASK, APPROVE, DENY), Verdict.DENY),
        ((DENY, ALLOW), Verdict.DENY),
    ],
)
def test_precedence_is_deny_then_approval_then_mask_then_allow(
    write_rules: WriteRules, backend: str, rules: tuple[str, ...], expected: Verdict
) -> None:
    engine = engine_for(write_rules, backend, one_policy(*rules))
    decision = engine.decide(req(fields=(FieldRef("email", ("pii",)),)))
    assert decision.verdict is expected


def test_require_approval_keeps_the_masking_plan(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(write_rules, backend, one_policy(MASK, APPROVE))
    decision = engine.decide(req(fields=(FieldRef("email", ("pii",)),)))
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    assert [(m.path, m.op) for m in decision.masking_plan] == [("email", MaskOp.REDACT)]
    assert decision.approval is not None


def test_masks_merge_with_the_strictest_operator_per_field(
    write_rules: WriteRules, backend: str
) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy(
            "      - {id: m1, effect: mask, mask: [{tags: [pii.*], operator: partial, keep_first: 2, keep_last: 4}]}",
            "      - {id: m2, effect: mask, mask: [{paths: ['*.card'], operator: partial, keep_first: 0, keep_last: 6}]}",
            "      - {id: m3, effect: mask, mask: [{tags: [pii.email], operator: hash}]}",
            "      - {id: m4, effect: mask, mask: [{paths: [rows.*.email], operator: email}]}",
        ),
    )
    decision = engine.decide(
        req(
            fields=(
                FieldRef("rows.*.email", ("pii.email",)),
                FieldRef("rows.*.card", ("pii.card",)),
                FieldRef("rows.*.name"),
            )
        )
    )
    plan = {m.path: m for m in decision.masking_plan}
    assert set(plan) == {"rows.*.email", "rows.*.card"}
    assert plan["rows.*.email"].op is MaskOp.HASH
    assert plan["rows.*.email"].rule_ids == ("p/m1", "p/m3", "p/m4")
    card = plan["rows.*.card"]
    assert (card.op, card.keep_first, card.keep_last) == (MaskOp.PARTIAL, 0, 4)


def test_approval_requirements_merge_to_the_strictest(
    write_rules: WriteRules, backend: str
) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy(
            "      - {id: a1, effect: require_approval, approval: {approvers: {roles: [dba]}, quorum: 1, pending_ttl: 2h, grant_ttl: 5m}}",
            "      - {id: a2, effect: require_approval, approval: {approvers: {roles: [security], groups: [oncall]}, quorum: 2, pending_ttl: 30m, grant_ttl: 1h}}",
        ),
    )
    approval = engine.decide(req()).approval
    assert approval is not None
    assert approval.quorum == 2
    assert approval.pending_ttl == dt.timedelta(minutes=30)
    assert approval.grant_ttl == dt.timedelta(minutes=5)
    assert {(s.roles, s.groups) for s in approval.approvers} == {
        (("dba",), ()),
        (("security",), ("oncall",)),
    }
    assert approval.rule_ids == ("p/a1", "p/a2")


def test_an_erroring_deny_rule_never_lets_the_action_through(
    write_rules: WriteRules, backend: str
) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy(
            "      - {id: cross, effect: deny, when: 'principal.attr.tenant != resource.attr.tenant'}",
            ALLOW,
        ),
    )
    # principal.attr.tenant is absent: the deny rule cannot be evaluated.
    decision = engine.decide(req(rattr={"tenant": "acme"}))
    assert decision.verdict is Verdict.DENY
    assert EVALUATION_ERROR in decision.reasons
    assert decision.errored_rules == ("p/cross",)


def test_an_error_in_an_allow_rule_also_denies(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy(
            "      - {id: ok, effect: allow}",
            "      - {id: bad, effect: allow, when: 'resource.attr.rows / 0 > 1'}",
        ),
    )
    decision = engine.decide(req(rattr={"rows": 5}))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == (EVALUATION_ERROR,)


def test_an_error_in_a_derived_role_denies(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy("      - {id: a, effect: allow, roles: [trusted]}"),
        roles="""
derived_roles:
  - name: trusted
    when: principal.attr.mfa
""",
    )
    assert engine.decide(req(pattr={"mfa": True})).verdict is Verdict.ALLOW
    assert engine.decide(req(pattr={"mfa": False})).verdict is Verdict.DENY
    absent = engine.decide(req())
    assert absent.verdict is Verdict.DENY
    assert absent.reasons == (EVALUATION_ERROR,)


def test_derived_role_requires_a_parent_role(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy("      - {id: a, effect: allow, roles: [owner]}"),
        roles="""
derived_roles:
  - name: owner
    parent_roles: [employee]
    when: resource.attr.tenant == principal.attr.tenant
""",
    )
    same: dict[str, object] = {"tenant": "acme"}
    assert engine.decide(req(roles=("employee",), pattr=same, rattr=same)).verdict is Verdict.ALLOW
    assert engine.decide(req(roles=("guest",), pattr=same, rattr=same)).verdict is Verdict.DENY


def test_static_role_selector(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(
        write_rules, backend, one_policy("      - {id: a, effect: allow, roles: [admin]}")
    )
    assert engine.decide(req(roles=("admin",))).verdict is Verdict.ALLOW
    assert engine.decide(req(roles=("viewer",))).verdict is Verdict.DENY


def test_rules_of_other_kinds_and_actions_are_not_evaluated(
    write_rules: WriteRules, backend: str
) -> None:
    policies = """
policies:
  - id: other
    resources: [other_kind]
    actions: ["*"]
    rules: [{id: broken, effect: deny, when: 'principal.attr.level > 1'}]
  - id: db
    resources: ["d*"]
    actions: ["read", "list.*"]
    rules: [{id: ok, effect: allow}]
"""
    engine = engine_for(write_rules, backend, policies)
    # principal.attr.level is absent: evaluating `other/broken` would error and deny.
    assert engine.decide(req()).verdict is Verdict.ALLOW
    assert engine.decide(req(action="list.rows")).verdict is Verdict.ALLOW
    assert engine.decide(req(action="write")).verdict is Verdict.DENY
    assert [r.rule_id for r in engine.candidates("db", "read")] == ["db/ok"]


def test_variables_are_expanded_into_conditions(write_rules: WriteRules, backend: str) -> None:
    policies = """
policies:
  - id: p
    resources: [db]
    actions: [read]
    variables:
      same_tenant: principal.attr.tenant == resource.attr.tenant
      trusted: V.same_tenant && principal.attr.mfa
    rules:
      - {id: a, effect: allow, when: V.trusted}
"""
    engine = engine_for(write_rules, backend, policies)
    ok = req(pattr={"tenant": "a", "mfa": True}, rattr={"tenant": "a"})
    assert engine.decide(ok).verdict is Verdict.ALLOW
    other = req(pattr={"tenant": "a", "mfa": True}, rattr={"tenant": "b"})
    assert engine.decide(other).verdict is Verdict.DENY


def test_server_clock_drives_time_rules(write_rules: WriteRules, backend: str) -> None:
    root = write_rules(
        policies=one_policy("      - {id: day, effect: allow, when: \"now.getHours('UTC') >= 8\"}")
    )
    bundle = load_bundle(root, backend=backend)
    assert (
        Engine(bundle, clock=fixed_clock("2026-03-02T09:00:00Z")).decide(req()).verdict
        is Verdict.ALLOW
    )
    assert (
        Engine(bundle, clock=fixed_clock("2026-03-02T02:00:00Z")).decide(req()).verdict
        is Verdict.DENY
    )


def test_undeclared_attribute_is_invalid(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(write_rules, backend, one_policy(ALLOW))
    with pytest.raises(InvalidRequest) as info:
        engine.decide(req(pattr={"tennant": "acme"}))
    assert info.value.field == "principal.attributes.tennant"


@pytest.mark.parametrize(
    ("pattr", "field"),
    [
        ({"level": 1.5}, "principal.attributes.level"),
        ({"level": "3"}, "principal.attributes.level"),
        ({"mfa": "yes"}, "principal.attributes.mfa"),
        ({"tenant": 7}, "principal.attributes.tenant"),
    ],
)
def test_mistyped_attribute_is_invalid(
    write_rules: WriteRules, backend: str, pattr: dict[str, object], field: str
) -> None:
    engine = engine_for(write_rules, backend, one_policy(ALLOW))
    with pytest.raises(InvalidRequest) as info:
        engine.decide(req(pattr=pattr))
    assert info.value.field == field


def test_json_doubles_become_declared_ints(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy("      - {id: a, effect: allow, when: 'principal.attr.level == 3'}"),
    )
    assert engine.decide(req(pattr={"level": 3.0})).verdict is Verdict.ALLOW


def test_undeclared_payload_keys_are_ignored_and_declared_ones_checked(
    write_rules: WriteRules, backend: str
) -> None:
    engine = engine_for(
        write_rules,
        backend,
        one_policy("      - {id: a, effect: allow, when: \"payload.target.startsWith('s3://')\"}"),
    )
    assert (
        engine.decide(req(payload={"target": "s3://x", "sql": "select"})).verdict is Verdict.ALLOW
    )
    with pytest.raises(InvalidRequest):
        engine.decide(req(payload={"target": 3}))


def test_deny_reasons_default_to_the_rule_id(write_rules: WriteRules, backend: str) -> None:
    engine = engine_for(write_rules, backend, one_policy("      - {id: nope, effect: deny}"))
    assert engine.decide(req()).reasons == ("denied by p/nope",)


def test_a_variable_may_yield_any_type(write_rules: WriteRules, backend: str) -> None:
    policies = """
policies:
  - id: p
    resources: [db]
    actions: [read]
    variables:
      hour: now.getHours('UTC')
    rules: [{id: late, effect: allow, when: "V.hour >= 12"}]
"""
    assert engine_for(write_rules, backend, policies).decide(req()).verdict is Verdict.ALLOW


def test_timestamp_values_nested_in_maps_are_readable(
    write_rules: WriteRules, backend: str
) -> None:
    root = write_rules(
        schema="schema:\n  principal: {since: timestamp, grace: duration}\n",
        policies=one_policy(
            "      - {id: a, effect: allow, when: 'principal.attr.since + principal.attr.grace < now'}"
        ),
    )
    engine = Engine(load_bundle(root, backend=backend), clock=fixed_clock("2026-03-02T14:00:00Z"))
    old = req(pattr={"since": "2026-03-01T00:00:00Z", "grace": "1h"})
    new = req(pattr={"since": "2026-03-02T13:30:00Z", "grace": "1h"})
    assert engine.decide(old).verdict is Verdict.ALLOW
    assert engine.decide(new).verdict is Verdict.DENY
    assert engine.decide(new).errored_rules == ()


OWNED = """
schema:
  principal: {owner: string, owners: list<string>}
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - id: ask
        effect: require_approval
        approval:
          approvers: {roles: [boss]}
          requester_identities: [principal.attr.owner, principal.attr.owners]
"""


@pytest.mark.parametrize("kind", [PrincipalKind.AGENT, PrincipalKind.SERVICE])
@pytest.mark.parametrize("attrs", [{}, {"owner": ""}, {"owner": "  "}, {"owners": []}])
def test_an_agent_that_names_no_owner_cannot_ask_for_sign_off(
    write_rules: WriteRules, backend: str, kind: PrincipalKind, attrs: dict[str, object]
) -> None:
    engine = Engine(load_bundle(write_rules(p=OWNED), backend=backend))
    decision = engine.decide(req(kind=kind, pattr=attrs))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == ("requester_identity_missing",)


def test_an_agents_owners_are_its_own_identities(write_rules: WriteRules, backend: str) -> None:
    engine = Engine(load_bundle(write_rules(p=OWNED), backend=backend))
    decision = engine.decide(req(kind=PrincipalKind.AGENT, pattr={"owners": ["dana@acme.io"]}))
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    assert decision.approval is not None
    assert decision.approval.requester_ids == ("alice", "dana@acme.io")


def test_a_human_needs_no_owner_to_ask_for_sign_off(write_rules: WriteRules, backend: str) -> None:
    engine = Engine(load_bundle(write_rules(p=OWNED), backend=backend))
    assert engine.decide(req()).verdict is Verdict.REQUIRE_APPROVAL
