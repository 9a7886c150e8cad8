"""Quorum counts distinct eligible humans; one eligible rejection ends it; final means final."""

from __future__ import annotations

from functools import partial

import grpc
import pytest

from signoff.approvals.model import State
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import (
    DevIdP,
    Server,
    bearer,
    code_of,
    details_of,
    fullwidth,
    lab_doc,
    lab_request,
    refused,
)
from tests.server.harness import TIMEOUT, prod_grant

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def vote_again(server: Server, approval_id: str, token: str) -> None:
    """A repeated vote may be answered as a no-op or refused as a conflict, never counted."""
    try:
        server.approve(approval_id, token)
    except grpc.RpcError as error:
        code = code_of(error)
    else:
        return
    assert code in (grpc.StatusCode.ALREADY_EXISTS, FAILED_PRECONDITION)


def types(server: Server, approval_id: str) -> list[str]:
    return [e["type"] for e in server.global_events(approval_id)]


def test_the_same_approver_twice_counts_once_and_stays_pending(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())
    erin = idp.token("erin@acme.io", "security")

    day.approve(approval_id, erin)
    vote_again(day, approval_id, erin)
    vote_again(day, approval_id, idp.token("erin@acme.io", "security"))  # a fresh token

    record = day.record(approval_id)
    assert record.state is State.PENDING
    assert [v.approver_id for v in record.votes] == ["erin@acme.io"]
    assert day.raw(approval_id)["approvals"] == "1"
    assert types(day, approval_id) == ["approval.created", "approval.voted"]


def test_spellings_of_one_approver_count_once(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())

    day.approve(approval_id, idp.token("erin@acme.io", "security"))
    for spelling in ("Erin@Acme.io", "ERIN@ACME.IO", fullwidth("erin@acme.io"), " erin@acme.io"):
        vote_again(day, approval_id, idp.token(spelling, "security"))

    record = day.record(approval_id)
    assert record.state is State.PENDING
    assert len(record.votes) == 1
    assert day.raw(approval_id)["approvals"] == "1"
    assert types(day, approval_id) == ["approval.created", "approval.voted"]


def test_two_distinct_eligible_approvers_approve(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())

    first = day.approve(approval_id, idp.token("erin@acme.io", "security"), "ticket SEC-1")
    second = day.approve(approval_id, idp.token("frank@acme.io", "security"), "ticket SEC-1")

    assert first.state == apb.APPROVAL_STATE_PENDING
    assert second.state == apb.APPROVAL_STATE_APPROVED
    assert {(v.approver_id, v.decision) for v in second.votes} == {
        ("erin@acme.io", apb.VOTE_DECISION_APPROVE),
        ("frank@acme.io", apb.VOTE_DECISION_APPROVE),
    }
    assert second.HasField("approved_at")
    assert second.grant_expires_at.ToMilliseconds() > second.approved_at.ToMilliseconds()
    assert types(day, approval_id) == [
        "approval.created",
        "approval.voted",
        "approval.voted",
        "approval.approved",
    ]


@pytest.mark.parametrize(
    ("roles", "groups"),
    [
        ((), ()),
        (("sre", "iam_admin", "data_steward"), ()),
        ((), ("security",)),  # a group named like the role is not the role
        (("Security",), ()),  # role names are exact
        (("security ",), ()),
    ],
)
def test_an_ineligible_human_is_refused_and_changes_nothing(
    day: Server, idp: DevIdP, roles: tuple[str, ...], groups: tuple[str, ...]
) -> None:
    approval_id = day.ask(prod_grant())
    day.approve(approval_id, idp.token("erin@acme.io", "security"))
    outsider = idp.token("mallory@acme.io", *roles, groups=groups)

    for call in (day.approve, day.reject):
        error = refused(partial(call, approval_id, outsider))
        assert code_of(error) == PERMISSION_DENIED
        assert "not_eligible" in details_of(error)
    record = day.record(approval_id)
    assert record.state is State.PENDING
    assert [v.approver_id for v in record.votes] == ["erin@acme.io"]
    assert types(day, approval_id) == ["approval.created", "approval.voted"]


def test_one_eligible_rejection_ends_it_and_later_votes_are_refused(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    day.approve(approval_id, idp.token("erin@acme.io", "security"))

    rejected = day.reject(approval_id, idp.token("frank@acme.io", "security"), "no ticket")

    assert rejected.state == apb.APPROVAL_STATE_REJECTED
    assert rejected.final_reason == "no ticket"
    for call, who in (
        (day.approve, "grace@acme.io"),
        (day.approve, "frank@acme.io"),
        (day.reject, "heidi@acme.io"),
    ):
        error = refused(partial(call, approval_id, idp.token(who, "security")))
        assert code_of(error) == FAILED_PRECONDITION
    assert day.state(approval_id) is State.REJECTED
    assert types(day, approval_id) == ["approval.created", "approval.voted", "approval.rejected"]
    used = day.check(prod_grant(), approval_id)
    assert used.verdict == pb.VERDICT_DENY
    assert list(used.reasons) == ["approval_rejected"]


def test_an_approvers_rejection_replaces_their_own_earlier_approval(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    erin = idp.token("erin@acme.io", "security")
    day.approve(approval_id, erin)

    rejected = day.reject(approval_id, erin)

    assert rejected.state == apb.APPROVAL_STATE_REJECTED
    assert [(v.approver_id, v.decision) for v in rejected.votes] == [
        ("erin@acme.io", apb.VOTE_DECISION_REJECT)
    ]
    assert day.raw(approval_id)["approvals"] == "0"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001])
def test_a_vote_needs_a_reason_and_a_bad_one_records_nothing(
    day: Server, idp: DevIdP, reason: str
) -> None:
    approval_id = day.ask(prod_grant())
    erin = idp.token("erin@acme.io", "security")

    for call in (day.approve, day.reject):
        error = refused(partial(call, approval_id, erin, reason))
        assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT
    assert day.record(approval_id).votes == ()
    assert types(day, approval_id) == ["approval.created"]


def test_after_approval_no_further_vote_changes_anything(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())
    day.approve(approval_id, idp.token("erin@acme.io", "security"))
    day.approve(approval_id, idp.token("frank@acme.io", "security"))

    for call in (day.approve, day.reject):
        error = refused(partial(call, approval_id, idp.token("grace@acme.io", "security")))
        assert code_of(error) == FAILED_PRECONDITION
    record = day.record(approval_id)
    assert record.state is State.APPROVED
    assert len(record.votes) == 2


def test_merged_requirements_need_every_approver_set(lab: Server, idp: DevIdP) -> None:
    # prod + restricted: {security | group sec-oncall} AND {dba}, quorum 2.
    approval_id = lab.ask(lab_request("prod", resource=lab_doc("restricted")))

    for roles, groups in ((("security",), ()), (("dba",), ()), ((), ("sec-oncall",))):
        token = idp.token("mallory@acme.io", *roles, groups=groups)
        error = refused(partial(lab.approve, approval_id, token))
        assert code_of(error) == PERMISSION_DENIED
        assert "not_eligible" in details_of(error)
    first = lab.approve(approval_id, idp.token("erin@acme.io", "security", "dba"))
    second = lab.approve(approval_id, idp.token("olaf@acme.io", "dba", groups=["sec-oncall"]))

    assert first.state == apb.APPROVAL_STATE_PENDING
    assert second.state == apb.APPROVAL_STATE_APPROVED


def test_a_role_named_like_an_approver_group_is_not_membership(lab: Server, idp: DevIdP) -> None:
    approval_id = lab.ask(lab_request("prod"))

    error = refused(partial(lab.approve, approval_id, idp.token("mallory@acme.io", "sec-oncall")))

    assert code_of(error) == PERMISSION_DENIED
    lab.approve(approval_id, idp.token("olaf@acme.io", groups=["sec-oncall"]))
    assert len(lab.record(approval_id).votes) == 1


def test_pending_work_is_listed_to_eligible_approvers_only_and_only_while_pending(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())

    def listed(token: str) -> list[str]:
        response = day.approvals.ListApprovals(
            apb.ListApprovalsRequest(), metadata=bearer(token), timeout=TIMEOUT
        )
        return [a.id for a in response.approvals]

    assert listed(idp.token("erin@acme.io", "security")) == [approval_id]
    assert listed(idp.token("ivan@acme.io", "security")) == []  # the requester
    assert listed(idp.token("nina@acme.io", "intern")) == []
    day.approve(approval_id, idp.token("erin@acme.io", "security"))
    assert listed(idp.token("erin@acme.io", "security")) == [approval_id]
    day.approve(approval_id, idp.token("frank@acme.io", "security"))
    assert listed(idp.token("grace@acme.io", "security")) == []
