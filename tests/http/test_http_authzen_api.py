"""AuthZEN 1.0 over HTTP: decisions, the richer context, batches with defaults and semantics."""

from __future__ import annotations

from typing import Any

from tests.http.conftest import MakeGateway
from tests.http.gateway_requests import (
    ALICE,
    CUSTOMERS,
    EVE,
    allowed_read,
    cross_tenant_read,
    masked_export,
    prod_grant,
)
from tests.http.gateway_support import Gateway

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"


def test_an_allow_is_decision_true_with_signoffs_answer_in_context(gateway: Gateway) -> None:
    answer = gateway.post(EVALUATION, allowed_read())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["decision"] is True
    assert body["context"]["verdict"] == "ALLOW"
    assert body["context"]["matched_rules"] == ["customer-data/allow-analysts"]
    assert len(body["context"]["policy_revision"]) == 64
    assert body["context"]["decision_id"]


def test_a_deny_is_200_with_decision_false_and_the_reasons(gateway: Gateway) -> None:
    answer = gateway.post(EVALUATION, cross_tenant_read())
    assert answer.status_code == 200
    assert answer.json()["decision"] is False
    assert answer.json()["context"]["verdict"] == "DENY"
    assert answer.json()["context"]["reasons"]


def test_a_mask_is_no_plain_permit_and_carries_the_plan_the_client_applies(
    gateway: Gateway,
) -> None:
    body = gateway.post(EVALUATION, masked_export()).json()
    # A PEP that ignores `context` must not release unmasked data: MASK is not `true`.
    assert body["decision"] is False
    assert body["context"]["verdict"] == "MASK"
    plan = {f["path"]: f for f in body["context"]["masking_plan"]["fields"]}
    assert plan["customers.*.email"]["operator"] == "email"
    assert plan["customers.*.card_number"]["operator"] == "redact"
    assert plan["customers.*.id"]["operator"] == "hash"
    assert plan["customers.*.id"]["key_id"] == gateway.core.hash_key_id
    assert "customers.*.country" not in plan


def test_an_approval_is_held_in_redis_and_named_in_context(gateway: Gateway) -> None:
    body = gateway.post(EVALUATION, prod_grant()).json()
    assert body["decision"] is False
    approval = body["context"]["approval"]
    assert body["context"]["verdict"] == "REQUIRE_APPROVAL"
    assert approval["quorum"] == 2
    assert approval["approvers"] == [{"roles": ["security"], "groups": []}]
    held = gateway.store.get(approval["id"])  # read back from Redis
    assert held is not None
    assert held.state.value == "pending"
    assert held.requester_id == "ivan@acme.io"


def test_evaluations_apply_top_level_defaults_and_item_overrides(gateway: Gateway) -> None:
    batch = {
        "subject": ALICE,
        "action": {"name": "read", "properties": {"row_limit": 5}},
        "resource": CUSTOMERS,
        "context": {"environment": "prod"},
        "evaluations": [{}, {"subject": EVE}, {"action": {"name": "drop_table"}}],
    }
    answer = gateway.post(EVALUATIONS, batch)
    assert answer.status_code == 200
    got = [(e["decision"], e["context"]["verdict"]) for e in answer.json()["evaluations"]]
    assert got == [(True, "ALLOW"), (False, "DENY"), (False, "DENY")]


def _semantic(gateway: Gateway, semantic: str | None) -> list[bool]:
    batch: dict[str, Any] = {
        "evaluations": [allowed_read(), cross_tenant_read(), allowed_read(), cross_tenant_read()]
    }
    if semantic is not None:
        batch["options"] = {"evaluations_semantic": semantic}
    answer = gateway.post(EVALUATIONS, batch)
    assert answer.status_code == 200
    return [e["decision"] for e in answer.json()["evaluations"]]


def test_execute_all_is_the_default_and_answers_every_item(gateway: Gateway) -> None:
    assert _semantic(gateway, None) == [True, False, True, False]
    assert _semantic(gateway, "execute_all") == [True, False, True, False]


def test_deny_on_first_deny_stops_at_the_first_false(gateway: Gateway) -> None:
    assert _semantic(gateway, "deny_on_first_deny") == [True, False]


def test_permit_on_first_permit_stops_at_the_first_true(gateway: Gateway) -> None:
    assert _semantic(gateway, "permit_on_first_permit") == [True]


def test_an_unknown_semantic_is_400_naming_the_option(gateway: Gateway) -> None:
    answer = gateway.post(
        EVALUATIONS, {"evaluations": [allowed_read()], "options": {"evaluations_semantic": "x"}}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "options.evaluations_semantic"


def test_a_bad_item_is_its_own_false_decision_naming_its_field(gateway: Gateway) -> None:
    bad = allowed_read() | {"subject": {"type": "user"}}
    answer = gateway.post(EVALUATIONS, {"evaluations": [allowed_read(), bad]})
    assert answer.status_code == 200
    first, second = answer.json()["evaluations"]
    assert first["decision"] is True
    assert second["decision"] is False
    assert second["context"]["error"]["status"] == 400
    assert second["context"]["error"]["field"] == "evaluations[1].subject.id"


def test_evaluations_without_items_answer_as_one_evaluation(gateway: Gateway) -> None:
    answer = gateway.post(EVALUATIONS, allowed_read())
    assert answer.status_code == 200
    assert answer.json()["decision"] is True


def test_the_configuration_names_both_endpoints_under_this_pdp(gateway: Gateway) -> None:
    with gateway.client() as client:
        answer = client.get("/.well-known/authzen-configuration")
    assert answer.status_code == 200
    assert answer.json() == {
        "policy_decision_point": gateway.url,
        "access_evaluation_endpoint": gateway.url + EVALUATION,
        "access_evaluations_endpoint": gateway.url + EVALUATIONS,
    }


def test_camel_case_properties_reach_snake_case_attributes(gateway: Gateway) -> None:
    request = allowed_read()
    request["resource"]["properties"] = {"tenant": "acme", "fields": []}
    request["subject"] = {
        "type": "user",
        "id": "alice@acme.io",
        "properties": {"roles": ["analyst"], "Tenant": "acme"},
    }
    assert gateway.post(EVALUATION, request).json()["decision"] is True
    twice = allowed_read()
    twice["subject"]["properties"] |= {"Tenant": "acme"}
    answer = gateway.post(EVALUATION, twice)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "subject.properties.Tenant"


def test_a_time_that_overflows_utc_is_a_400_and_in_a_batch_that_items_error(
    gateway: Gateway,
) -> None:
    # Year 1 at +01:00 is before the first UTC instant Python can hold: refused, never a 500.
    body = allowed_read()
    body["context"] = {**body.get("context", {}), "time": "0001-01-01T00:00:00+01:00"}
    answer = gateway.post(EVALUATION, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"].endswith("context.time")
    batch = gateway.post(EVALUATIONS, {"evaluations": [allowed_read(), body]})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["evaluations"]
    assert first["decision"] is True
    assert second["decision"] is False


def test_a_pdp_token_in_two_authorization_headers_is_refused(
    make_gateway: MakeGateway,
) -> None:
    token = "a-pdp-token-of-sufficient-length"
    running = make_gateway(settings={"authzen_token": token})
    twice = running.post(
        EVALUATION,
        allowed_read(),
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert twice.status_code == 401
