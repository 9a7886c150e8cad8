"""An approval answers once, for the exact request it was granted for, and for nothing else."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from signoff.approvals.model import State
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.conftest import MakeServer
from tests.approvals.support import (
    AGENT,
    DevIdP,
    Server,
    code_of,
    details_of,
    lab_request,
    refused,
    serve,
)
from tests.server.harness import (
    TIMEOUT,
    check_request,
    customers,
    export_bot,
    iam_role,
    prod_grant,
    struct,
)

Change = Callable[[pb.CheckRequest], None]


def approved_grant(server: Server, idp: DevIdP, request: pb.CheckRequest | None = None) -> str:
    approval_id = server.ask(request or prod_grant())
    server.approve(approval_id, idp.token("erin@acme.io", "security"))
    server.approve(approval_id, idp.token("frank@acme.io", "security"))
    assert server.state(approval_id) is State.APPROVED
    return approval_id


def approved_lab(server: Server, idp: DevIdP, request: pb.CheckRequest | None = None) -> str:
    approval_id = server.ask(request or lab_request())
    server.approve(approval_id, idp.token("rita@acme.io", "reviewer"))
    assert server.state(approval_id) is State.APPROVED
    return approval_id


def assert_denied(response: pb.CheckResponse, reason: str, approval_id: str) -> None:
    assert response.verdict == pb.VERDICT_DENY, response
    assert list(response.reasons) == [reason]
    assert response.approval_id == approval_id
    assert not response.masking_plan.fields


def assert_used_once(server: Server, request: pb.CheckRequest, approval_id: str) -> None:
    """The exact request gets its verdict once; every later use is approval_already_used."""
    granted = server.check(request, approval_id)
    assert granted.verdict in (pb.VERDICT_ALLOW, pb.VERDICT_MASK), granted
    assert list(granted.reasons) == [f"approved: {approval_id}"]
    assert granted.approval_id == approval_id
    assert server.state(approval_id) is State.CONSUMED
    for _ in range(2):
        assert_denied(server.check(request, approval_id), "approval_already_used", approval_id)


# --- the bundled rules ---------------------------------------------------------------------


def test_bundled_grant_is_bound_to_its_payload_and_used_once(day: Server, idp: DevIdP) -> None:
    approval_id = approved_grant(day, idp)
    other_grantee = prod_grant()
    other_grantee.payload.update({"grantee": "mallory@acme.io"})
    bigger_role = prod_grant()
    bigger_role.payload.update({"role": "org-owner"})
    other_admin = check_request(
        pb.Principal(
            id="ivy@acme.io",
            kind=pb.PRINCIPAL_KIND_HUMAN,
            roles=["iam_admin"],
            attributes=struct({"tenant": "acme"}),
        ),
        "grant_role",
        iam_role(),
        payload={"grantee": "bob@acme.io", "role": "db-admin"},
    )

    for request in (other_grantee, bigger_role, other_admin):
        assert_denied(day.check(request, approval_id), "approval_mismatch", approval_id)
    assert day.state(approval_id) is State.APPROVED
    granted = day.check(prod_grant(), approval_id)
    assert granted.verdict == pb.VERDICT_ALLOW
    assert list(granted.matched_rules) == [
        "iam-grants/allow-human-admins",
        "iam-grants/prod-needs-two-security-approvers",
    ]
    assert_denied(day.check(prod_grant(), approval_id), "approval_already_used", approval_id)


def test_bundled_night_export_is_used_once_and_keeps_its_masking_plan(
    night: Server, idp: DevIdP
) -> None:
    request = check_request(export_bot(), "export", customers())
    approval_id = night.ask(request)
    night.approve(approval_id, idp.token("dana@acme.io", "data_steward"))

    granted = night.check(request, approval_id)

    assert granted.verdict == pb.VERDICT_MASK
    assert {f.path for f in granted.masking_plan.fields} == {
        "customers.*.card_number",
        "customers.*.email",
        "customers.*.id",
    }
    assert_denied(night.check(request, approval_id), "approval_already_used", approval_id)


# --- every part of the request is bound ----------------------------------------------------


def _payload(**changes: Any) -> Change:
    def change(request: pb.CheckRequest) -> None:
        request.payload.update(changes)

    return change


def _drop_payload(key: str) -> Change:
    def change(request: pb.CheckRequest) -> None:
        del request.payload[key]

    return change


def _body(request: pb.CheckRequest, edit: Callable[[dict[str, Any]], None]) -> None:
    body = json_format.MessageToDict(request.payload)
    edit(body)
    request.payload.Clear()
    request.payload.update(body)


def _row(index: int, key: str, value: str) -> Change:
    def change(request: pb.CheckRequest) -> None:
        _body(request, lambda body: body["customers"][index].update({key: value}))

    return change


def _add_row(request: pb.CheckRequest) -> None:
    _body(request, lambda body: body["customers"].append({"id": "c-9", "email": "x@example.com"}))


def _add_field(request: pb.CheckRequest) -> None:
    request.resource.fields.add(path="customers.*.phone", tags=["pii.phone"])


def _drop_field(request: pb.CheckRequest) -> None:
    del request.resource.fields[3]  # the untagged country column


def _rename_field(request: pb.CheckRequest) -> None:
    request.resource.fields[3].path = "customers.*.region"


def _add_tag(request: pb.CheckRequest) -> None:
    request.resource.fields[3].tags.append("pii.location")


def _drop_tag(request: pb.CheckRequest) -> None:
    del request.resource.fields[1].tags[0]  # the email column, untagged: it would go unmasked


def _swap_tag(request: pb.CheckRequest) -> None:
    request.resource.fields[1].tags[0] = "pii.email_work"


def _principal_id(request: pb.CheckRequest) -> None:
    request.principal.id = "sam.other@acme.io"


def _principal_case(request: pb.CheckRequest) -> None:
    request.principal.id = "Sam@acme.io"


def _add_role(request: pb.CheckRequest) -> None:
    request.principal.roles.append("auditor")


def _principal_kind(request: pb.CheckRequest) -> None:
    request.principal.kind = AGENT
    # An agent must name its owner to ask for sign-off at all; with one, the replay is
    # refused for the changed principal.
    request.principal.attributes.update({"owner": "someone-else@acme.io"})


def _principal_attr(**changes: Any) -> Change:
    def change(request: pb.CheckRequest) -> None:
        request.principal.attributes.update(changes)

    return change


def _action(request: pb.CheckRequest) -> None:
    request.action = "read"


def _resource_kind(request: pb.CheckRequest) -> None:
    request.resource.kind = "report"


def _resource_id(request: pb.CheckRequest) -> None:
    request.resource.id = "doc-2"


def _resource_attr(request: pb.CheckRequest) -> None:
    request.resource.attributes.update({"label": "public"})


CHANGES: dict[str, Change] = {
    "payload-value": _payload(target="s3://attacker/loot.parquet"),
    "payload-number": _payload(rows=3),
    "payload-added-key": _payload(note="also this"),
    "payload-removed-key": _drop_payload("rows"),
    "payload-nested-value": _row(0, "email", "ceo@example.com"),
    "payload-added-row": _add_row,
    "field-added": _add_field,
    "field-removed": _drop_field,
    "field-renamed": _rename_field,
    "tag-added": _add_tag,
    "tag-removed": _drop_tag,
    "tag-changed": _swap_tag,
    "principal-id": _principal_id,
    "principal-id-case": _principal_case,
    "principal-role-added": _add_role,
    "principal-kind": _principal_kind,
    "principal-attribute-added": _principal_attr(note="on call"),
    "principal-attribute-changed": _principal_attr(tenant="globex"),
    "action": _action,
    "resource-kind": _resource_kind,
    "resource-id": _resource_id,
    "resource-attribute": _resource_attr,
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_an_approval_is_not_replayed_on_a_changed_request(
    lab: Server, idp: DevIdP, name: str
) -> None:
    original = lab_request()
    approval_id = approved_lab(lab, idp, original)
    changed = copy.deepcopy(original)
    CHANGES[name](changed)
    assert changed != original
    # The changed request still needs an approval on its own, so only the binding can refuse it.
    assert lab.check(changed).verdict == pb.VERDICT_REQUIRE_APPROVAL

    assert_denied(lab.check(changed, approval_id), "approval_mismatch", approval_id)

    assert lab.state(approval_id) is State.APPROVED
    assert [e["type"] for e in lab.global_events(approval_id)][-1] == "approval.approved"
    assert_used_once(lab, original, approval_id)


def test_one_batch_cannot_use_an_approval_twice(lab: Server, idp: DevIdP) -> None:
    approval_id = approved_lab(lab, idp)
    item = lab_request()
    item.approval_id = approval_id

    response = lab.decisions.CheckBatch(pb.CheckBatchRequest(items=[item] * 3), timeout=TIMEOUT)

    verdicts = [(r.decision.verdict, list(r.decision.reasons)) for r in response.results]
    assert verdicts == [
        (pb.VERDICT_MASK, [f"approved: {approval_id}"]),
        (pb.VERDICT_DENY, ["approval_already_used"]),
        (pb.VERDICT_DENY, ["approval_already_used"]),
    ]


def test_the_approval_of_another_request_does_not_match(lab: Server, idp: DevIdP) -> None:
    mine = lab_request()
    theirs = lab_request(payload={"target": "s3://acme-exports/other.parquet", "rows": 1})
    my_id = approved_lab(lab, idp, mine)
    their_id = approved_lab(lab, idp, theirs)

    assert_denied(lab.check(mine, their_id), "approval_mismatch", their_id)
    assert_denied(lab.check(theirs, my_id), "approval_mismatch", my_id)
    assert_used_once(lab, mine, my_id)
    assert_used_once(lab, theirs, their_id)


def test_an_approval_of_another_pending_request_does_not_match(lab: Server, idp: DevIdP) -> None:
    mine = lab_request()
    pending = lab.ask(lab_request(payload={"target": "s3://x", "rows": 1}))

    assert_denied(lab.check(mine, pending), "approval_mismatch", pending)
    assert lab.state(pending) is State.PENDING


@pytest.mark.parametrize(
    "approval_id",
    ["apr_doesnotexist", "apr_AAAAAAAAAAAAAAAAAAAAAAAA", "nope", "apr_", "*", "apr_*"],
)
def test_an_unknown_approval_id_is_not_found(lab: Server, approval_id: str) -> None:
    assert_denied(lab.check(lab_request(), approval_id), "approval_not_found", approval_id)


# `apr_…:votes` and `apr_…:events` are Redis keys of a real approval (its votes hash and its
# event stream): an approval id must never be able to address them.
KEY_SUFFIXES = [":votes", ":events"]


@pytest.mark.parametrize("suffix", KEY_SUFFIXES)
def test_a_check_with_an_approval_id_naming_another_redis_key_is_not_found(
    lab: Server, idp: DevIdP, suffix: str
) -> None:
    approval_id = approved_lab(lab, idp)
    forged = approval_id + suffix

    response = lab.check(lab_request(), forged)

    assert_denied(response, "approval_not_found", forged)
    assert lab.state(approval_id) is State.APPROVED


@pytest.mark.parametrize("suffix", KEY_SUFFIXES)
@pytest.mark.parametrize("rpc", ["GetApproval", "Approve"])
def test_an_approval_rpc_with_an_id_naming_another_redis_key_is_not_found(
    lab: Server, idp: DevIdP, suffix: str, rpc: str
) -> None:
    approval_id = lab.ask(lab_request("prod"))
    lab.approve(approval_id, idp.token("erin@acme.io", "security"))  # pending, one vote so far
    forged = approval_id + suffix
    token = idp.token("grace@acme.io", "security")
    call = {"GetApproval": lab.get, "Approve": lab.approve}[rpc]

    error = refused(lambda: call(forged, token))

    assert (code_of(error), details_of(error)) == (grpc.StatusCode.NOT_FOUND, "no such approval")
    assert len(lab.record(approval_id).votes) == 1


def test_a_pending_approval_answers_require_approval_with_the_same_id(
    lab: Server, idp: DevIdP
) -> None:
    approval_id = lab.ask(lab_request())

    response = lab.check(lab_request(), approval_id)

    assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert response.approval_id == approval_id
    assert lab.state(approval_id) is State.PENDING
    assert lab.ask(lab_request()) == approval_id  # asking again reuses the live approval


def test_a_cancelled_approval_cannot_be_used(lab: Server, idp: DevIdP) -> None:
    approval_id = approved_lab(lab, idp)
    lab.cancel(approval_id, idp.token("sam@acme.io"))

    assert_denied(lab.check(lab_request(), approval_id), "approval_cancelled", approval_id)


def test_a_policy_deny_is_never_lifted_by_an_approval(lab: Server, idp: DevIdP) -> None:
    approval_id = approved_lab(lab, idp)
    frozen = lab_request()
    frozen.context.attributes.update({"frozen": True})

    response = lab.check(frozen, approval_id)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["changes are frozen"]
    assert lab.state(approval_id) is State.APPROVED  # untouched: still usable when allowed
    assert_used_once(lab, lab_request(), approval_id)


def test_an_approval_for_a_weaker_requirement_does_not_lift_a_stricter_one(
    lab: Server, idp: DevIdP
) -> None:
    # One reviewer signed off on the export in staging, where that is all it takes; the same
    # export in prod needs two security engineers (the reviewer saw "environment: staging").
    approval_id = approved_lab(lab, idp, lab_request("staging"))
    prod = lab_request("prod")
    assert lab.check(prod).approval.quorum == 2

    response = lab.check(prod, approval_id)

    assert response.verdict not in (pb.VERDICT_ALLOW, pb.VERDICT_MASK), (
        "a staging approval by one reviewer lifted prod's two-security-approver requirement"
    )
    assert lab.state(approval_id) is State.APPROVED


def test_an_approval_granted_under_a_weaker_policy_does_not_satisfy_a_stricter_one(
    make_server: MakeServer, write_lab: Callable[..., Path], idp: DevIdP
) -> None:
    # Two processes on one Redis during a policy rollout: the old policy needed one reviewer, the
    # new one needs two. An approval granted by one reviewer must not be enough under the new one.
    old = make_server(write_lab(staging_quorum=1))
    with serve(write_lab(staging_quorum=2), auth=idp.authenticator(), prefix=old.prefix) as new:
        approval_id = approved_lab(old, idp)
        assert new.check(lab_request()).approval.quorum == 2

        response = new.check(lab_request(), approval_id)

        assert response.verdict not in (pb.VERDICT_ALLOW, pb.VERDICT_MASK), (
            "an approval with one vote satisfied a policy that requires two"
        )


def test_a_pending_approval_asked_under_a_weaker_policy_is_not_reused_under_a_stricter_one(
    make_server: MakeServer, write_lab: Callable[..., Path], idp: DevIdP
) -> None:
    # The rollout again, one step earlier: the request was asked under the old policy and is
    # still pending. Asking under the new policy must not hand back an approval that one vote
    # completes, while the answer itself says two are needed.
    old = make_server(write_lab(staging_quorum=1))
    with serve(write_lab(staging_quorum=2), auth=idp.authenticator(), prefix=old.prefix) as new:
        asked_before = old.ask(lab_request())
        response = new.check(lab_request())
        assert response.approval.quorum == 2

        reused = new.record(response.approval_id)

        assert reused.quorum == 2, (
            f"{response.approval_id} (asked before the rollout: {asked_before}) is completed "
            f"by {reused.quorum} vote(s) though the policy now needs 2"
        )
