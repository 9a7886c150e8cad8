"""Check-then-update races: 64 simultaneous callers get exactly one winning transition."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest

from signoff.approvals.model import State
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.approvals.conftest import MakeServer
from tests.approvals.support import DevIdP, Server, code_of, lab_request, storm
from tests.server.harness import NIGHT, TIMEOUT, check_request, customers, export_bot, prod_grant

N = 64
FINAL_EVENTS = {
    "approval.rejected",
    "approval.cancelled",
    "approval.expired",
    "approval.consumed",
}
# What each event type may move from and to; `voted` stays pending.
TRANSITIONS = {
    "approval.created": ("", "pending"),
    "approval.voted": ("pending", "pending"),
    "approval.approved": ("pending", "approved"),
    "approval.rejected": ("pending", "rejected"),
    "approval.cancelled": (None, "cancelled"),
    "approval.consumed": ("approved", "consumed"),
    "approval.expired": (None, "expired"),
}


def assert_consistent_history(server: Server, approval_id: str) -> list[dict[str, str]]:
    """The events form one valid walk of the state machine, the same in both streams."""
    events = server.global_events(approval_id)
    assert events == server.events(approval_id)
    state = ""
    for event in events:
        start, end = TRANSITIONS[event["type"]]
        assert event["from"] == state, events
        assert start is None or event["from"] == start
        assert event["to"] == end
        assert state not in ("rejected", "cancelled", "expired", "consumed"), "moved after final"
        state = event["to"]
    assert state == server.raw(approval_id)["state"]
    assert sum(e["type"] in FINAL_EVENTS for e in events) <= 1
    return events


@pytest.fixture
def busy_night(make_server: MakeServer) -> Server:
    return make_server(now=NIGHT, workers=N)


@pytest.fixture
def busy_day(make_server: MakeServer) -> Server:
    return make_server(workers=N)


def test_64_concurrent_uses_of_one_approval_let_exactly_one_through(
    busy_night: Server, idp: DevIdP
) -> None:
    request = check_request(export_bot(), "export", customers())
    approval_id = busy_night.ask(request)
    busy_night.approve(approval_id, idp.token("dana@acme.io", "data_steward"))
    request.approval_id = approval_id

    def use(i: int) -> pb.CheckResponse:
        if i % 2:  # half share the server's channel, half bring their own connection
            return busy_night.decisions.Check(request, timeout=TIMEOUT)
        with grpc.insecure_channel(f"127.0.0.1:{busy_night.running.port}") as channel:
            return pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)

    results = storm(N, use)

    responses = [r for r in results if isinstance(r, pb.CheckResponse)]
    assert len(responses) == N, [r for r in results if isinstance(r, grpc.RpcError)]
    winners = [r for r in responses if r.verdict == pb.VERDICT_MASK]
    losers = [r for r in responses if r.verdict == pb.VERDICT_DENY]
    assert len(winners) == 1
    assert list(winners[0].reasons) == [f"approved: {approval_id}"]
    assert len(losers) == N - 1
    assert {tuple(r.reasons) for r in losers} == {("approval_already_used",)}
    assert busy_night.state(approval_id) is State.CONSUMED
    events = assert_consistent_history(busy_night, approval_id)
    assert [e["type"] for e in events].count("approval.consumed") == 1


def test_64_concurrent_approvals_of_a_quorum_of_two_count_consistently(
    busy_day: Server, idp: DevIdP
) -> None:
    approval_id = busy_day.ask(prod_grant())
    approvers = [f"sec{i:02d}@acme.io" for i in range(N)]
    tokens = [idp.token(a, "security") for a in approvers]

    def approve(i: int) -> apb.Approval:
        return busy_day.approve(approval_id, tokens[i], f"vote {i}")

    results = storm(N, approve)

    accepted = {approvers[i] for i, r in enumerate(results) if isinstance(r, apb.Approval)}
    refused = [r for r in results if isinstance(r, grpc.RpcError)]
    assert {code_of(e) for e in refused} <= {grpc.StatusCode.FAILED_PRECONDITION}
    record = busy_day.record(approval_id)
    assert record.state is State.APPROVED
    recorded = [v.approver_id for v in record.votes]
    assert len(recorded) == len(set(recorded)) == len(accepted)
    assert set(recorded) == accepted
    # Votes after the quorum was reached are refused, so exactly the quorum is recorded.
    assert len(accepted) == 2
    assert busy_day.raw(approval_id)["approvals"] == "2"
    events = assert_consistent_history(busy_day, approval_id)
    kinds = Counter(e["type"] for e in events)
    assert kinds == {"approval.created": 1, "approval.voted": 2, "approval.approved": 1}
    assert {e["actor"] for e in events if e["type"] == "approval.voted"} == accepted
    for i, result in enumerate(results):
        if isinstance(result, apb.Approval):
            assert approvers[i] in {v.approver_id for v in result.votes}


@pytest.mark.parametrize("every", [2, 8, 32])
def test_64_concurrent_approves_and_rejects_end_in_exactly_one_final_state(
    busy_day: Server, idp: DevIdP, every: int
) -> None:
    approval_id = busy_day.ask(prod_grant())
    people = [f"sec{i:02d}@acme.io" for i in range(N)]
    tokens = [idp.token(p, "security") for p in people]
    # One caller in `every` rejects, interleaved with the approvers: either outcome can win.
    rejects = {i for i in range(N) if i % every == every - 1}

    def vote(i: int) -> apb.Approval:
        if i in rejects:
            return busy_day.reject(approval_id, tokens[i], f"no {i}")
        return busy_day.approve(approval_id, tokens[i], f"yes {i}")

    results = storm(N, vote)

    ok = {i for i, r in enumerate(results) if isinstance(r, apb.Approval)}
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert {code_of(e) for e in errors} <= {grpc.StatusCode.FAILED_PRECONDITION}
    ok_approvers = {people[i] for i in ok - rejects}
    ok_rejecters = {people[i] for i in ok & rejects}
    record = busy_day.record(approval_id)
    events = assert_consistent_history(busy_day, approval_id)
    kinds = Counter(e["type"] for e in events)
    assert kinds["approval.created"] == 1
    assert kinds["approval.voted"] == len(ok_approvers)
    assert {e["actor"] for e in events if e["type"] == "approval.voted"} == ok_approvers
    votes = {v.approver_id: v.approve for v in record.votes}
    if record.state is State.APPROVED:
        assert ok_rejecters == set()
        assert len(ok_approvers) == 2
        assert kinds["approval.approved"] == 1
        assert "approval.rejected" not in kinds
        assert votes == dict.fromkeys(ok_approvers, True)
    else:
        assert record.state is State.REJECTED
        assert len(ok_rejecters) == 1
        assert len(ok_approvers) <= 1
        assert kinds["approval.rejected"] == 1
        assert "approval.approved" not in kinds
        [rejected] = [e for e in events if e["type"] == "approval.rejected"]
        assert {rejected["actor"]} == ok_rejecters
        assert votes == {
            **dict.fromkeys(ok_approvers, True),
            **dict.fromkeys(ok_rejecters, False),
        }
    assert busy_day.raw(approval_id)["approvals"] == str(sum(votes.values()))


def test_concurrent_uses_and_cancels_have_one_winner(
    make_server: MakeServer, lab_rules: Path, idp: DevIdP
) -> None:
    lab = make_server(lab_rules, workers=N)
    request = lab_request()
    approval_id = lab.ask(request)
    lab.approve(approval_id, idp.token("rita@acme.io", "reviewer"))
    request.approval_id = approval_id
    sam = idp.token("sam@acme.io")

    def use_or_cancel(i: int) -> object:
        if i % 2:
            return lab.cancel(approval_id, sam, "withdrawn")
        return lab.check(request)

    results = storm(N, use_or_cancel)

    granted = [
        r
        for r in results
        if isinstance(r, pb.CheckResponse) and r.verdict in (pb.VERDICT_ALLOW, pb.VERDICT_MASK)
    ]
    cancelled = [r for r in results if isinstance(r, apb.Approval)]
    assert len(granted) + len(cancelled) == 1
    assert lab.state(approval_id) is (State.CONSUMED if granted else State.CANCELLED)
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert {code_of(e) for e in errors} <= {grpc.StatusCode.FAILED_PRECONDITION}
    denied = {
        tuple(r.reasons)
        for r in results
        if isinstance(r, pb.CheckResponse) and r.verdict == pb.VERDICT_DENY
    }
    assert denied <= {("approval_already_used",), ("approval_cancelled",)}
    assert_consistent_history(lab, approval_id)


def test_64_concurrent_first_checks_of_one_request_create_one_approval(busy_day: Server) -> None:
    results = storm(N, lambda i: busy_day.check(prod_grant()))

    ids = {r.approval_id for r in results if isinstance(r, pb.CheckResponse)}
    assert len(ids) == 1
    [approval_id] = ids
    assert all(
        isinstance(r, pb.CheckResponse) and r.verdict == pb.VERDICT_REQUIRE_APPROVAL
        for r in results
    )
    assert [e["type"] for e in busy_day.global_events()] == ["approval.created"]
    assert busy_day.state(approval_id) is State.PENDING
