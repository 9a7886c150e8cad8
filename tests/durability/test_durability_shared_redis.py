"""Several service processes on one Redis behave as one service, with or without a hash key."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from signoff.client.masking import key_id
from signoff.v1 import signoff_pb2 as pb
from tests.durability.conftest import MakeRedis
from tests.durability.support import (
    HASH_KEY,
    Approvers,
    Client,
    Services,
    clients,
    grant,
    state_of,
    verdict_of,
)
from tests.server.harness import allowed_read, masked_export

CONCURRENT_ROUNDS = 5
CALLERS_PER_SERVICE = 2


def test_create_on_a_approve_on_b_and_c_use_on_a_allows_exactly_once(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)
    a, b, c = services.start_many(redis_server.url, 3, names=["a", "b", "c"])
    with clients(a, b, c) as (ca, cb, cc):
        approval_id = ca.pending()
        same_on_b = cb.pending()
        first = cb.approve(approval_id, tokens.sam)
        sam_on_c = cc.approve(approval_id, tokens.sam)
        second = cc.approve(approval_id, tokens.sue)
        used = ca.check(grant(approval_id=approval_id))
        reused = [x.check(grant(approval_id=approval_id)) for x in (ca, cb, cc)]
        final = cb.get(approval_id, tokens.sam)

    assert same_on_b == approval_id
    assert state_of(first) == "APPROVAL_STATE_PENDING"
    assert state_of(sam_on_c) == "APPROVAL_STATE_PENDING"  # one person counts once
    assert state_of(second) == "APPROVAL_STATE_APPROVED"
    assert verdict_of(used) == "VERDICT_ALLOW"
    assert [verdict_of(r) for r in reused] == ["VERDICT_DENY"] * 3
    assert [list(r.reasons) for r in reused] == [["approval_already_used"]] * 3
    assert state_of(final) == "APPROVAL_STATE_CONSUMED"


def all_at_once(callers: list[Client], request: pb.CheckRequest) -> list[pb.CheckResponse]:
    """Send `request` from every caller, each on its own thread, released by one barrier."""
    start = threading.Barrier(len(callers))

    def send(caller: Client) -> pb.CheckResponse:
        start.wait(timeout=10)
        return caller.check(request)

    with ThreadPoolExecutor(max_workers=len(callers)) as pool:
        return list(pool.map(send, callers))


def test_simultaneous_use_on_several_processes_allows_exactly_once(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)
    a, b = services.start_many(redis_server.url, 2, names=["a", "b"])
    outcomes: list[list[tuple[str, list[str]]]] = []
    with clients(a, b) as (ca, cb), clients(*[a, b] * CALLERS_PER_SERVICE) as callers:
        for caller in callers:  # connected before the race, so connecting does not order it
            assert verdict_of(caller.check(allowed_read())) == "VERDICT_ALLOW"
        for n in range(CONCURRENT_ROUNDS):
            approval_id = ca.pending(f"role-{n}")
            cb.approve(approval_id, tokens.sam)
            assert state_of(ca.approve(approval_id, tokens.sue)) == "APPROVAL_STATE_APPROVED"
            answers = all_at_once(callers, grant(f"role-{n}", approval_id))
            outcomes.append(sorted((verdict_of(r), list(r.reasons)) for r in answers))

    for outcome in outcomes:
        assert outcome == [
            ("VERDICT_ALLOW", [outcome[0][1][0]]),
            *[("VERDICT_DENY", ["approval_already_used"])] * (len(callers) - 1),
        ]
        assert outcome[0][1][0].startswith("approved: apr_")


def hash_key_id(client: Client) -> str:
    """The key id a service names for HASH masks: equal ids mean equal pseudonyms."""
    plan = client.check(masked_export()).masking_plan.fields
    return {e.path: e.key_id for e in plan}["customers.*.id"]


def test_without_a_hash_key_processes_share_the_dev_secret_through_redis(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)
    a, b = services.start_many(redis_server.url, 2, names=["a", "b"], hash_key=None)
    with clients(a, b) as (ca, cb):
        approval_id = ca.pending()
        same_on_b = cb.pending()
        ca.approve(approval_id, tokens.sam)
        cb.approve(approval_id, tokens.sue)
        used = cb.check(grant(approval_id=approval_id))
        reused = ca.check(grant(approval_id=approval_id))
        key_ids = {hash_key_id(x) for x in (ca, cb)}
        later_id = cb.pending("db-reader")

    a.kill9()
    # A process started later (a restart) still agrees with approvals made before it.
    c = services.start(redis_server.url, name="c", hash_key=None)
    with Client(c) as cc:
        cc.approve(later_id, tokens.sam)
        cc.approve(later_id, tokens.sue)
        later_used = cc.check(grant("db-reader", later_id))

    assert same_on_b == approval_id
    assert verdict_of(used) == "VERDICT_ALLOW"
    assert verdict_of(reused) == "VERDICT_DENY"
    assert list(reused.reasons) == ["approval_already_used"]
    assert len(key_ids) == 1
    assert key_ids != {key_id(HASH_KEY.encode())}
    assert verdict_of(later_used) == "VERDICT_ALLOW"
    for service in (a, b, c):
        assert "development secret kept in Redis" in service.log_text()
    with redis_server.client() as r:
        assert len(bytes.fromhex(str(r.get("signoff:dev-secret")))) == 32


def test_a_process_started_while_redis_is_down_agrees_with_its_peers_once_it_is_back(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=True)
    a = services.start(redis_server.url, name="a", hash_key=None)
    redis_server.stop()
    # b starts while Redis is down; Redis returns while b waits to agree on the secret.
    comeback = threading.Timer(2.0, redis_server.start)
    comeback.start()
    try:
        b = services.start(redis_server.url, name="b", hash_key=None)
    finally:
        comeback.join()
    with clients(a, b) as (ca, cb):
        approval_id = ca.pending()
        same_on_b = cb.pending()
        ca.approve(approval_id, tokens.sam)
        ca.approve(approval_id, tokens.sue)
        used_on_b = cb.check(grant(approval_id=approval_id))

    # b must not serve on a private secret: it would digest the same action differently for
    # life, so a's approvals would be a mismatch on b (fail closed, but not one service).
    assert (same_on_b, verdict_of(used_on_b), list(used_on_b.reasons)) == (
        approval_id,
        "VERDICT_ALLOW",
        [f"approved: {approval_id}"],
    )
    assert "per-process secret" not in b.log_text()
