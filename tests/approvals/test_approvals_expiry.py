"""Windows are judged from stored times at approve and use time; keys still expire; sweeps emit once."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest

from signoff.approvals.model import State
from signoff.approvals.store import DEFAULT_RETENTION_MS
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.conftest import MakeServer
from tests.approvals.support import (
    DevIdP,
    ManualClock,
    Server,
    code_of,
    details_of,
    lab_request,
    refused,
    storm,
)

PENDING_MS = 3600 * 1000  # the lab bundle: pending_ttl 1h
GRANT_MS = 600 * 1000  # grant_ttl 10m
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def lab(make_server: MakeServer, lab_rules: Path, clock: ManualClock) -> Server:
    return make_server(lab_rules, clock=clock)


def other_request(n: int) -> pb.CheckRequest:
    return lab_request(payload={"target": f"s3://acme-exports/{n}.parquet", "rows": n})


def rita(idp: DevIdP) -> str:
    return idp.token("rita@acme.io", "reviewer")


def types(server: Server, approval_id: str) -> list[str]:
    return [e["type"] for e in server.global_events(approval_id)]


def expired_events(server: Server, approval_id: str) -> list[dict[str, str]]:
    return [e for e in server.global_events(approval_id) if e["type"] == "approval.expired"]


def test_approving_after_the_pending_window_is_refused_and_expires_it(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    approval_id = lab.ask(lab_request())
    clock.advance(PENDING_MS / 1000)  # exactly at the end of the window

    error = refused(lambda: lab.approve(approval_id, rita(idp)))

    assert code_of(error) == FAILED_PRECONDITION
    assert "expired" in details_of(error)
    assert lab.raw(approval_id)["state"] == "expired"  # written, not just read as expired
    assert lab.state(approval_id) is State.EXPIRED
    assert lab.record(approval_id).votes == ()
    [event] = expired_events(lab, approval_id)
    assert (event["from"], event["to"], event["actor"]) == ("pending", "expired", "signoff")
    assert event["reason"] == "pending window ended"
    # Not a key TTL at work: the record is still there, with days to live.
    assert lab.r.pttl(f"{lab.prefix}approval:{approval_id}") > DEFAULT_RETENTION_MS
    # Every later attempt is refused without another event.
    for call in (lab.approve, lab.reject):
        assert code_of(refused(partial(call, approval_id, rita(idp)))) == FAILED_PRECONDITION
    assert code_of(refused(lambda: lab.cancel(approval_id, idp.token("sam@acme.io")))) == (
        FAILED_PRECONDITION
    )
    assert types(lab, approval_id) == ["approval.created", "approval.expired"]
    used = lab.check(lab_request(), approval_id)
    assert (used.verdict, list(used.reasons)) == (pb.VERDICT_DENY, ["approval_expired"])


def test_one_millisecond_before_the_pending_window_ends_a_vote_still_counts(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    approval_id = lab.ask(lab_request())
    clock.advance((PENDING_MS - 1) / 1000)

    approved = lab.approve(approval_id, rita(idp))

    assert approved.state == apb.APPROVAL_STATE_APPROVED
    assert approved.grant_expires_at.ToMilliseconds() == clock() + GRANT_MS


def test_using_after_the_grant_window_is_denied_as_expired(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    approval_id = lab.ask(lab_request())
    lab.approve(approval_id, rita(idp))
    clock.advance(GRANT_MS / 1000)

    used = lab.check(lab_request(), approval_id)

    assert used.verdict == pb.VERDICT_DENY
    assert list(used.reasons) == ["approval_expired"]
    assert lab.raw(approval_id)["state"] == "expired"
    [event] = expired_events(lab, approval_id)
    assert (event["from"], event["to"], event["reason"]) == (
        "approved",
        "expired",
        "grant window ended",
    )
    again = lab.check(lab_request(), approval_id)
    assert list(again.reasons) == ["approval_expired"]
    assert len(expired_events(lab, approval_id)) == 1
    assert "approval.consumed" not in types(lab, approval_id)


def test_one_millisecond_before_the_grant_window_ends_the_approval_is_usable(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    approval_id = lab.ask(lab_request())
    lab.approve(approval_id, rita(idp))
    clock.advance((GRANT_MS - 1) / 1000)

    used = lab.check(lab_request(), approval_id)

    assert used.verdict == pb.VERDICT_MASK
    assert lab.state(approval_id) is State.CONSUMED


def test_an_expired_window_reads_as_expired_before_any_sweep(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    approval_id = lab.ask(lab_request())
    clock.advance(PENDING_MS / 1000 + 1)

    seen = lab.get(approval_id, rita(idp))

    assert seen.state == apb.APPROVAL_STATE_EXPIRED
    assert seen.final_reason == "pending window ended"
    assert lab.raw(approval_id)["state"] == "pending"  # nothing written yet
    assert types(lab, approval_id) == ["approval.created"]


def test_asking_again_after_expiry_opens_a_new_approval(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    old = lab.ask(lab_request())
    clock.advance(PENDING_MS / 1000)

    new = lab.ask(lab_request())

    assert new != old
    assert lab.state(old) is State.EXPIRED
    assert len(expired_events(lab, old)) == 1
    assert lab.state(new) is State.PENDING
    assert list(lab.check(lab_request(), old).reasons) == ["approval_expired"]


def test_the_sweeper_emits_exactly_one_expired_event_per_ended_window(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    pending = lab.ask(other_request(1))
    approved = lab.ask(other_request(2))
    lab.approve(approved, rita(idp))
    consumed = lab.ask(other_request(3))
    lab.approve(consumed, rita(idp))
    assert lab.check(other_request(3), consumed).verdict == pb.VERDICT_MASK
    live = lab.ask(other_request(4))
    clock.advance(GRANT_MS / 1000)  # only the grant window of `approved` has ended
    lab.store.expire_due()
    assert len(expired_events(lab, approved)) == 1
    clock.advance(PENDING_MS / 1000)  # now every pending window has too, `live`'s included

    # Sixteen sweepers at once, as several service processes would run them.
    swept = storm(16, lambda i: lab.store.expire_due())

    assert sum(n for n in swept if isinstance(n, int)) == 2  # `pending` and `live`
    assert lab.store.expire_due() == 0
    for approval_id in (pending, approved, live):
        assert len(expired_events(lab, approval_id)) == 1
        assert lab.raw(approval_id)["state"] == "expired"
    assert types(lab, consumed)[-1] == "approval.consumed"
    assert not expired_events(lab, consumed)
    assert lab.r.zcard(f"{lab.prefix}pending") == 0
    assert lab.r.zcard(f"{lab.prefix}grants") == 0
    # An approve after the sweep is refused and adds nothing.
    assert code_of(refused(lambda: lab.approve(pending, rita(idp)))) == FAILED_PRECONDITION
    assert len(lab.global_events(pending)) == 2


def _approval_keys(server: Server, approval_id: str) -> list[str]:
    base = f"{server.prefix}approval:{approval_id}"
    return [k for k in (base, f"{base}:votes", f"{base}:events") if server.r.exists(k)]


def assert_keys_expire(server: Server, approval_id: str) -> None:
    keys = _approval_keys(server, approval_id)
    assert f"{server.prefix}approval:{approval_id}" in keys
    limit = PENDING_MS + GRANT_MS + DEFAULT_RETENTION_MS
    for key in keys + [k for k in server.all_keys() if ":bydigest:" in k]:
        assert 0 < server.r.pttl(key) <= limit, key


@pytest.mark.parametrize("ending", ["consumed", "rejected", "cancelled", "expired", "pending"])
def test_every_key_of_an_approval_carries_a_ttl_whatever_its_end(
    lab: Server, idp: DevIdP, clock: ManualClock, ending: str
) -> None:
    approval_id = lab.ask(lab_request())
    assert_keys_expire(lab, approval_id)
    if ending == "consumed":
        lab.approve(approval_id, rita(idp))
        assert_keys_expire(lab, approval_id)
        lab.check(lab_request(), approval_id)
    elif ending == "rejected":
        lab.reject(approval_id, rita(idp))
    elif ending == "cancelled":
        lab.cancel(approval_id, idp.token("sam@acme.io"))
    elif ending == "expired":
        clock.advance(PENDING_MS / 1000)
        lab.store.expire_due()

    assert lab.raw(approval_id)["state"] == ending
    assert_keys_expire(lab, approval_id)
    assert len(_approval_keys(lab, approval_id)) == (3 if ending in ("consumed", "rejected") else 2)
    # The shared indexes forget it once it is final; the shared stream is capped by MAXLEN.
    final = ending != "pending"
    assert (lab.r.zscore(f"{lab.prefix}pending", approval_id) is None) is final
    assert lab.r.zscore(f"{lab.prefix}grants", approval_id) is None
    shared = {k.removeprefix(lab.prefix).split(":")[0] for k in lab.all_keys()}
    assert shared <= {"approval", "bydigest", "events", "pending", "grants", "requester"}
    # The requester's set of waiting approvals expires too, and forgets one no longer waiting
    # (an emptied set is gone altogether).
    mine = [k for k in lab.all_keys() if k.startswith(f"{lab.prefix}requester:")]
    assert len(mine) == (1 if ending == "pending" else 0)
    for key in mine:
        assert lab.r.pttl(key) > 0
        assert lab.r.zscore(key, approval_id) is not None


def test_short_windows_end_on_the_real_clock(
    make_server: MakeServer, write_lab: Callable[..., Path], idp: DevIdP
) -> None:
    lab = make_server(write_lab(pending="1s", grant="1s"))
    waiting = lab.ask(other_request(1))
    granted = lab.ask(other_request(2))
    lab.approve(granted, rita(idp))

    time.sleep(1.05)

    assert code_of(refused(lambda: lab.approve(waiting, rita(idp)))) == FAILED_PRECONDITION
    used = lab.check(other_request(2), granted)
    assert (used.verdict, list(used.reasons)) == (pb.VERDICT_DENY, ["approval_expired"])
    for approval_id in (waiting, granted):
        assert lab.raw(approval_id)["state"] == "expired"
        assert len(expired_events(lab, approval_id)) == 1
        assert 0 < lab.r.pttl(f"{lab.prefix}approval:{approval_id}") <= 2000 + DEFAULT_RETENTION_MS
