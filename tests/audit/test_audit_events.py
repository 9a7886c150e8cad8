"""Approval events become audit records once each, and survive a consumer that dies."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from signoff.approvals.store import ApprovalStore
from signoff.audit import DEFAULT_GROUP, ApprovalEventAuditor, AuditLog
from tests.audit.conftest import MakeLog
from tests.audit.support import records

SUMMARY = {
    "requester_id": "sam@acme.io",
    "action": "grant_role",
    "fields": [{"path": "payload.role", "tags": ["iam"]}],
}


@pytest.fixture
def store(redis_url: str, prefix: str) -> ApprovalStore:
    return ApprovalStore(redis_url, prefix=prefix)


@pytest.fixture
def audit(make_log: MakeLog) -> AuditLog:
    return make_log()


@pytest.fixture
def make_auditor(
    redis_url: str, prefix: str, audit: AuditLog
) -> Iterator[collections.abc.Callable[..., ApprovalEventAuditor]]:
    made: list[ApprovalEventAuditor] = []

    def make(**options: Any) -> ApprovalEventAuditor:
        options.setdefault("consumer", f"c{len(made)}")
        auditor = ApprovalEventAuditor(audit, redis_url=redis_url, prefix=prefix, **options)
        made.append(auditor)
        return auditor

    yield make
    for auditor in made:
        auditor.close()


def _story(store: ApprovalStore, n: int = 1) -> list[str]:
    """n approvals, each created, approved (quorum 1) and consumed: 4 events per approval."""
    ids = []
    for i in range(n):
        approval_id, created = store.create(
            digest=f"digest-{i}",
            requester="sam@acme.io",
            pending_ttl_ms=60_000,
            grant_ttl_ms=60_000,
            doc={"requester_id": "sam@acme.io"},
            summary=SUMMARY,
        )
        assert created
        assert store.approve(approval_id, "rita@acme.io", "ticket CHG-1", 1).status == "approved"
        assert store.consume(approval_id, f"digest-{i}", "sam@acme.io").status == "ok"
        ids.append(approval_id)
    return ids


def _event_ids(r: redis.Redis, store: ApprovalStore) -> list[str]:
    got: Any = r.xrange(store.events_stream, "-", "+")
    return [str(i) for i, _ in got]


def _drain(*auditors: ApprovalEventAuditor, rounds: int = 50) -> int:
    total = 0
    for _ in range(rounds):
        done = sum(a.run_once() for a in auditors)
        total += done
        if not done:
            break
    return total


def _pending(r: redis.Redis, store: ApprovalStore) -> int:
    info: Any = r.xpending(store.events_stream, DEFAULT_GROUP)
    return int(info["pending"])


def test_each_event_becomes_one_record(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    (approval_id,) = _story(store)
    auditor = make_auditor()

    assert _drain(auditor) == 4

    recs = records(r, audit.keys["approvals"].stream)
    assert [(x["type"], x["from"], x["to"], x["actor"]) for x in recs] == [
        ("approval.created", "", "pending", "sam@acme.io"),
        ("approval.voted", "pending", "pending", "rita@acme.io"),
        ("approval.approved", "pending", "approved", "rita@acme.io"),
        ("approval.consumed", "approved", "consumed", "sam@acme.io"),
    ]
    assert all(x["approval_id"] == approval_id for x in recs)
    assert recs[1]["reason"] == "ticket CHG-1"
    assert recs[0]["summary"] == SUMMARY  # stored as structured JSON
    assert all(x["at"].endswith("Z") for x in recs)
    assert [x["source_event_id"] for x in recs] == _event_ids(r, store)
    assert _pending(r, store) == 0
    assert audit.verify("approvals").ok


def test_events_written_before_the_auditor_started_are_audited_too(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    _story(store, 2)
    auditor = make_auditor()
    auditor.ensure_group()
    _story(store, 1)

    assert _drain(auditor) == 12
    assert len(records(r, audit.keys["approvals"].stream)) == 12


def test_two_consumers_share_the_events_exactly_once(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    first, second = make_auditor(batch_size=3), make_auditor(batch_size=3)
    first.ensure_group()
    _story(store, 10)

    assert _drain(first, second) == 40

    sources = [x["source_event_id"] for x in records(r, audit.keys["approvals"].stream)]
    assert sorted(sources) == sorted(_event_ids(r, store))
    assert len(set(sources)) == 40
    assert audit.verify("approvals").ok


def test_a_thread_audits_events_as_they_happen(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    auditor = make_auditor(block_ms=50)
    auditor.start()
    _story(store, 3)

    deadline = time.monotonic() + 10
    while len(r.xrange(audit.keys["approvals"].stream)) < 12:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "the auditor thread did not catch up"
        time.sleep(0.02)
    auditor.stop()
    assert _pending(r, store) == 0


def test_events_of_a_crashed_consumer_are_taken_over_once(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    make_auditor().ensure_group()
    _story(store, 2)
    # A consumer reads the events and dies before auditing them: they stay pending, unacked.
    read: Any = r.xreadgroup(DEFAULT_GROUP, "dead", {store.events_stream: ">"}, count=100)
    assert len(read[0][1]) == 8
    survivor = make_auditor(claim_min_idle_ms=100)

    assert survivor.run_once() == 0  # not idle long enough yet: never taken from a live peer
    time.sleep(0.15)
    assert _drain(survivor) == 8

    sources = [x["source_event_id"] for x in records(r, audit.keys["approvals"].stream)]
    assert sorted(sources) == sorted(_event_ids(r, store))
    assert _pending(r, store) == 0


def test_a_failed_append_leaves_the_events_pending_for_the_same_consumer(
    store: ApprovalStore, make_log: MakeLog, redis_url: str, prefix: str, r: redis.Redis
) -> None:
    # The auditor's audit log points at a Redis that is not there: nothing is acknowledged.
    down = make_log(url="redis://127.0.0.1:1/0", timeout=0.2)
    auditor = ApprovalEventAuditor(down, redis_url=redis_url, prefix=prefix, consumer="c")
    auditor.ensure_group()
    _story(store, 1)
    with pytest.raises(Exception, match="unavailable"):
        auditor.run_once()
    assert _pending(r, store) == 4

    # The same consumer, audit log back: its own pending events come first, once each.
    healthy = make_log()
    auditor.audit = healthy
    assert _drain(auditor) == 4
    assert len(records(r, healthy.keys["approvals"].stream)) == 4
    assert _pending(r, store) == 0
    auditor.close()


def test_redelivered_events_are_detectable_by_source_event_id(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    auditor = make_auditor()
    _story(store, 2)
    assert _drain(auditor) == 8
    # A group rewound (or recreated) re-delivers everything: at least once, never silently.
    r.xgroup_setid(store.events_stream, DEFAULT_GROUP, "0")
    assert _drain(auditor) == 8

    recs = records(r, audit.keys["approvals"].stream)
    counts = collections.Counter(x["source_event_id"] for x in recs)
    assert set(counts.values()) == {2}
    assert set(counts) == set(_event_ids(r, store))
    assert audit.verify("approvals").ok


def test_events_trimmed_before_auditing_leave_a_lost_record(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    make_auditor().ensure_group()
    _story(store, 1)
    read: Any = r.xreadgroup(DEFAULT_GROUP, "dead", {store.events_stream: ">"}, count=100)
    ids = [i for i, _ in read[0][1]]
    r.xdel(store.events_stream, ids[0], ids[1])
    survivor = make_auditor(claim_min_idle_ms=0)

    assert _drain(survivor) == 4

    recs = records(r, audit.keys["approvals"].stream)
    lost = [x for x in recs if x["type"] == "approval.lost"]
    assert sorted(x["source_event_id"] for x in lost) == sorted(ids[:2])
    assert _pending(r, store) == 0


def test_a_deleted_group_is_recreated(
    store: ApprovalStore, audit: AuditLog, make_auditor: Any, r: redis.Redis
) -> None:
    auditor = make_auditor()
    auditor.ensure_group()
    r.xgroup_destroy(store.events_stream, DEFAULT_GROUP)
    _story(store, 1)

    assert _drain(auditor) == 4
