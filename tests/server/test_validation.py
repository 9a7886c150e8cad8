"""Bad input is INVALID_ARGUMENT naming the field; odd but valid input is decided, not rejected."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.conftest import WriteRules
from tests.server.harness import (
    TIMEOUT,
    allowed_read,
    channel_to,
    check_request,
    customers,
    export_bot,
    rpc_error,
    serving,
    struct,
)

OVERSIZED = "x" * (300 * 1024)  # over the 256 KiB bound on any one struct
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


def _without(field: str) -> Callable[[pb.CheckRequest], None]:
    def change(request: pb.CheckRequest) -> None:
        request.ClearField(field)  # type: ignore[arg-type]

    return change


def _principal_id(request: pb.CheckRequest) -> None:
    request.principal.id = ""


def _unspecified_kind(request: pb.CheckRequest) -> None:
    request.principal.kind = pb.PRINCIPAL_KIND_UNSPECIFIED


def _unknown_kind(request: pb.CheckRequest) -> None:
    request.principal.kind = 99  # type: ignore[assignment]


def _empty_role(request: pb.CheckRequest) -> None:
    request.principal.roles.append("")


def _long_principal_id(request: pb.CheckRequest) -> None:
    request.principal.id = "a" * 513


def _resource_kind(request: pb.CheckRequest) -> None:
    request.resource.kind = ""


def _empty_field_path(request: pb.CheckRequest) -> None:
    request.resource.fields.add(path="", tags=["pii.email"])


def _empty_path_segment(request: pb.CheckRequest) -> None:
    # Tagged, so it lands in the masking plan, whose paths must not have empty segments.
    request.resource.fields.add(path="customers..email", tags=["pii.email"])


def _too_many_fields(request: pb.CheckRequest) -> None:
    for i in range(2001):
        request.resource.fields.add(path=f"t.{i}")


def _undeclared_principal_attribute(request: pb.CheckRequest) -> None:
    request.principal.attributes["favourite_colour"] = "teal"


def _undeclared_resource_attribute(request: pb.CheckRequest) -> None:
    request.resource.attributes["owner"] = "alice@acme.io"


def _undeclared_context_attribute(request: pb.CheckRequest) -> None:
    request.context.attributes["incident"] = "INC-1"


def _mistyped_string(request: pb.CheckRequest) -> None:
    request.principal.attributes["tenant"] = 42


def _mistyped_bool(request: pb.CheckRequest) -> None:
    request.principal.attributes["owner_mfa"] = "yes"


def _mistyped_int(request: pb.CheckRequest) -> None:
    request.payload["row_limit"] = "twenty"


def _fractional_int(request: pb.CheckRequest) -> None:
    request.payload["row_limit"] = 20.5


def _oversized_payload(request: pb.CheckRequest) -> None:
    request.payload["target"] = OVERSIZED


def _oversized_principal_attributes(request: pb.CheckRequest) -> None:
    request.principal.attributes["tenant"] = OVERSIZED


def _oversized_resource_attributes(request: pb.CheckRequest) -> None:
    request.resource.attributes["tenant"] = OVERSIZED


def _oversized_context_attributes(request: pb.CheckRequest) -> None:
    request.context.attributes["anything"] = OVERSIZED


BAD_INPUTS: list[tuple[str, Callable[[pb.CheckRequest], None], str]] = [
    ("missing principal", _without("principal"), "principal"),
    ("empty principal id", _principal_id, "principal.id"),
    ("principal id over 512 characters", _long_principal_id, "principal.id"),
    ("unspecified principal kind", _unspecified_kind, "principal.kind"),
    ("unknown principal kind 99", _unknown_kind, "principal.kind"),
    ("empty role", _empty_role, "principal.roles[1]"),
    ("missing action", _without("action"), "action"),
    ("missing resource", _without("resource"), "resource"),
    ("empty resource kind", _resource_kind, "resource.kind"),
    ("empty field path", _empty_field_path, "resource.fields[4].path"),
    ("empty field path segment", _empty_path_segment, "resource.fields[4].path"),
    ("too many fields", _too_many_fields, "resource.fields"),
    (
        "undeclared principal attribute",
        _undeclared_principal_attribute,
        "principal.attributes.favourite_colour",
    ),
    ("undeclared resource attribute", _undeclared_resource_attribute, "resource.attributes.owner"),
    ("undeclared context attribute", _undeclared_context_attribute, "context.attributes.incident"),
    ("number for a string attribute", _mistyped_string, "principal.attributes.tenant"),
    ("string for a bool attribute", _mistyped_bool, "principal.attributes.owner_mfa"),
    ("string for an int payload value", _mistyped_int, "payload.row_limit"),
    ("fraction for an int payload value", _fractional_int, "payload.row_limit"),
    ("payload over 256 KiB", _oversized_payload, "payload"),
    ("principal attributes over 256 KiB", _oversized_principal_attributes, "principal.attributes"),
    ("resource attributes over 256 KiB", _oversized_resource_attributes, "resource.attributes"),
    ("context attributes over 256 KiB", _oversized_context_attributes, "context.attributes"),
]
IDS = [name for name, _, _ in BAD_INPUTS]


def _bad(change: Callable[[pb.CheckRequest], None]) -> pb.CheckRequest:
    request = allowed_read()
    change(request)
    return request


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in BAD_INPUTS], ids=IDS)
def test_bad_check_is_invalid_argument_naming_the_field(
    stub: pb_grpc.DecisionServiceStub, change: Callable[[pb.CheckRequest], None], field: str
) -> None:
    request = _bad(change)

    error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"invalid request: {field}: ")


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in BAD_INPUTS], ids=IDS)
def test_bad_batch_item_is_an_item_error_naming_the_field(
    stub: pb_grpc.DecisionServiceStub, change: Callable[[pb.CheckRequest], None], field: str
) -> None:
    items = [allowed_read(), _bad(change), allowed_read()]

    response = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    assert [r.WhichOneof("outcome") for r in response.results] == ["decision", "error", "decision"]
    error = response.results[1].error
    assert (error.code, error.field) == (INVALID_ARGUMENT.value[0], field)
    assert error.message.startswith(f"invalid request: {field}: ")


@pytest.mark.parametrize("path", ["customers...id", ".email", "customers.*.", "a..b"])
def test_field_path_with_an_empty_segment_in_a_check_needing_approval_is_invalid_argument(
    night_stub: pb_grpc.DecisionServiceStub, path: str
) -> None:
    # By night the export bot needs approval: the masking plan is applied to the payload for
    # reviewers, where such a path used to fail as INTERNAL.
    request = check_request(export_bot(), "export", customers())
    request.resource.fields.add(path=path, tags=["pii.customer_id"])

    error = rpc_error(lambda: night_stub.Check(request, timeout=TIMEOUT))
    batch = night_stub.CheckBatch(pb.CheckBatchRequest(items=[request]), timeout=TIMEOUT)

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith("invalid request: resource.fields[4].path: ")
    assert (batch.results[0].error.code, batch.results[0].error.field) == (
        INVALID_ARGUMENT.value[0],
        "resource.fields[4].path",
    )


def test_empty_request_is_invalid_argument_not_unknown(stub: pb_grpc.DecisionServiceStub) -> None:
    error = rpc_error(lambda: stub.Check(pb.CheckRequest(), timeout=TIMEOUT))

    assert error.code() == INVALID_ARGUMENT
    assert error.details() == "invalid request: principal: is required"


def test_undeclared_attribute_with_a_very_long_name_is_still_invalid_argument(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    # The name is caller data: echoing all of it into the status overflows gRPC's trailing
    # metadata limit, and the caller then sees RESOURCE_EXHAUSTED instead of its real mistake.
    request = allowed_read()
    request.principal.attributes["k" * 20_000] = "v"

    error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith("invalid request: principal.attributes")
    assert len(error.details() or "") < 1024


def test_undeclared_payload_keys_are_ignored_not_rejected(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = allowed_read()
    request.payload["comment"] = "quarterly review"

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_ALLOW


def test_null_attribute_counts_as_absent(stub: pb_grpc.DecisionServiceStub) -> None:
    request = allowed_read()
    request.principal.attributes["tenant"] = None

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.matched_rules) == ["tenant-isolation/deny-unknown-tenant"]


def test_unknown_resource_kind_is_denied_with_no_matching_rule(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    what = pb.Resource(kind="spaceship", id="enterprise", attributes=struct({"tenant": "acme"}))
    request = check_request(allowed_read().principal, "launch", what)

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["no_matching_rule"]
    assert not response.matched_rules
    assert response.decision_id


def test_unknown_action_on_a_known_kind_is_denied_with_no_matching_rule(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    request = check_request(allowed_read().principal, "delete", customers())

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["no_matching_rule"]


SCHEMA = """
schema:
  principal: {tenant: string, level: int, since: timestamp, grace: duration}
  context: {ticket: string}
"""

POLICIES = """
policies:
  - id: docs
    resources: [doc]
    actions: [read]
    rules:
      - id: allow-readers
        effect: allow
        roles: [reader]
        reason: readers read documents
      - id: deny-low-level
        effect: deny
        when: principal.attr.level < 3
        reason: clearance level too low
"""


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
def test_deny_rule_reading_an_absent_attribute_denies_with_evaluation_error(
    write_rules: WriteRules, backend: str
) -> None:
    request = pb.CheckRequest(
        principal=pb.Principal(id="rita", kind=pb.PRINCIPAL_KIND_HUMAN, roles=["reader"]),
        action="read",
        resource=pb.Resource(kind="doc", id="d1"),
    )
    with (
        serving(write_rules(schema=SCHEMA, policies=POLICIES), backend=backend) as running,
        channel_to(running.port) as channel,
    ):
        response = pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["evaluation_error"]
    assert list(response.errored_rules) == ["docs/deny-low-level"]
    assert not response.matched_rules
    assert response.decision_id


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("since", "0001-01-01T00:00:00+01:00"),  # before year 1 once converted to UTC
        ("since", "9999-12-31T23:00:00-05:00"),  # after year 9999 once converted to UTC
        ("grace", "99999999999h"),  # beyond what a Python timedelta holds
        ("grace", "999999999h"),  # a timedelta, but beyond CEL's +-10000 years
    ],
)
def test_out_of_range_time_attribute_is_invalid_argument(
    write_rules: WriteRules, backend: str, attribute: str, value: str
) -> None:
    request = pb.CheckRequest(
        principal=pb.Principal(
            id="rita",
            kind=pb.PRINCIPAL_KIND_HUMAN,
            roles=["reader"],
            attributes=struct({"level": 5, attribute: value}),
        ),
        action="read",
        resource=pb.Resource(kind="doc", id="d1"),
    )
    with (
        serving(write_rules(schema=SCHEMA, policies=POLICIES), backend=backend) as running,
        channel_to(running.port) as channel,
    ):
        error = rpc_error(
            lambda: pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)
        )

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"invalid request: principal.attributes.{attribute}")


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
@pytest.mark.parametrize(
    ("attribute", "value"),
    [("since", "2020-01-01T00:00:00Z"), ("grace", "2h")],
)
def test_valid_time_attributes_do_not_break_evaluation(
    write_rules: WriteRules, backend: str, attribute: str, value: str
) -> None:
    # Declared timestamp and duration attributes must reach CEL in a form it can evaluate;
    # a rule that does not even read them must still decide normally.
    request = pb.CheckRequest(
        principal=pb.Principal(
            id="rita",
            kind=pb.PRINCIPAL_KIND_HUMAN,
            roles=["reader"],
            attributes=struct({"level": 5, attribute: value}),
        ),
        action="read",
        resource=pb.Resource(kind="doc", id="d1"),
    )
    with (
        serving(write_rules(schema=SCHEMA, policies=POLICIES), backend=backend) as running,
        channel_to(running.port) as channel,
    ):
        response = pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_ALLOW
    assert not response.errored_rules
    assert list(response.matched_rules) == ["docs/allow-readers"]
