"""Approval state lives only in Redis: a service killed with SIGKILL loses nothing."""

from __future__ import annotations

import signal

from tests.durability.conftest import MakeRedis
from tests.durability.support import Approvers, Client, Services, grant, state_of, verdict_of


def test_kill_9_mid_flow_then_a_new_process_completes_and_uses_the_approval_once(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)  # Redis stays up: only the service dies
    first = services.start(redis_server.url, name="first")
    with Client(first) as a:
        approval_id = a.pending()
        voted = a.approve(approval_id, tokens.sam)
    assert state_of(voted) == "APPROVAL_STATE_PENDING"
    assert [v.approver_id for v in voted.votes] == ["sam@acme.io"]

    first.kill9()
    assert first.process.returncode == -signal.SIGKILL

    second = services.start(redis_server.url, name="second")
    with Client(second) as b:
        seen = b.get(approval_id, tokens.sue)
        # The same action asked again through the new process is the same pending approval.
        again_pending = b.pending()
        # sam's vote went through the dead process; voting again through this one counts once.
        sam_again = b.approve(approval_id, tokens.sam)
        approved = b.approve(approval_id, tokens.sue)
        used = b.check(grant(approval_id=approval_id))
        reused = b.check(grant(approval_id=approval_id))
        final = b.get(approval_id, tokens.sue)

    assert state_of(seen) == "APPROVAL_STATE_PENDING"
    assert [v.approver_id for v in seen.votes] == ["sam@acme.io"]
    assert again_pending == approval_id
    assert state_of(sam_again) == "APPROVAL_STATE_PENDING"
    assert state_of(approved) == "APPROVAL_STATE_APPROVED"
    assert sorted(v.approver_id for v in approved.votes) == ["sam@acme.io", "sue@acme.io"]
    assert verdict_of(used) == "VERDICT_ALLOW"
    assert list(used.reasons) == [f"approved: {approval_id}"]
    assert used.approval_id == approval_id
    assert verdict_of(reused) == "VERDICT_DENY"
    assert list(reused.reasons) == ["approval_already_used"]
    assert state_of(final) == "APPROVAL_STATE_CONSUMED"
