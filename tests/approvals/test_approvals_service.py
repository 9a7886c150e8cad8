"""The approval lifecycle called directly, as any surface (HTTP, chat, web) calls it: no gRPC."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from signoff.approvals.digest import digest_key
from signoff.approvals.model import ApprovalRequest, Identity, ReviewerView, State
from signoff.approvals.service import Approvals, Held
from signoff.approvals.store import ApprovalStore, Result
from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, FieldRef, Request, Verdict
from signoff.errors import Conflict, InvalidRequest, NotFound, Overloaded, PermissionDenied
from signoff.observability import Telemetry
from signoff.server import convert
from signoff.views import Views
from tests.approvals.support import ManualClock
from tests.conftest import fixed_clock
from tests.observability.harness import by_label, metric_points
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, bundled, drop_prefix, prod_grant

IVAN = Identity("ivan@acme.io", "human", frozenset({"iam_admin"}))
RITA = Identity("rita@acme.io", "human", frozenset({"security"}))
SEC2 = Identity("sec2@acme.io", "human", frozenset({"security"}))
BOT = Identity("svc:bot", "service", frozenset({"security"}))
STRANGER = Identity("zoe@acme.io", "human", frozenset({"analyst"}))


@dataclasses.dataclass
class Lab:
    approvals: Approvals
    store: ApprovalStore
    clock: ManualClock
    reader: InMemoryMetricReader


@pytest.fixture
def lab() -> Iterator[Lab]:
    clock = ManualClock()
    store = ApprovalStore(
        REDIS_URL, prefix=f"signoff:test:approvals-core:{uuid.uuid4().hex}:", clock=clock
    )
    reader = InMemoryMetricReader()
    approvals = Approvals(
        store,
        digest_key=digest_key(KEY),
        views=Views(hash_key=KEY, hash_key_id=KEY_ID),
        telemetry=Telemetry.for_tests(metric_reader=reader),
        watch_poll_ms=20,
        watch_max_seconds=2.0,
        max_watchers=4,
    )
    try:
        yield Lab(approvals, store, clock, reader)
    finally:
        drop_prefix(store.redis, store.prefix)


def decided() -> tuple[Request, Decision]:
    request = convert.to_request(prod_grant(), convert.Limits())
    return request, Engine(bundled(), clock=fixed_clock(DAY)).decide(request)


def outcomes(lab: Lab) -> dict[str, int]:
    points = by_label(metric_points(lab.reader, "signoff.approvals.outcomes"), "outcome")
    return {name: int(p.value) for name, p in points.items()}


def test_a_decision_is_held_voted_on_and_consumed_once_without_any_grpc(lab: Lab) -> None:
    request, decision = decided()
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    held = lab.approvals.apply(request, decision, "dec-1")
    assert held.transition is Result.CREATED
    assert held.decision is decision
    # The same exact action again waits for the same approval instead of opening another.
    assert lab.approvals.apply(request, decision, "dec-2") == Held(decision, held.approval_id)

    assert [r.id for r in lab.approvals.list(RITA)] == [held.approval_id]
    assert lab.approvals.list(STRANGER) == []
    first = lab.approvals.vote(held.approval_id, RITA, "ticket CHG-1", approve=True)
    assert first.state is State.PENDING
    second = lab.approvals.vote(held.approval_id, SEC2, "ticket CHG-1", approve=True)
    assert second.state is State.APPROVED
    assert {v.approver_id for v in second.votes} == {"rita@acme.io", "sec2@acme.io"}

    presented = dataclasses.replace(request, approval_id=held.approval_id)
    used = lab.approvals.apply(presented, decision, "dec-3")
    assert used.transition is Result.CONSUMED
    assert used.decision.verdict is Verdict.ALLOW
    again = lab.approvals.apply(presented, decision, "dec-4")
    assert again.decision.verdict is Verdict.DENY
    assert again.decision.reasons == ("approval_already_used",)
    assert lab.approvals.get(held.approval_id, IVAN).state is State.CONSUMED
    assert outcomes(lab) == {"approved": 1, "consumed": 1}


def test_eligibility_and_store_results_come_back_as_signoff_errors(lab: Lab) -> None:
    request, decision = decided()
    approval_id = lab.approvals.apply(request, decision, "dec-1").approval_id
    with pytest.raises(PermissionDenied) as self_vote:
        lab.approvals.vote(approval_id, IVAN, "mine", approve=True)
    assert self_vote.value.code == "self_approval"
    with pytest.raises(PermissionDenied) as machine:
        lab.approvals.vote(approval_id, BOT, "ok", approve=True)
    assert machine.value.code == "not_human"
    with pytest.raises(PermissionDenied) as stranger:
        lab.approvals.get(approval_id, STRANGER)
    assert stranger.value.code == "not_eligible"
    with pytest.raises(InvalidRequest) as no_reason:
        lab.approvals.vote(approval_id, RITA, "   ", approve=False)
    assert no_reason.value.field == "reason"
    with pytest.raises(NotFound):
        lab.approvals.get("apr_" + "A" * 24, RITA)
    with pytest.raises(PermissionDenied) as not_requester:
        lab.approvals.cancel(approval_id, RITA)
    assert not_requester.value.code == "not_requester"

    rejected = lab.approvals.vote(approval_id, RITA, "not now", approve=False)
    assert rejected.state is State.REJECTED
    with pytest.raises(Conflict, match="rejected, not pending"):
        lab.approvals.vote(approval_id, SEC2, "late", approve=True)
    with pytest.raises(Conflict, match="only pending or approved can be cancelled"):
        lab.approvals.cancel(approval_id, IVAN)
    assert outcomes(lab) == {"rejected": 1}


def test_the_requester_cancels_and_a_watch_sees_every_change_until_final(lab: Lab) -> None:
    request, decision = decided()
    approval_id = lab.approvals.apply(request, decision, "dec-1").approval_id
    with closing(lab.approvals.watch(approval_id, IVAN)) as updates:
        assert next(updates).state is State.PENDING
        lab.approvals.vote(approval_id, RITA, "one of two", approve=True)
        assert len(next(updates).votes) == 1
        assert lab.approvals.cancel(approval_id, IVAN).final_reason == "cancelled by the requester"
        assert next(updates).state is State.CANCELLED
        assert next(updates, None) is None
    assert outcomes(lab) == {"cancelled": 1}


def test_a_caller_holds_at_most_two_watches_and_a_closed_one_frees_its_slot(lab: Lab) -> None:
    request, decision = decided()
    approval_id = lab.approvals.apply(request, decision, "dec-1").approval_id
    one, two = (lab.approvals.watch(approval_id, RITA) for _ in range(2))
    next(one), next(two)
    with pytest.raises(Overloaded):
        next(lab.approvals.watch(approval_id, RITA))
    # Another caller is not held back by RITA's watches.
    with closing(lab.approvals.watch(approval_id, IVAN)) as ivans:
        assert next(ivans).id == approval_id
    one.close()
    with closing(lab.approvals.watch(approval_id, RITA)) as three:
        assert next(three).id == approval_id
    two.close()


def test_store_results_are_an_enum_that_still_reads_as_the_script_strings(lab: Lab) -> None:
    request, decision = decided()
    approval_id = lab.approvals.apply(request, decision, "dec-1").approval_id
    outcome = lab.store.approve(approval_id, "rita@acme.io", "ok", 2)
    # Callers that compare with the script's own words keep working.
    assert outcome.status == "voted"
    assert outcome.status is Result.VOTED
    assert lab.store.approve(approval_id, "rita@acme.io", "ok", 2).status is Result.DUPLICATE
    assert lab.store.consume(approval_id, "other digest", "ivan").status is Result.MISMATCH


# An approval document exactly as signoff wrote it before the reviewer view had a type.
STORED_DOC = {
    "decision_id": "dec-old",
    "policy_revision": "rev-old",
    "requester_id": "ivan@acme.io",
    "requester_ids": ["ivan@acme.io"],
    "requester_kind": "human",
    "requirement": {
        "approvers": [{"groups": [], "roles": ["security"]}],
        "grant_ttl_seconds": 900,
        "pending_ttl_seconds": 14400,
        "quorum": 2,
        "rule_ids": ["iam-grants/prod-needs-two-security-approvers"],
    },
    "view": {
        "action": "grant_role",
        "environment": "prod",
        "fields": [{"path": "role", "tags": ["iam"]}],
        "masking_plan": [
            {"keep_first": 0, "keep_last": 4, "operator": "partial", "path": "card"},
        ],
        "matched_rules": ["iam-grants/prod-needs-two-security-approvers"],
        "payload": {"card": "**********1111", "role": "db-admin"},
        "reasons": ["privilege escalation in prod needs two security approvers"],
        "requester_id": "ivan@acme.io",
        "requester_kind": "human",
        "requester_roles": ["iam_admin"],
        "resource_id": "roles/db-admin",
        "resource_kind": "iam_role",
    },
}


def test_a_stored_approval_document_reads_back_typed_and_writes_back_byte_for_byte() -> None:
    asked = ApprovalRequest.from_doc(STORED_DOC)
    assert asked.view == ReviewerView(
        requester_id="ivan@acme.io",
        requester_kind="human",
        action="grant_role",
        resource_kind="iam_role",
        requester_roles=("iam_admin",),
        resource_id="roles/db-admin",
        fields=(FieldRef("role", ("iam",)),),
        payload={"card": "**********1111", "role": "db-admin"},
        environment="prod",
        reasons=("privilege escalation in prod needs two security approvers",),
        matched_rules=("iam-grants/prod-needs-two-security-approvers",),
        masking_plan=asked.view.masking_plan,
    )
    assert asked.view.masking_plan[0].operator == "partial"

    def stored(doc: object) -> str:
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    assert stored(asked.to_doc()) == stored(STORED_DOC)
