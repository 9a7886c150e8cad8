"""Self-approval is impossible on every path: same id, other spellings, owners, reject, quorum."""

from __future__ import annotations

from functools import partial

import grpc
import pytest

from signoff.approvals.model import State
from signoff.v1 import approvals_pb2 as apb
from tests.approvals.support import (
    DevIdP,
    Server,
    code_of,
    details_of,
    fullwidth,
    lab_bot,
    lab_request,
    refused,
    staff,
)
from tests.server.harness import check_request, customers, export_bot, prod_grant

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def assert_untouched(server: Server, approval_id: str, *, votes: int = 0, events: int = 1) -> None:
    """Still pending, with exactly `votes` votes and `events` events: the attempt counted for nothing."""
    record = server.record(approval_id)
    assert record.state is State.PENDING
    assert len(record.votes) == votes
    assert server.raw(approval_id)["approvals"] == str(votes)
    assert len(server.events(approval_id)) == events
    assert len(server.global_events(approval_id)) == events


def test_requester_holding_the_approver_role_cannot_approve_its_own_request(
    day: Server, idp: DevIdP
) -> None:
    # ivan asks for the prod grant, and his token says he is a security engineer too.
    approval_id = day.ask(prod_grant())

    error = refused(lambda: day.approve(approval_id, idp.token("ivan@acme.io", "security")))

    assert code_of(error) == PERMISSION_DENIED
    assert "self_approval" in details_of(error)
    assert_untouched(day, approval_id)


@pytest.mark.parametrize(
    ("requester", "approver"),
    [
        ("alice@acme.io", "Alice@Acme.io"),
        ("alice@acme.io", "ALICE@ACME.IO"),
        ("ALICE@ACME.IO", "alice@acme.io"),
        ("alice@acme.io", fullwidth("alice@acme.io")),
        (fullwidth("Alice") + "@acme.io", "alice@acme.io"),
        ("alice@acme.io", " alice@acme.io "),
        ("alice@acme.io", "alice@acme.io\u00a0"),  # no-break space
        ("josé@acme.io", "jose\u0301@acme.io"),  # precomposed vs combining accent
        ("strauß@acme.io", "STRAUSS@ACME.IO"),  # full case folding
        ("ﬁona@acme.io", "fiona@acme.io"),  # ligature
        ("alice@acme.io", "ⓐlice@acme.io"),  # circled letter
    ],
)
def test_another_spelling_of_the_requester_cannot_approve_or_reject(
    lab: Server, idp: DevIdP, requester: str, approver: str
) -> None:
    approval_id = lab.ask(lab_request(who=staff(requester)))
    token = idp.token(approver, "reviewer")

    approve = refused(lambda: lab.approve(approval_id, token))
    reject = refused(lambda: lab.reject(approval_id, token))

    for error in (approve, reject):
        assert code_of(error) == PERMISSION_DENIED
        assert "self_approval" in details_of(error)
    assert_untouched(lab, approval_id)


@pytest.mark.parametrize(
    "owner_spelling",
    [
        "olivia@acme.io",
        "Olivia@ACME.io",
        fullwidth("olivia") + "@acme.io",
        "oscar@acme.io",
        "OSCAR@acme.io",
    ],
)
def test_the_agents_declared_owners_cannot_approve_its_request(
    lab: Server, idp: DevIdP, owner_spelling: str
) -> None:
    # requester_identities: [principal.attr.owner, principal.attr.owners]
    approval_id = lab.ask(
        lab_request(who=lab_bot(owner="olivia@acme.io", owners=["oscar@acme.io"]))
    )
    token = idp.token(owner_spelling, "reviewer")

    approve = refused(lambda: lab.approve(approval_id, token))
    reject = refused(lambda: lab.reject(approval_id, token))

    for error in (approve, reject):
        assert code_of(error) == PERMISSION_DENIED
        assert "self_approval" in details_of(error)
    assert_untouched(lab, approval_id)


def test_the_owners_are_named_as_requester_identities_and_a_stranger_may_approve(
    lab: Server, idp: DevIdP
) -> None:
    approval_id = lab.ask(
        lab_request(who=lab_bot(owner="olivia@acme.io", owners=["oscar@acme.io"]))
    )

    approved = lab.approve(approval_id, idp.token("rita@acme.io", "reviewer"))

    assert approved.state == apb.APPROVAL_STATE_APPROVED
    assert set(approved.requirement.requester_ids) == {
        "agent:lab-bot",
        "olivia@acme.io",
        "oscar@acme.io",
    }


def test_bundled_night_export_owner_cannot_approve_their_own_agents_export(
    night: Server, idp: DevIdP
) -> None:
    # The export bot acts for alice (principal.attr.owner). Were alice a data steward, she must
    # still not be the one human who signs off on her own agent's bulk export.
    approval_id = night.ask(check_request(export_bot(), "export", customers()))

    error = refused(lambda: night.approve(approval_id, idp.token("alice@acme.io", "data_steward")))

    assert code_of(error) == PERMISSION_DENIED
    assert "self_approval" in details_of(error)
    assert_untouched(night, approval_id)


def test_self_approval_attempt_counts_toward_nothing_on_a_quorum(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())
    day.approve(approval_id, idp.token("erin@acme.io", "security"))

    for spelling in ("ivan@acme.io", "IVAN@acme.io", fullwidth("ivan@acme.io")):
        error = refused(partial(day.approve, approval_id, idp.token(spelling, "security")))
        assert code_of(error) == PERMISSION_DENIED
    assert_untouched(day, approval_id, votes=1, events=2)

    # Only a second distinct, non-requester human completes the quorum.
    approved = day.approve(approval_id, idp.token("frank@acme.io", "security"))
    assert approved.state == apb.APPROVAL_STATE_APPROVED
    assert sorted(v.approver_id for v in approved.votes) == ["erin@acme.io", "frank@acme.io"]


def test_requester_cannot_reject_its_own_request_but_can_cancel_it(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    ivan = idp.token("ivan@acme.io", "security")

    error = refused(lambda: day.reject(approval_id, ivan))

    assert code_of(error) == PERMISSION_DENIED
    assert "self_approval" in details_of(error)
    assert_untouched(day, approval_id)
    cancelled = day.cancel(approval_id, ivan, "changed my mind")
    assert cancelled.state == apb.APPROVAL_STATE_CANCELLED
    assert cancelled.final_reason == "changed my mind"


def test_only_the_requester_side_can_cancel(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())

    error = refused(lambda: day.cancel(approval_id, idp.token("erin@acme.io", "security")))

    assert code_of(error) == PERMISSION_DENIED
    assert "not_requester" in details_of(error)
    assert_untouched(day, approval_id)
