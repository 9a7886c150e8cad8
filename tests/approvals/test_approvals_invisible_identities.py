"""Invisible characters neither hide an owner nor make the requester or a voter someone else."""

from __future__ import annotations

from functools import partial

import grpc
import pytest

from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import (
    DevIdP,
    Server,
    code_of,
    details_of,
    lab_bot,
    lab_request,
    refused,
    staff,
)
from tests.server.harness import prod_grant

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

# Each shows as nothing (or a blank) in a console, a chat message or an approval screen.
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\u202e",  # right-to-left override
    "\u2066\u2069",  # bidi isolate, pop
    "\u180e",  # Mongolian vowel separator
    "\U000e0041",  # tag latin capital A
    "\u034f",  # combining grapheme joiner
    "\ufe0f",  # variation selector 16
    "\u3164",  # Hangul filler
    "\u2800",  # braille pattern blank
    " \u200b\u00a0",  # spaces around a zero-width space
]


@pytest.mark.parametrize("owner", INVISIBLE, ids=ascii)
def test_an_agent_whose_owner_is_invisible_is_denied_as_having_no_owner(
    lab: Server, owner: str
) -> None:
    response = lab.check(lab_request(who=lab_bot(owner=owner, owners=())))

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["requester_identity_missing"]
    assert response.approval_id == ""


def test_an_invisible_owner_beside_a_real_one_leaves_the_real_one_accountable(
    lab: Server,
) -> None:
    response = lab.check(lab_request(who=lab_bot(owner="\u200b", owners=["oscar@acme.io"])))

    assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL


@pytest.mark.parametrize(
    ("requester", "approver"),
    [
        ("bob@acme.io", "bob\u200b@acme.io"),
        ("bob\u200b@acme.io", "bob@acme.io"),
        ("bob@acme.io", "\u2060bob@acme.io\ufeff"),
        ("bob@acme.io", "b\u00adob@acme.io"),
        ("bob@acme.io", "bob@\u202eacme.io"),
        ("bob@acme.io", "bob@acme\u034f.io"),
        ("bob@acme.io", "bob @acme.io"),
    ],
    ids=ascii,
)
def test_the_requester_spelled_with_invisible_characters_cannot_approve_or_reject(
    lab: Server, idp: DevIdP, requester: str, approver: str
) -> None:
    approval_id = lab.ask(lab_request(who=staff(requester)))
    token = idp.token(approver, "reviewer")

    for call in (lab.approve, lab.reject):
        error = refused(partial(call, approval_id, token))
        assert code_of(error) == PERMISSION_DENIED
        assert "self_approval" in details_of(error)
    assert lab.record(approval_id).votes == ()


def test_an_owner_declared_with_a_zero_width_space_still_cannot_approve(
    lab: Server, idp: DevIdP
) -> None:
    approval_id = lab.ask(
        lab_request(who=lab_bot(owner="oli\u200bvia@acme.io", owners=["os\u2060car@acme.io"]))
    )

    for owner in ("olivia@acme.io", "oscar@acme.io"):
        error = refused(partial(lab.approve, approval_id, idp.token(owner, "reviewer")))
        assert code_of(error) == PERMISSION_DENIED
        assert "self_approval" in details_of(error)


def test_one_approver_under_an_invisible_variant_of_their_id_counts_once(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    day.approve(approval_id, idp.token("erin@acme.io", "security"))

    again = day.approve(approval_id, idp.token("er\u200bin@acme.io", "security"))

    assert again.state == apb.APPROVAL_STATE_PENDING
    assert len(again.votes) == 1
