"""Every verdict end to end over gRPC on the bundled rules, with ids, revision and matched rules."""

from __future__ import annotations

import datetime as dt
import uuid

from google.protobuf import timestamp_pb2

from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import (
    KEY_ID,
    NIGHT,
    TIMEOUT,
    allowed_read,
    bundled,
    check_request,
    cross_tenant_read,
    customers,
    deploy_bot,
    deployment,
    export_bot,
    iam_role,
    intern,
    ivan,
    masked_export,
    orphan_bot,
    prod_grant,
)

REVISION = bundled().revision


def test_bundle_revision_is_a_sha256_hex_digest() -> None:
    assert len(REVISION) == 64
    int(REVISION, 16)


def test_analyst_reading_a_few_rows_is_allowed_unmasked(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    response = stub.Check(allowed_read(), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_ALLOW
    assert response.policy_revision == REVISION
    assert list(response.matched_rules) == ["customer-data/allow-analysts"]
    assert list(response.reasons) == ["analysts and data stewards work with customer data"]
    assert not response.masking_plan.fields
    assert not response.HasField("approval")
    assert not response.errored_rules


def test_cross_tenant_read_is_denied_with_its_reason(stub: pb_grpc.DecisionServiceStub) -> None:
    response = stub.Check(cross_tenant_read(), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert response.policy_revision == REVISION
    assert list(response.matched_rules) == ["tenant-isolation/deny-cross-tenant"]
    assert list(response.reasons) == ["cross-tenant access is never allowed"]
    assert not response.masking_plan.fields
    assert not response.HasField("approval")


def test_every_guardrail_that_holds_is_reported_in_a_deny(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = check_request(orphan_bot(tenant="globex"), "read", customers())

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.matched_rules) == [
        "agent-accountability/deny-ownerless-agent",
        "tenant-isolation/deny-cross-tenant",
    ]
    assert list(response.reasons) == [
        "agent has no accountable human owner",
        "cross-tenant access is never allowed",
    ]


def test_self_grant_is_denied_even_for_an_iam_admin_in_prod(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = check_request(
        ivan(), "grant_role", iam_role(), payload={"grantee": "ivan@acme.io", "role": "db-admin"}
    )

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.matched_rules) == ["iam-grants/deny-self-grant"]
    assert list(response.reasons) == ["nobody grants a role to themselves"]
    assert not response.HasField("approval")


def test_role_without_access_is_denied_with_no_matching_rule(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = check_request(intern(), "read", customers(), payload={"row_limit": 5})

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["no_matching_rule"]
    assert not response.matched_rules


def test_bulk_export_by_an_analyst_is_masked_per_field(stub: pb_grpc.DecisionServiceStub) -> None:
    response = stub.Check(masked_export(), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_MASK
    assert response.policy_revision == REVISION
    assert list(response.matched_rules) == [
        "customer-data/allow-analysts",
        "customer-data/mask-bulk-pii",
    ]
    assert list(response.reasons) == ["bulk personal data is masked for non-stewards"]
    assert not response.HasField("approval")
    plan = {entry.path: entry for entry in response.masking_plan.fields}
    # The untagged country column is not in the plan; the plan is sorted by path.
    assert [entry.path for entry in response.masking_plan.fields] == [
        "customers.*.card_number",
        "customers.*.email",
        "customers.*.id",
    ]
    assert plan["customers.*.card_number"].operator == pb.MASK_OPERATOR_REDACT
    assert plan["customers.*.email"].operator == pb.MASK_OPERATOR_EMAIL
    assert plan["customers.*.id"].operator == pb.MASK_OPERATOR_HASH
    for entry in response.masking_plan.fields:
        assert list(entry.rule_ids) == ["customer-data/mask-bulk-pii"]
        assert (entry.keep_first, entry.keep_last) == (0, 0)


def test_hash_entries_carry_the_server_key_id_and_others_none(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    response = stub.Check(masked_export(), timeout=TIMEOUT)

    key_ids = {entry.path: entry.key_id for entry in response.masking_plan.fields}
    assert key_ids == {
        "customers.*.card_number": "",
        "customers.*.email": "",
        "customers.*.id": KEY_ID,
    }


def test_iam_grant_in_prod_requires_two_security_approvers(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    response = stub.Check(prod_grant(), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert response.policy_revision == REVISION
    assert list(response.matched_rules) == [
        "iam-grants/allow-human-admins",
        "iam-grants/prod-needs-two-security-approvers",
    ]
    assert list(response.reasons) == ["privilege escalation in prod needs two security approvers"]
    assert not response.masking_plan.fields
    approval = response.approval
    assert [(list(s.roles), list(s.groups)) for s in approval.approvers] == [(["security"], [])]
    assert approval.quorum == 2
    assert approval.pending_ttl.ToTimedelta() == dt.timedelta(hours=4)
    assert approval.grant_ttl.ToTimedelta() == dt.timedelta(minutes=15)
    assert list(approval.rule_ids) == ["iam-grants/prod-needs-two-security-approvers"]


def test_agent_exporting_at_night_needs_a_steward_and_is_still_masked(
    night_stub: pb_grpc.DecisionServiceStub,
) -> None:
    response = night_stub.Check(check_request(export_bot(), "export", customers()), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert list(response.matched_rules) == [
        "customer-data/agent-night-export",
        "customer-data/allow-analysts",
        "customer-data/mask-bulk-pii",
    ]
    approval = response.approval
    assert [list(s.roles) for s in approval.approvers] == [["data_steward"]]
    assert approval.quorum == 1
    assert approval.pending_ttl.ToTimedelta() == dt.timedelta(hours=8)
    assert approval.grant_ttl.ToTimedelta() == dt.timedelta(minutes=30)
    assert list(approval.rule_ids) == ["customer-data/agent-night-export"]
    operators = {e.path: (e.operator, e.key_id) for e in response.masking_plan.fields}
    assert operators == {
        "customers.*.card_number": (pb.MASK_OPERATOR_REDACT, ""),
        "customers.*.email": (pb.MASK_OPERATOR_EMAIL, ""),
        "customers.*.id": (pb.MASK_OPERATOR_HASH, KEY_ID),
    }


def test_agent_exporting_by_day_is_masked_without_approval(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    response = stub.Check(check_request(export_bot(), "export", customers()), timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_MASK
    assert not response.HasField("approval")


def test_prod_deploy_is_allowed_by_day_and_needs_the_sre_lead_at_night(
    stub: pb_grpc.DecisionServiceStub, night_stub: pb_grpc.DecisionServiceStub
) -> None:
    request = check_request(deploy_bot(), "deploy", deployment())

    by_day = stub.Check(request, timeout=TIMEOUT)
    at_night = night_stub.Check(request, timeout=TIMEOUT)

    assert by_day.verdict == pb.VERDICT_ALLOW
    assert list(by_day.matched_rules) == ["infra-change/allow-engineers"]
    assert at_night.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert list(at_night.matched_rules) == [
        "infra-change/after-hours-prod-change",
        "infra-change/allow-engineers",
    ]
    assert [list(s.roles) for s in at_night.approval.approvers] == [["sre_lead"]]
    assert at_night.approval.pending_ttl.ToTimedelta() == dt.timedelta(hours=1)


def test_time_rules_follow_the_server_clock_not_the_callers_context_time(
    stub: pb_grpc.DecisionServiceStub, night_stub: pb_grpc.DecisionServiceStub
) -> None:
    claims_night = check_request(deploy_bot(), "deploy", deployment())
    claims_night.context.time.CopyFrom(_timestamp(NIGHT))
    claims_noon = check_request(deploy_bot(), "deploy", deployment())
    claims_noon.context.time.CopyFrom(_timestamp("2026-03-03T11:00:00Z"))

    assert stub.Check(claims_night, timeout=TIMEOUT).verdict == pb.VERDICT_ALLOW
    assert night_stub.Check(claims_noon, timeout=TIMEOUT).verdict == pb.VERDICT_REQUIRE_APPROVAL


def test_destroying_prod_infrastructure_at_night_is_denied_not_sent_for_approval(
    night_stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = check_request(deploy_bot(), "destroy", deployment())

    response = night_stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.matched_rules) == ["infra-change/no-after-hours-destroy"]
    assert not response.HasField("approval")


def test_every_decision_gets_a_fresh_uuid_decision_id(stub: pb_grpc.DecisionServiceStub) -> None:
    requests = [allowed_read(), masked_export(), cross_tenant_read(), prod_grant()] * 5

    ids = [stub.Check(request, timeout=TIMEOUT).decision_id for request in requests]

    assert all(ids)
    assert len(set(ids)) == len(ids)
    for decision_id in ids:
        assert str(uuid.UUID(decision_id)) == decision_id


def _timestamp(iso: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromJsonString(iso)
    return out
