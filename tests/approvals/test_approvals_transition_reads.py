"""A vote or cancel answers with the approval as its own transition left it, in one read less."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from signoff.approvals.digest import digest_key
from signoff.approvals.model import ApprovalRecord, Identity, State
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.views import Views
from tests.approvals.support import ManualClock
from tests.approvals.test_approvals_service import IVAN, RITA, SEC2, decided
from tests.durability.support import RedisServer
from tests.server.harness import KEY, KEY_ID, REDIS_URL, drop_prefix

DAVE = Identity("dave@acme.io", "human", frozenset({"security"}))


@dataclasses.dataclass
class Lab:
    approvals: Approvals
    store: ApprovalStore
    clock: ManualClock


def _lab(url: str) -> Lab:
    clock = ManualClock()
    store = ApprovalStore(url, prefix=f"signoff:test:reads:{uuid.uuid4().hex}:", clock=clock)
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    return Lab(Approvals(store, digest_key=digest_key(KEY), views=views), store, clock)


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = _lab(REDIS_URL)
    try:
        yield made
    finally:
        drop_prefix(made.store.redis, made.store.prefix)


def _held(lab: Lab, n: int = 0) -> str:
    request, decision = decided()
    request = dataclasses.replace(request, payload={"grantee": f"u{n}@acme.io", "role": "x"})
    return lab.approvals.apply(request, decision, f"dec-{n}").approval_id


def _stored(lab: Lab, approval_id: str) -> ApprovalRecord:
    record = lab.store.get(approval_id)
    assert record is not None
    return record


def test_each_vote_answers_exactly_what_a_fresh_read_then_shows(lab: Lab) -> None:
    approval_id = _held(lab)
    lab.clock.advance(1)
    first = lab.approvals.vote(approval_id, RITA, "one of two", approve=True)
    assert first.state is State.PENDING
    assert [v.approver_id for v in first.votes] == ["rita@acme.io"]
    assert first == _stored(lab, approval_id)

    again = lab.approvals.vote(approval_id, RITA, "once more", approve=True)  # duplicate
    assert again == first == _stored(lab, approval_id)

    lab.clock.advance(1)
    second = lab.approvals.vote(approval_id, SEC2, "two of two", approve=True)
    assert second.state is State.APPROVED
    assert second.approved_ms == lab.clock() > first.created_ms
    assert second.grant_expires_ms == second.approved_ms + second.grant_ttl_ms
    assert second == _stored(lab, approval_id)


def test_a_rejection_and_both_kinds_of_cancel_answer_what_a_fresh_read_shows(lab: Lab) -> None:
    rejected_id = _held(lab, 1)
    lab.approvals.vote(rejected_id, RITA, "looks fine", approve=True)
    rejected = lab.approvals.vote(rejected_id, RITA, "changed my mind", approve=False)
    assert rejected.state is State.REJECTED
    assert rejected.final_reason == "changed my mind"
    assert [v.approve for v in rejected.votes] == [False]
    assert rejected == _stored(lab, rejected_id)

    pending_id = _held(lab, 2)
    cancelled = lab.approvals.cancel(pending_id, IVAN, "not needed")
    assert (cancelled.state, cancelled.final_reason) == (State.CANCELLED, "not needed")
    assert cancelled == _stored(lab, pending_id)

    approved_id = _held(lab, 3)
    lab.approvals.vote(approved_id, RITA, "ok", approve=True)
    lab.approvals.vote(approved_id, DAVE, "ok", approve=True)
    withdrawn = lab.approvals.cancel(approved_id, IVAN)
    assert withdrawn.state is State.CANCELLED
    assert len(withdrawn.votes) == 2
    assert withdrawn == _stored(lab, approved_id)


def test_the_answer_judges_windows_on_the_clock_as_a_read_does(lab: Lab) -> None:
    approval_id = _held(lab, 4)
    before = lab.approvals.vote(approval_id, RITA, "ok", approve=True)
    outcome = lab.store.approve(approval_id, "dave@acme.io", "ok", before.quorum)
    # Read a moment after the grant window has closed: expired, as a fresh read says.
    lab.clock.advance(before.grant_ttl_ms / 1000)
    left = lab.store.as_left(before, outcome)
    assert left is not None
    assert left.state is State.EXPIRED
    assert left.final_reason == "grant window ended"
    assert left == _stored(lab, approval_id)


def test_a_refused_transition_hands_nothing_back(lab: Lab) -> None:
    approval_id = _held(lab, 5)
    before = lab.approvals.cancel(approval_id, IVAN)
    refused = lab.store.approve(approval_id, "rita@acme.io", "late", before.quorum)
    assert refused.detail == "cancelled"
    assert lab.store.as_left(before, refused) is None


@pytest.fixture
def private_lab(tmp_path: Path) -> Iterator[Lab]:
    # Its own redis-server, so its command counts are this test's alone.
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        yield _lab(server.url)
    finally:
        server.stop()


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_a_vote_reads_the_approval_once_and_runs_one_transition(private_lab: Lab) -> None:
    warm, approval_id = _held(private_lab, 1), _held(private_lab, 2)
    private_lab.approvals.vote(warm, RITA, "loads the script", approve=True)
    client = private_lab.store.redis
    before = {c: _calls(client, c) for c in ("hgetall", "evalsha", "exec")}

    private_lab.approvals.vote(approval_id, RITA, "one of two", approve=True)

    after = {c: _calls(client, c) for c in ("hgetall", "evalsha", "exec")}
    # One transaction reading the record and its votes (for eligibility), then the vote
    # script, which hands back the approval as it left it (its votes: the third HGETALL,
    # inside the script): no second read.
    assert {c: after[c] - before[c] for c in after} == {"hgetall": 3, "evalsha": 1, "exec": 1}
