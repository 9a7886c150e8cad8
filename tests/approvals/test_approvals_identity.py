"""Who approves comes from the verified token only: kinds, forged metadata and bodies, bad tokens."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.approvals.model import State
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import (
    DevIdP,
    Metadata,
    Server,
    bearer,
    code_of,
    details_of,
    first,
    fullwidth,
    refused,
)
from tests.identity.keys import hmac_token, unsigned_token
from tests.server.harness import TIMEOUT, prod_grant

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
MISSING = object()


def assert_nothing_recorded(server: Server, approval_id: str) -> None:
    record = server.record(approval_id)
    assert record.state is State.PENDING
    assert record.votes == ()
    assert [e["type"] for e in server.global_events(approval_id)] == ["approval.created"]


# --- only humans ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["agent", "service"])
def test_agents_and_services_never_approve_or_reject_even_with_the_right_roles(
    day: Server, idp: DevIdP, kind: str
) -> None:
    approval_id = day.ask(prod_grant())
    token = idp.token("sec-bot@acme.io", "security", kind=kind, groups=["security"])

    for call in (day.approve, day.reject):
        error = refused(partial(call, approval_id, token))
        assert code_of(error) == PERMISSION_DENIED
        assert "not_human" in details_of(error)
    assert_nothing_recorded(day, approval_id)


@pytest.mark.parametrize(
    "kind",
    [
        MISSING,
        None,
        "",
        "Human",
        "HUMAN",
        " human",
        "human ",
        fullwidth("human"),
        "humans",
        "admin",
        ["human"],
        {"kind": "human"},
        1,
        True,
    ],
    ids=repr,
)
def test_a_token_with_a_missing_or_bogus_kind_claim_cannot_approve(
    day: Server, idp: DevIdP, kind: object
) -> None:
    approval_id = day.ask(prod_grant())
    claims = idp.claims("erin@acme.io", "security")
    if kind is MISSING:
        del claims["principal_kind"]
        claims["kind"] = "human"  # the wrong claim name says nothing
    else:
        claims["principal_kind"] = kind
    token = idp.signed(claims)

    error = refused(lambda: day.approve(approval_id, token))

    assert code_of(error) == PERMISSION_DENIED
    assert "not_human" in details_of(error)
    assert_nothing_recorded(day, approval_id)


# --- forged identity ------------------------------------------------------------------------

FORGED_HEADERS: Metadata = (
    ("x-approver", "erin@acme.io"),
    ("x-user", "erin@acme.io"),
    ("x-forwarded-user", "erin@acme.io"),
    ("x-remote-user", "erin@acme.io"),
    ("x-roles", "security"),
    ("x-principal-kind", "human"),
)


def test_approver_headers_without_a_token_are_unauthenticated(day: Server) -> None:
    approval_id = day.ask(prod_grant())
    request = apb.ApproveRequest(approval_id=approval_id, reason="lgtm")

    error = refused(
        lambda: day.approvals.Approve(request, metadata=FORGED_HEADERS, timeout=TIMEOUT)
    )

    assert code_of(error) == UNAUTHENTICATED
    assert_nothing_recorded(day, approval_id)


def test_approver_headers_beside_a_valid_token_are_ignored(day: Server, idp: DevIdP) -> None:
    approval_id = day.ask(prod_grant())
    nobody = idp.token("nina@acme.io", "intern")
    request = apb.ApproveRequest(approval_id=approval_id, reason="lgtm")

    error = refused(
        lambda: day.approvals.Approve(
            request, metadata=bearer(nobody) + FORGED_HEADERS, timeout=TIMEOUT
        )
    )

    assert code_of(error) == PERMISSION_DENIED
    assert "not_eligible" in details_of(error)
    assert_nothing_recorded(day, approval_id)


@pytest.mark.parametrize("order", ["eligible-first", "eligible-last"])
def test_two_authorization_headers_are_unauthenticated(
    day: Server, idp: DevIdP, order: str
) -> None:
    approval_id = day.ask(prod_grant())
    tokens = [idp.token("erin@acme.io", "security"), idp.token("nina@acme.io", "intern")]
    if order == "eligible-last":
        tokens.reverse()
    metadata = tuple(("authorization", f"Bearer {t}") for t in tokens)
    request = apb.ApproveRequest(approval_id=approval_id, reason="lgtm")

    error = refused(lambda: day.approvals.Approve(request, metadata=metadata, timeout=TIMEOUT))

    assert code_of(error) == UNAUTHENTICATED
    assert "more than one authorization header" in details_of(error)
    assert_nothing_recorded(day, approval_id)


def test_no_approval_request_field_can_name_the_caller() -> None:
    identity_words = ("approver", "user", "subject", "principal", "identity", "actor", "role")
    for message in (
        apb.ApproveRequest,
        apb.RejectRequest,
        apb.CancelRequest,
        apb.GetApprovalRequest,
        apb.ListApprovalsRequest,
        apb.WatchApprovalRequest,
    ):
        names = {f.name for f in message.DESCRIPTOR.fields}
        assert not {n for n in names if any(w in n for w in identity_words)}, message


def test_unknown_approver_fields_smuggled_into_the_request_bytes_are_ignored(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    body = apb.ApproveRequest(approval_id=approval_id, reason="lgtm").SerializeToString()
    # Field 3 (approver), 4 (a whole Vote) and 15: what an older or newer schema might carry.
    vote = apb.Vote(approver_id="erin@acme.io", decision=apb.VOTE_DECISION_APPROVE)
    smuggled = body + _field(3, b"erin@acme.io") + _field(4, vote.SerializeToString())
    smuggled += _field(15, b"security")
    approve = day.channel.unary_unary(
        "/signoff.v1.ApprovalService/Approve",
        request_serializer=lambda raw: raw,
        response_deserializer=apb.ApproveResponse.FromString,
    )
    nobody = idp.token("nina@acme.io", "intern")

    error = refused(lambda: approve(smuggled, metadata=bearer(nobody), timeout=TIMEOUT))

    assert code_of(error) == PERMISSION_DENIED
    assert_nothing_recorded(day, approval_id)


def _field(number: int, value: bytes) -> bytes:
    assert len(value) < 128
    return bytes([(number << 3) | 2, len(value)]) + value


def test_check_callers_claiming_approver_roles_or_fields_approve_nothing(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    eligible = bearer(idp.token("erin@acme.io", "security"))

    # The requester claims the approver role in the Check body: a different request.
    claims_role = prod_grant()
    claims_role.principal.roles.append("security")
    claims_role.approval_id = approval_id
    # An approver asks Check with the approval id: not the requester, so not the request.
    as_approver = prod_grant()
    as_approver.principal.id = "erin@acme.io"
    as_approver.principal.roles[:] = ["iam_admin", "security"]
    as_approver.approval_id = approval_id
    # Approval-looking payload fields are just payload.
    claims_payload = prod_grant()
    claims_payload.payload.update(
        {"approved_by": ["erin@acme.io", "frank@acme.io"], "approval_state": "approved"}
    )
    claims_payload.approval_id = approval_id

    for request in (claims_role, as_approver, claims_payload):
        response = day.decisions.Check(request, metadata=eligible, timeout=TIMEOUT)
        assert response.verdict == pb.VERDICT_DENY
        assert list(response.reasons) == ["approval_mismatch"]
    # The exact request, sent with an eligible approver's token on the Check call: still pending.
    exact = prod_grant()
    exact.approval_id = approval_id
    response = day.decisions.Check(exact, metadata=eligible, timeout=TIMEOUT)
    assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert response.approval_id == approval_id
    assert_nothing_recorded(day, approval_id)


def test_only_the_requester_side_and_eligible_approvers_can_see_an_approval(
    day: Server, idp: DevIdP
) -> None:
    approval_id = day.ask(prod_grant())
    outsiders = [
        idp.token("nina@acme.io", "intern"),
        idp.token("sec-bot@acme.io", "security", kind="agent"),
    ]
    insiders = [idp.token("ivan@acme.io"), idp.token("erin@acme.io", "security")]

    for token in outsiders:
        assert code_of(refused(partial(day.get, approval_id, token))) == PERMISSION_DENIED
        watch = day.approvals.WatchApproval(
            apb.WatchApprovalRequest(approval_id=approval_id),
            metadata=bearer(token),
            timeout=TIMEOUT,
        )
        assert code_of(refused(partial(first, watch))) == PERMISSION_DENIED
        listed = day.approvals.ListApprovals(
            apb.ListApprovalsRequest(), metadata=bearer(token), timeout=TIMEOUT
        )
        assert list(listed.approvals) == []
    for token in insiders:
        assert day.get(approval_id, token).id == approval_id


# --- bad credentials on every RPC ------------------------------------------------------------


def _tampered(idp: DevIdP) -> str:
    header, _payload, signature = idp.token("nina@acme.io").split(".")
    claims = idp.claims("erin@acme.io", "security")
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _unsigned(idp: DevIdP) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": idp.kid}
    return unsigned_token(header, idp.claims("erin@acme.io", "security"))


def _confused(idp: DevIdP) -> str:
    # Algorithm confusion: an HMAC keyed with the public key anyone can read from the JWKS.
    public = json.loads(idp.jwks.read_text())["keys"][0]["x"].encode()
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.kid}
    return hmac_token(public, header, idp.claims("erin@acme.io", "security"))


BAD_CREDENTIALS: dict[str, Callable[[DevIdP], Metadata]] = {
    "none": lambda idp: (),
    "wrong-signature": lambda idp: bearer(
        idp.signed(idp.claims("erin@acme.io", "security"), key=Ed25519PrivateKey.generate())
    ),
    "tampered-claims": lambda idp: bearer(_tampered(idp)),
    "wrong-audience": lambda idp: bearer(
        idp.token("erin@acme.io", "security", aud="another-service")
    ),
    "wrong-issuer": lambda idp: bearer(idp.token("erin@acme.io", "security", iss="evil-idp")),
    "expired": lambda idp: bearer(
        idp.token(
            "erin@acme.io",
            "security",
            iat=int(time.time()) - 7200,
            nbf=int(time.time()) - 7200,
            exp=int(time.time()) - 3600,
        )
    ),
    "foreign-key": lambda idp: bearer(
        idp.signed(
            idp.claims("erin@acme.io", "security"),
            key=Ed25519PrivateKey.generate(),
            kid="attacker-key",
        )
    ),
    "not-yet-valid": lambda idp: bearer(
        idp.token("erin@acme.io", "security", nbf=int(time.time()) + 3600)
    ),
    "alg-none": lambda idp: bearer(_unsigned(idp)),
    "hs256-with-the-public-key": lambda idp: bearer(_confused(idp)),
    "not-bearer": lambda idp: (("authorization", "Basic ZXJpbjpodW50ZXIy"),),
    "garbage": lambda idp: (("authorization", "Bearer not.a.jwt"),),
}


def _rpcs(server: Server, approval_id: str) -> dict[str, Callable[[Metadata], Any]]:
    stub = server.approvals
    return {
        "ListApprovals": lambda md: stub.ListApprovals(
            apb.ListApprovalsRequest(), metadata=md, timeout=TIMEOUT
        ),
        "GetApproval": lambda md: stub.GetApproval(
            apb.GetApprovalRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
        ),
        "Approve": lambda md: stub.Approve(
            apb.ApproveRequest(approval_id=approval_id, reason="lgtm"), metadata=md, timeout=TIMEOUT
        ),
        "Reject": lambda md: stub.Reject(
            apb.RejectRequest(approval_id=approval_id, reason="no"), metadata=md, timeout=TIMEOUT
        ),
        "Cancel": lambda md: stub.Cancel(
            apb.CancelRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
        ),
        "WatchApproval": lambda md: first(
            stub.WatchApproval(
                apb.WatchApprovalRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
            )
        ),
    }


RPCS = ["ListApprovals", "GetApproval", "Approve", "Reject", "Cancel", "WatchApproval"]


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("rpc", RPCS)
def test_every_approval_rpc_refuses_a_bad_credential_as_unauthenticated(
    day: Server, idp: DevIdP, rpc: str, credential: str
) -> None:
    approval_id = day.ask(prod_grant())
    metadata = BAD_CREDENTIALS[credential](idp)

    error = refused(lambda: _rpcs(day, approval_id)[rpc](metadata))

    assert code_of(error) == UNAUTHENTICATED
    assert details_of(error).startswith("unauthenticated: ")
    assert_nothing_recorded(day, approval_id)


@pytest.mark.parametrize("rpc", RPCS)
def test_the_same_rpc_with_a_good_credential_is_not_unauthenticated(
    day: Server, idp: DevIdP, rpc: str
) -> None:
    # Control for the test above: the approval and the calls are fine; only the credential was not.
    approval_id = day.ask(prod_grant())
    token = idp.token("ivan@acme.io") if rpc == "Cancel" else idp.token("erin@acme.io", "security")

    _rpcs(day, approval_id)[rpc](bearer(token))
