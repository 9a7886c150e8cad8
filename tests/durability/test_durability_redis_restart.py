"""Approvals across Redis restarts and outages: kept with AOF, and never granted while down."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.durability.conftest import MakeRedis
from tests.durability.support import (
    RECONNECT_SECONDS,
    Approvers,
    Client,
    Services,
    code_of,
    details_of,
    grant,
    rpc_error,
    state_of,
    until_available,
    verdict_of,
)
from tests.server.harness import allowed_read, cross_tenant_read

# Redis answers "connection refused" at once when it is down; no call should wait for long.
FAIL_FAST_SECONDS = 5.0


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_with_aof_a_redis_restart_keeps_approved_and_pending_approvals(
    how: str, make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=True, fsync_always=True)
    service = services.start(redis_server.url)
    with Client(service) as c:
        approved_id = c.pending("db-admin")
        c.approve(approved_id, tokens.sam)
        assert state_of(c.approve(approved_id, tokens.sue)) == "APPROVAL_STATE_APPROVED"
        waiting_id = c.pending("db-reader")
        assert state_of(c.approve(waiting_id, tokens.sam)) == "APPROVAL_STATE_PENDING"

        redis_server.restart(kill=how == "sigkill")

        # Redis answers again (start() waited for PING), so the same service process, never
        # restarted, must answer its very next call: stale pooled connections are its problem.
        approved = c.get(approved_id, tokens.sam)
        used = c.check(grant("db-admin", approved_id))
        reused = c.check(grant("db-admin", approved_id))
        waiting = c.get(waiting_id, tokens.sue)
        asked_again = c.pending("db-reader")
        completed = c.approve(waiting_id, tokens.sue)
        used_later = c.check(grant("db-reader", waiting_id))

    assert service.process.poll() is None
    assert state_of(approved) == "APPROVAL_STATE_APPROVED"
    assert verdict_of(used) == "VERDICT_ALLOW"
    assert verdict_of(reused) == "VERDICT_DENY"
    assert list(reused.reasons) == ["approval_already_used"]
    assert state_of(waiting) == "APPROVAL_STATE_PENDING"
    assert [v.approver_id for v in waiting.votes] == ["sam@acme.io"]
    assert asked_again == waiting_id
    assert state_of(completed) == "APPROVAL_STATE_APPROVED"
    assert verdict_of(used_later) == "VERDICT_ALLOW"


def test_without_persistence_a_lost_approval_is_denied_never_allowed(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)
    service = services.start(redis_server.url)
    with Client(service) as c:
        approval_id = c.pending()
        c.approve(approval_id, tokens.sam)
        c.approve(approval_id, tokens.sue)

        redis_server.restart()

        lost = c.check(grant(approval_id=approval_id))
        fresh = c.pending()

    assert verdict_of(lost) == "VERDICT_DENY"
    assert list(lost.reasons) == ["approval_not_found"]
    assert fresh != approval_id


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_redis_outage_fails_closed_and_the_same_service_recovers_by_itself(
    how: str, make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=True, fsync_always=True)
    service = services.start(redis_server.url)
    pid = service.process.pid
    with Client(service) as c:
        half_id = c.pending("db-admin")
        c.approve(half_id, tokens.sam)
        ready_id = c.pending("db-reader")
        c.approve(ready_id, tokens.sam)
        c.approve(ready_id, tokens.sue)

        if how == "sigkill":
            redis_server.kill()
        else:
            redis_server.stop()

        started = time.monotonic()
        needs_approval = rpc_error(lambda: c.check(grant("db-owner")))
        use_while_down = rpc_error(lambda: c.check(grant("db-reader", ready_id)))
        vote_while_down = rpc_error(lambda: c.approve(half_id, tokens.sue))
        allowed = c.check(allowed_read())
        denied = c.check(cross_tenant_read())
        outage_calls = time.monotonic() - started

        redis_server.start()
        back = time.monotonic()
        created = until_available(lambda: c.check(grant("db-owner")))
        reconnect = time.monotonic() - back
        created_id = created.approval_id
        c.approve(created_id, tokens.sam)
        created_approved = c.approve(created_id, tokens.sue)
        created_used = c.check(grant("db-owner", created_id))
        half_approved = c.approve(half_id, tokens.sue)
        half_used = c.check(grant("db-admin", half_id))
        ready_used = c.check(grant("db-reader", ready_id))
        ready_reused = c.check(grant("db-reader", ready_id))

    # While Redis is down: UNAVAILABLE with a clear message, never a verdict to act on.
    for error in (needs_approval, use_while_down, vote_while_down):
        assert code_of(error) == grpc.StatusCode.UNAVAILABLE, details_of(error)
        assert "approval store unavailable" in details_of(error)
    assert "fail closed" in details_of(needs_approval)
    assert outage_calls < FAIL_FAST_SECONDS
    # Decisions that need no approval do not need Redis either.
    assert verdict_of(allowed) == "VERDICT_ALLOW"
    assert verdict_of(denied) == "VERDICT_DENY"
    assert list(denied.reasons) == ["cross-tenant access is never allowed"]
    # Back again, the same process creates, approves and consumes.
    assert service.process.poll() is None
    assert service.process.pid == pid
    assert reconnect < RECONNECT_SECONDS
    assert verdict_of(created) == "VERDICT_REQUIRE_APPROVAL"
    assert created_id.startswith("apr_")
    assert created_id not in (half_id, ready_id)
    assert state_of(created_approved) == "APPROVAL_STATE_APPROVED"
    assert verdict_of(created_used) == "VERDICT_ALLOW"
    assert state_of(half_approved) == "APPROVAL_STATE_APPROVED"
    assert verdict_of(half_used) == "VERDICT_ALLOW"
    # The use attempted during the outage did not spend the approval.
    assert verdict_of(ready_used) == "VERDICT_ALLOW"
    assert verdict_of(ready_reused) == "VERDICT_DENY"
    assert list(ready_reused.reasons) == ["approval_already_used"]
