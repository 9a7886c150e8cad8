"""The asyncio client: coalescing across tasks, deadlines, cancellation, and approvals."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from signoff.client import (
    ApprovalState,
    CheckItem,
    Coalescing,
    Context,
    Decision,
    InvalidInput,
    Principal,
    Resource,
    SignoffRpcError,
    Verdict,
)
from signoff.client.aio import AsyncSignoffClient
from signoff.v1 import signoff_pb2 as pb

if TYPE_CHECKING:
    from tests.client.conftest import DevIdentity, ScriptedServer

ALICE = Principal("alice@example.com", roles=("analyst",))
DOCS = [Resource("doc", id=str(n)) for n in range(4)]
PATIENT = Coalescing(window=1.0)
IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})
PROD = Context(environment="prod")


def item(n: int) -> CheckItem:
    return CheckItem(ALICE, "read", DOCS[n])


def result(n: int) -> pb.CheckBatchResult:
    return pb.CheckBatchResult(
        decision=pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id=f"d-{n}")
    )


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 15))


async def settled(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except SignoffRpcError as err:
        return err


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def test_a_lone_async_check_is_a_plain_check(scripted: ScriptedServer) -> None:
    scripted.answer(pb.CheckResponse(verdict=pb.VERDICT_MASK, decision_id="d-1"))

    async def main() -> Decision:
        async with AsyncSignoffClient(scripted.address, coalescing=PATIENT) as client:
            return await client.check(principal=ALICE, action="read", resource=DOCS[0])

    decision = run(main)
    assert decision.verdict is Verdict.MASK
    assert scripted.checks == [item(0).to_proto()]
    assert scripted.batches == []


def test_checks_from_concurrent_tasks_share_one_check_batch(scripted: ScriptedServer) -> None:
    scripted.stall("Check")
    scripted.answer_batch(pb.CheckBatchResponse(results=[result(n) for n in range(3)]))

    async def main() -> tuple[Any, ...]:
        async with AsyncSignoffClient(scripted.address, coalescing=PATIENT) as client:
            lead = asyncio.create_task(settled(client.check_item(item(3), timeout=0.3)))
            await until(lambda: scripted.calls() == 1)
            return await asyncio.gather(
                lead,
                client.check_item(item(0)),
                client.check_batch([item(1), item(2)]),
            )

    lead, one, pair = run(main)
    assert isinstance(lead, SignoffRpcError)
    assert lead.code == "DEADLINE_EXCEEDED"
    assert [len(batch.items) for batch in scripted.batches] == [3]
    assert scripted.batches[0].items[0] == item(0).to_proto()
    assert one.decision_id == "d-0"
    assert [d.decision_id for d in pair] == ["d-1", "d-2"]


def test_cancelling_a_task_whose_check_is_still_queued_means_it_is_never_sent(
    scripted: ScriptedServer,
) -> None:
    scripted.stall("Check")

    async def main() -> None:
        async with AsyncSignoffClient(scripted.address, coalescing=PATIENT) as client:
            lead = asyncio.create_task(settled(client.check_item(item(3), timeout=0.3)))
            await until(lambda: scripted.calls() == 1)
            queued = asyncio.create_task(client.check_item(item(0)))
            await asyncio.sleep(0.05)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            await lead
            await asyncio.sleep(0.1)

    run(main)
    assert scripted.batches == []


def test_an_async_check_gives_up_at_its_own_deadline_while_its_batch_goes_on(
    scripted: ScriptedServer,
) -> None:
    scripted.stall("Check")
    scripted.stall("CheckBatch")

    async def main() -> tuple[Any, float, Any]:
        async with AsyncSignoffClient(scripted.address, coalescing=PATIENT) as client:
            lead = asyncio.create_task(settled(client.check_item(item(3), timeout=0.2)))
            await until(lambda: scripted.calls() == 1)
            patient = asyncio.create_task(settled(client.check_item(item(1), timeout=1.5)))
            began = time.monotonic()
            hasty = await settled(client.check_item(item(0), timeout=0.6))
            took = time.monotonic() - began
            await lead
            return hasty, took, await patient

    hasty, took, patient = run(main)
    for raised in (hasty, patient):
        assert isinstance(raised, SignoffRpcError)
        assert (raised.method, raised.code) == ("Check", "DEADLINE_EXCEEDED")
    assert took < 1.0


def test_a_failed_async_batch_fails_each_caller_as_its_own_call_would(
    scripted: ScriptedServer,
) -> None:
    import grpc

    scripted.stall("Check")
    scripted.abort(grpc.StatusCode.UNAUTHENTICATED, "who are you", "CheckBatch")

    async def main() -> tuple[Any, ...]:
        async with AsyncSignoffClient(scripted.address, coalescing=PATIENT) as client:
            lead = asyncio.create_task(settled(client.check_item(item(3), timeout=0.3)))
            await until(lambda: scripted.calls() == 1)
            return await asyncio.gather(
                lead,
                settled(client.check_item(item(0))),
                settled(client.check_batch([item(1)])),
            )

    _, check, batch = run(main)
    assert (check.method, check.code, check.details) == ("Check", "UNAUTHENTICATED", "who are you")
    assert (batch.method, batch.code, batch.details) == (
        "CheckBatch",
        "UNAUTHENTICATED",
        "who are you",
    )


def test_async_client_refuses_a_plaintext_token_to_a_remote_service() -> None:
    with pytest.raises(InvalidInput, match="plaintext"):
        AsyncSignoffClient("signoff.example.com:443", token="abc")


def test_async_approvals_read_and_vote_on_a_held_check(
    approvals_address: str, dev_identity: DevIdentity
) -> None:
    payload = {"grantee": f"bob-{uuid.uuid4().hex[:8]}@acme.io", "role": "db-admin"}
    ivan = dev_identity.token("ivan@acme.io", roles=("iam_admin",))
    sam = dev_identity.token("sam@acme.io", roles=("security",))

    async def main() -> tuple[Any, ...]:
        async with (
            AsyncSignoffClient(approvals_address, token=ivan) as asker,
            AsyncSignoffClient(approvals_address, token=sam) as approver,
        ):
            held = await asker.check(
                principal=IVAN,
                action="grant_role",
                resource=DB_ADMIN,
                context=PROD,
                payload=payload,
            )
            seen = await asker.get_approval(held.approval_id)
            listed = await approver.list_approvals()
            voted = await approver.approve(held.approval_id, "ticket CHG-1")
            missing = await settled(approver.get_approval("apr_nothing"))
            cancelled = await asker.cancel(held.approval_id, "not needed")
            return held, seen, listed, voted, missing, cancelled

    held, seen, listed, voted, missing, cancelled = run(main)
    assert held.verdict is Verdict.REQUIRE_APPROVAL
    assert seen.id == held.approval_id
    assert seen.state is ApprovalState.PENDING
    assert held.approval_id in [approval.id for approval in listed]
    assert voted.approvals == 1
    assert isinstance(missing, SignoffRpcError)
    assert missing.method == "GetApproval"
    assert missing.code == "NOT_FOUND"
    assert cancelled.state is ApprovalState.CANCELLED
