"""The decision record: written by the decision core, stored unchanged, read back by replay."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis

from signoff.audit.chain import canonical_json
from signoff.audit.record import DecisionRecord, MalformedRecord
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.engine.model import (
    Decision,
    FieldMask,
    FieldRef,
    MaskOp,
    ShadowOutcome,
    Verdict,
)
from signoff.policy.loader import load_bundle
from signoff.views import AuditSelection, Views
from tests.audit.conftest import MakeLog
from tests.audit.support import records
from tests.conftest import WriteRules, fixed_clock
from tests.engine.test_evaluator import SCHEMA, one_policy, req

MASK_CARDS = (
    "      - {id: allow, effect: allow}\n"
    "      - {id: mask-cards, effect: mask, mask: [{tags: [pci], operator: partial, "
    "keep_last: 4}]}"
)
VIEWS = Views(
    hash_key=b"h" * 32,
    hash_key_id="k1",
    audit=AuditSelection.parse(["principal.tenant"], ["target"]),
)


def test_a_plain_request_is_decided_and_recorded_with_its_caller_without_a_server(
    write_rules: WriteRules, make_log: MakeLog, r: redis.Redis
) -> None:
    root = write_rules(schema=SCHEMA, policies=one_policy(MASK_CARDS))
    engine = Engine(load_bundle(root), clock=fixed_clock("2026-03-02T14:00:00Z"))
    log = make_log()
    core = Decisions(audit=log, views=VIEWS)
    request = req(
        pattr={"tenant": "acme", "level": 3},
        fields=(FieldRef("rows.*.card", ("pci",)),),
        payload={"target": "s3://acme/out", "note": "n"},
    )

    outcome = core.decide(engine, request, caller="spiffe://acme/pipeline")

    assert outcome.decision.verdict is Verdict.MASK
    assert outcome.decision_id
    assert not outcome.approval_id
    assert log.flush()
    [stored] = records(r, log.keys["decisions"].stream)
    assert stored["decision_id"] == outcome.decision_id
    assert stored["caller"] == "spiffe://acme/pipeline"
    assert stored["masking"] == [
        {"path": "rows.*.card", "operator": "partial", "keep_first": 0, "keep_last": 4}
    ]
    assert stored["request"]["principal"]["attributes"] == {"tenant": "acme"}
    assert stored["request"]["payload_keys"] == ["note", "target"]
    assert log.verify("decisions").ok

    back = DecisionRecord.parse(stored, 1)
    assert back.decision_id == outcome.decision_id
    assert back.verdict is back.policy_verdict is Verdict.MASK
    assert back.masking == (FieldMask("rows.*.card", MaskOp.PARTIAL, 0, 4),)
    assert back.masked == {"rows.*.card"}
    assert back.caller == "spiffe://acme/pipeline"
    assert back.at is not None
    assert back.at.tzinfo is not None
    assert back.kept.principal.id == "alice"
    assert back.kept.principal.attributes == {"tenant": "acme"}
    assert back.kept.payload == {"target": "s3://acme/out"}
    assert back.kept.names == {
        "principal": frozenset({"tenant", "level"}),
        "resource": frozenset(),
        "context": frozenset(),
    }


def _as_the_handler_wrote_it(
    decision: Decision, policy: Decision, view: dict[str, Any]
) -> dict[str, Any]:
    """The record as DecisionService._record built it by hand before the record had a type:
    stored records are hashed over their canonical JSON, so the shape must not move."""
    assert policy.shadow is not None
    return {
        "type": "decision",
        "decision_id": "d-1",
        "verdict": decision.verdict.name,
        "policy_verdict": policy.verdict.name,
        "policy_revision": decision.policy_revision,
        "matched_rules": list(decision.matched_rules),
        "errored_rules": list(decision.errored_rules),
        "reasons": list(decision.reasons),
        "approval_id": "a-1",
        "masked_fields": [m.path for m in decision.masking_plan],
        "masking": [
            {
                "path": m.path,
                "operator": m.op.name.lower(),
                "keep_first": m.keep_first,
                "keep_last": m.keep_last,
            }
            for m in decision.masking_plan
        ],
        "trace_id": "f" * 32,
        "caller": "spiffe://acme/pipeline",
        "request": view,
        "shadow": {
            "verdict": policy.shadow.verdict.name,
            "matched_rules": list(policy.shadow.matched_rules),
            "errored_rules": list(policy.shadow.errored_rules),
            "reasons": list(policy.shadow.reasons),
            "changes_verdict": policy.shadow.verdict is not policy.verdict,
        },
    }


def test_the_typed_record_is_stored_as_the_same_json_as_before() -> None:
    plan = (FieldMask("rows.*.card", MaskOp.PARTIAL, 0, 4, ("mask-cards",)),)
    policy = Decision(
        Verdict.REQUIRE_APPROVAL,
        "rev-1",
        matched_rules=("allow", "mask-cards", "needs-approval"),
        reasons=("big export",),
        masking_plan=plan,
        shadow=ShadowOutcome(Verdict.DENY, ("stricter",), ("broken",), ("would deny",)),
    )
    enforced = Decision(
        Verdict.MASK,
        "rev-1",
        matched_rules=policy.matched_rules,
        reasons=("approved: a-1",),
        masking_plan=plan,
    )
    request = req(pattr={"tenant": "acme"}, payload={"target": "x"})
    view = VIEWS.audit_view(request, enforced)

    written = DecisionRecord.of(
        "d-1", enforced, policy, "a-1", "f" * 32, "spiffe://acme/pipeline", view
    ).doc()

    assert canonical_json(written) == canonical_json(
        _as_the_handler_wrote_it(enforced, policy, view)
    )
    back = DecisionRecord.parse({**written, "at": "2026-03-02T14:00:00.000Z"}, 1)
    assert back.policy_verdict is Verdict.REQUIRE_APPROVAL
    assert back.verdict is Verdict.MASK
    assert back.at == dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC)


def test_a_record_without_a_caller_or_shadow_has_neither_key() -> None:
    decision = Decision(Verdict.ALLOW, "rev-1", matched_rules=("allow",))
    view = VIEWS.audit_view(req(), decision)
    written = DecisionRecord.of("d-2", decision, decision, "", "", "", view).doc()
    assert "caller" not in written
    assert "shadow" not in written
    assert "at" not in written  # the log stamps it when the record is queued


def test_a_masking_entry_naming_no_operator_is_a_malformed_record() -> None:
    decision = Decision(Verdict.MASK, "rev-1", masking_plan=(FieldMask("a.b", MaskOp.REDACT),))
    written = DecisionRecord.of("d-3", decision, decision, "", "", "", {}).doc()
    written["at"] = "2026-03-02T14:00:00.000Z"
    written["request"] = VIEWS.audit_view(req(), decision)
    written["masking"][0]["operator"] = "scramble"
    with pytest.raises(MalformedRecord, match=r"masking\[0\]\.operator is not a masking"):
        DecisionRecord.parse(written, 7)


LABELLED_APPROVAL = (
    "      - {id: approve, effect: require_approval, approval: {approvers: {roles: [boss]}},"
    " labels: {compliance: [soc2, gdpr]}}\n"
    "      - {id: approve-data, effect: require_approval, approval: {approvers: {roles: [dpo]}},"
    " labels: {data: [customer], compliance: [gdpr]}}"
)


def test_a_decision_record_carries_the_labels_of_the_rules_that_asked_and_still_verifies(
    write_rules: WriteRules, make_log: MakeLog, r: redis.Redis
) -> None:
    root = write_rules(schema=SCHEMA, policies=one_policy(LABELLED_APPROVAL))
    engine = Engine(load_bundle(root), clock=fixed_clock("2026-03-02T14:00:00Z"))
    decision = engine.decide(req())
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    log = make_log()

    log.submit(
        DecisionRecord.of(
            "d-4", decision, decision, "a-4", "", "", VIEWS.audit_view(req(), decision)
        )
    )

    assert log.flush()
    [stored] = records(r, log.keys["decisions"].stream)
    assert stored["labels"] == {"compliance": ["gdpr", "soc2"], "data": ["customer"]}
    assert log.verify("decisions").ok
    back = DecisionRecord.parse(stored, 1)
    assert back.labels == (("compliance", ("gdpr", "soc2")), ("data", ("customer",)))


def test_a_record_without_labels_has_no_labels_key_and_reads_back_with_none() -> None:
    decision = Decision(Verdict.ALLOW, "rev-1", matched_rules=("allow",))
    written = DecisionRecord.of("d-5", decision, decision, "", "", "", {}).doc()
    assert "labels" not in written
    written["at"] = "2026-03-02T14:00:00.000Z"
    written["request"] = VIEWS.audit_view(req(), decision)
    assert DecisionRecord.parse(written, 1).labels == ()


def test_labels_of_the_wrong_shape_are_a_malformed_record_naming_the_field() -> None:
    decision = Decision(Verdict.ALLOW, "rev-1")
    written = DecisionRecord.of("d-6", decision, decision, "", "", "", {}).doc()
    written["request"] = VIEWS.audit_view(req(), decision)
    written["at"] = "2026-03-02T14:00:00.000Z"
    written["labels"] = {"compliance": "soc2"}
    with pytest.raises(MalformedRecord, match=r"labels\.compliance is not a list of strings"):
        DecisionRecord.parse(written, 3)
