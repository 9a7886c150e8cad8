"""Conversions between the client's dataclasses and the protobuf messages."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from google.protobuf import json_format

from signoff.client import (
    CheckItem,
    Context,
    Decision,
    Field,
    InvalidInput,
    ItemFailure,
    Principal,
    ProtocolError,
    Resource,
    SignoffClientError,
    Verdict,
)
from signoff.v1 import signoff_pb2 as pb


def full_item() -> CheckItem:
    return CheckItem(
        principal=Principal(
            "agent:export-bot", kind="agent", roles=("exporter",), attributes={"team": "data"}
        ),
        action="export",
        resource=Resource(
            "table",
            id="customers",
            attributes={"rows": 120, "tags": ["pii"]},
            fields=(Field("customers.*.email", ("pii.email",)), Field("customers.*.id")),
        ),
        context=Context(
            environment="prod",
            time=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            source_ip="10.0.0.1",
            attributes={"ticket": "OPS-1"},
        ),
        payload={"target": "s3://bucket/x", "limit": None},
        approval_id="apr-1",
    )


def test_check_item_converts_every_field_to_the_request() -> None:
    request = full_item().to_proto()
    assert json_format.MessageToDict(request, preserving_proto_field_name=True) == {
        "principal": {
            "id": "agent:export-bot",
            "kind": "PRINCIPAL_KIND_AGENT",
            "roles": ["exporter"],
            "attributes": {"team": "data"},
        },
        "action": "export",
        "resource": {
            "kind": "table",
            "id": "customers",
            "attributes": {"rows": 120.0, "tags": ["pii"]},
            "fields": [
                {"path": "customers.*.email", "tags": ["pii.email"]},
                {"path": "customers.*.id"},
            ],
        },
        "context": {
            "environment": "prod",
            "time": "2025-01-02T03:04:05Z",
            "source_ip": "10.0.0.1",
            "attributes": {"ticket": "OPS-1"},
        },
        "payload": {"target": "s3://bucket/x", "limit": None},
        "approval_id": "apr-1",
    }


@pytest.mark.parametrize(
    ("kind", "proto"),
    [
        ("human", pb.PRINCIPAL_KIND_HUMAN),
        ("agent", pb.PRINCIPAL_KIND_AGENT),
        ("service", pb.PRINCIPAL_KIND_SERVICE),
    ],
)
def test_principal_kind_maps_to_proto_enum(kind: str, proto: int) -> None:
    assert Principal("p", kind=kind).to_proto().kind == proto  # type: ignore[arg-type]


def test_principal_defaults_to_human_without_roles_or_attributes() -> None:
    message = Principal("alice").to_proto()
    assert message.kind == pb.PRINCIPAL_KIND_HUMAN
    assert not message.roles
    assert not message.HasField("attributes")


def test_absent_context_and_payload_stay_unset_but_empty_payload_is_sent() -> None:
    bare = CheckItem(Principal("a"), "read", Resource("doc")).to_proto()
    assert not bare.HasField("context")
    assert not bare.HasField("payload")
    empty = CheckItem(Principal("a"), "read", Resource("doc"), payload={}).to_proto()
    assert empty.HasField("payload")


def test_unknown_principal_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="kind"):
        Principal("p", kind="robot")  # type: ignore[arg-type]


def test_roles_given_as_a_bare_string_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not a string"):
        Principal("p", roles="admin")  # type: ignore[arg-type]


def test_sequences_are_stored_as_tuples() -> None:
    principal = Principal("p", roles=["a", "b"])  # type: ignore[arg-type]
    assert principal.roles == ("a", "b")
    assert Field("x", ["t"]).tags == ("t",)  # type: ignore[arg-type]


def test_naive_context_time_is_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        Context(time=dt.datetime(2025, 1, 1))


def test_attributes_that_are_not_json_like_are_invalid_input() -> None:
    principal = Principal("p", attributes={"when": dt.date(2025, 1, 1)})
    with pytest.raises(InvalidInput, match=r"Principal\.attributes"):
        principal.to_proto()
    assert issubclass(InvalidInput, SignoffClientError)
    assert issubclass(InvalidInput, ValueError)


def test_inputs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Principal("p").id = "q"  # type: ignore[misc]


def full_response() -> pb.CheckResponse:
    return pb.CheckResponse(
        verdict=pb.VERDICT_REQUIRE_APPROVAL,
        decision_id="d-1",
        policy_revision="sha256:abc",
        matched_rules=["r.approve", "r.mask"],
        reasons=["prod export needs a DBA"],
        masking_plan=pb.MaskingPlan(
            fields=[
                pb.FieldMask(
                    path="customers.*.email",
                    operator=pb.MASK_OPERATOR_EMAIL,
                    rule_ids=["r.mask"],
                )
            ]
        ),
        approval=pb.ApprovalRequirement(
            approvers=[pb.ApproverSet(roles=["dba"], groups=["sec"])],
            quorum=2,
            rule_ids=["r.approve"],
        ),
        errored_rules=["r.broken"],
    )


def test_decision_from_proto_keeps_every_field() -> None:
    response = full_response()
    response.approval.pending_ttl.FromSeconds(3600)
    decision = Decision.from_proto(response)
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    assert decision.decision_id == "d-1"
    assert decision.policy_revision == "sha256:abc"
    assert decision.matched_rules == ("r.approve", "r.mask")
    assert decision.reasons == ("prod export needs a DBA",)
    assert decision.masking_plan == response.masking_plan
    assert decision.approval == response.approval
    assert decision.errored_rules == ("r.broken",)


def test_decision_does_not_share_messages_with_the_response() -> None:
    response = full_response()
    decision = Decision.from_proto(response)
    response.masking_plan.fields[0].path = "changed"
    response.approval.quorum = 9
    assert decision.masking_plan.fields[0].path == "customers.*.email"
    assert decision.approval is not None
    assert decision.approval.quorum == 2


def test_decision_without_approval_has_none() -> None:
    decision = Decision.from_proto(pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d"))
    assert decision.approval is None
    assert not decision.masking_plan.fields


@pytest.mark.parametrize(
    ("verdict", "allowed"),
    [
        (pb.VERDICT_ALLOW, True),
        (pb.VERDICT_MASK, True),
        (pb.VERDICT_DENY, False),
        (pb.VERDICT_REQUIRE_APPROVAL, False),
    ],
)
def test_allowed_means_allow_or_mask(verdict: int, allowed: bool) -> None:
    response = pb.CheckResponse(verdict=verdict)  # type: ignore[arg-type]
    assert Decision.from_proto(response).allowed is allowed


@pytest.mark.parametrize("verdict", [pb.VERDICT_UNSPECIFIED, 17])
def test_unspecified_or_unknown_verdict_is_a_protocol_error(verdict: int) -> None:
    response = pb.CheckResponse(verdict=verdict, decision_id="d-9")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="d-9"):
        Decision.from_proto(response)


def test_verdict_values_are_the_proto_numbers() -> None:
    assert {v.name: v.value for v in Verdict} == {
        name.removeprefix("VERDICT_"): number
        for name, number in pb.Verdict.items()
        if number != pb.VERDICT_UNSPECIFIED
    }


def test_decision_mask_applies_its_plan() -> None:
    # A MASK verdict: masking data of a decision that does not allow it is refused.
    response = full_response()
    response.verdict = pb.VERDICT_MASK
    decision = Decision.from_proto(response)
    record = {"customers": [{"email": "a@x.io", "id": 1}]}
    assert decision.mask(record) == {"customers": [{"email": "***@x.io", "id": 1}]}


def test_decision_to_dict_uses_short_names_and_json_durations() -> None:
    response = full_response()
    response.approval.pending_ttl.FromSeconds(3600)
    response.approval.grant_ttl.FromSeconds(900)
    assert Decision.from_proto(response).to_dict() == {
        "verdict": "REQUIRE_APPROVAL",
        "decision_id": "d-1",
        "policy_revision": "sha256:abc",
        "matched_rules": ["r.approve", "r.mask"],
        "reasons": ["prod export needs a DBA"],
        "masking_plan": [
            {
                "path": "customers.*.email",
                "operator": "EMAIL",
                "keep_first": 0,
                "keep_last": 0,
                "key_id": "",
                "rule_ids": ["r.mask"],
            }
        ],
        "approval": {
            "approvers": [{"roles": ["dba"], "groups": ["sec"]}],
            "quorum": 2,
            "pending_ttl": "3600s",
            "grant_ttl": "900s",
            "rule_ids": ["r.approve"],
        },
        "errored_rules": ["r.broken"],
    }


def test_item_failure_from_proto_names_its_code() -> None:
    failure = ItemFailure.from_proto(
        pb.ItemError(code=3, message="principal.id is empty", field="principal.id")
    )
    assert failure == ItemFailure(3, "principal.id is empty", "principal.id")
    assert failure.code_name == "INVALID_ARGUMENT"


def test_item_failure_with_unknown_code_names_the_number() -> None:
    assert ItemFailure(99, "?").code_name == "99"
