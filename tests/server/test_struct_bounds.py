"""Every Struct a request carries is nested no deeper than responses can carry back, and is JSON:
no NaN or Infinity anywhere, each refusal naming the field path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from signoff.client import Context, Principal, Resource, SignoffClient, Verdict
from signoff.client.cmd.approvals import main as approvals_main
from signoff.server import app
from signoff.server.convert import MAX_STRUCT_DEPTH
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.approvals.support import DevIdP
from tests.conftest import WriteRules
from tests.server.harness import (
    TIMEOUT,
    allowed_read,
    channel_to,
    deep_path,
    nested,
    prod_grant,
    rpc_error,
    serving,
)

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})


def test_nested_builds_what_the_limit_counts() -> None:
    # The payload is level 1, so "deep" holding `nested(MAX - 1)` is exactly at the limit.
    assert nested(1) == {"v": 1}
    assert nested(3) == {"d": {"d": {"v": 1}}}
    assert deep_path(3) == ".deep.d.d"


# --- the whole round trip at exactly the limit ---------------------------------------------


@pytest.fixture
def idp(tmp_path: Path) -> DevIdP:
    return DevIdP.create(tmp_path / "idp")


@pytest.fixture
def approvals_server(idp: DevIdP) -> Iterator[app.Running]:
    with serving(authenticator=idp.authenticator()) as running:
        yield running


def test_payload_at_the_depth_limit_goes_through_the_whole_approval_round_trip(
    approvals_server: app.Running, idp: DevIdP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{approvals_server.port}"
    payload = {"grantee": "bob@acme.io", "role": "db-admin", "deep": nested(MAX_STRUCT_DEPTH - 1)}
    sam, sue = idp.token("sam@acme.io", "security"), idp.token("sue@acme.io", "security")
    sam_file = tmp_path / "sam.jwt"
    sam_file.write_text(sam, encoding="utf-8")

    def check(approval_id: str = "") -> tuple[Verdict, str]:
        with SignoffClient(address, timeout=TIMEOUT) as requester:
            decision = requester.check(
                principal=IVAN,
                action="grant_role",
                resource=DB_ADMIN,
                context=Context(environment="prod"),
                payload=payload,
                approval_id=approval_id,
            )
        return decision.verdict, decision.approval_id

    verdict, held = check()
    assert verdict is Verdict.REQUIRE_APPROVAL
    with SignoffClient(address, timeout=TIMEOUT, token=sam) as approver:
        listed = {a.id: a for a in approver.list_approvals()}
        assert listed[held].request.payload == payload
        assert approver.get_approval(held).request.payload == payload
        watched = next(iter(approver.watch_approval(held, timeout=TIMEOUT)))
        assert watched.request.payload == payload
        capsys.readouterr()
        code = approvals_main(["list", "--addr", address, "--token-file", str(sam_file)])
        out = capsys.readouterr().out
        assert code == 0
        assert held in out
        assert approver.approve(held, "SEC-1 reviewed").request.payload == payload
    with SignoffClient(address, timeout=TIMEOUT, token=sue) as second:
        approved = second.approve(held, "second pair of eyes")
    assert approved.request.payload == payload
    assert check(held)[0] is Verdict.ALLOW


# --- one level more is refused, naming the field --------------------------------------------


def _too_deep_payload(request: pb.CheckRequest) -> str:
    request.payload.update({"deep": nested(MAX_STRUCT_DEPTH)})
    return "payload" + deep_path(MAX_STRUCT_DEPTH)


def _too_deep_principal_attributes(request: pb.CheckRequest) -> str:
    request.principal.attributes.update({"deep": nested(MAX_STRUCT_DEPTH)})
    return "principal.attributes" + deep_path(MAX_STRUCT_DEPTH)


def _too_deep_resource_attributes(request: pb.CheckRequest) -> str:
    request.resource.attributes.update({"deep": nested(MAX_STRUCT_DEPTH)})
    return "resource.attributes" + deep_path(MAX_STRUCT_DEPTH)


def _too_deep_context_attributes(request: pb.CheckRequest) -> str:
    request.context.attributes.update({"deep": nested(MAX_STRUCT_DEPTH)})
    return "context.attributes" + deep_path(MAX_STRUCT_DEPTH)


def _too_deep_in_lists(request: pb.CheckRequest) -> str:
    # Lists count as levels too: [[...[1]...]] one level past the limit.
    inner: Any = [1]
    for _ in range(MAX_STRUCT_DEPTH - 1):
        inner = [inner]
    request.payload.update({"deep": inner})
    return "payload.deep" + "[0]" * (MAX_STRUCT_DEPTH - 1)


TOO_DEEP = {
    "payload": _too_deep_payload,
    "principal attributes": _too_deep_principal_attributes,
    "resource attributes": _too_deep_resource_attributes,
    "context attributes": _too_deep_context_attributes,
    "lists in the payload": _too_deep_in_lists,
}


@pytest.mark.parametrize("name", list(TOO_DEEP))
def test_struct_one_level_past_the_limit_is_invalid_argument_naming_the_field(
    stub: pb_grpc.DecisionServiceStub, name: str
) -> None:
    request = prod_grant()
    field = TOO_DEEP[name](request)

    error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))

    assert error.code() == INVALID_ARGUMENT
    assert error.details() == (
        f"invalid request: {field}: nested deeper than {MAX_STRUCT_DEPTH} levels of objects "
        "and lists"
    )


@pytest.mark.parametrize("name", list(TOO_DEEP))
def test_batch_item_one_level_past_the_limit_is_an_item_error_naming_the_field(
    stub: pb_grpc.DecisionServiceStub, name: str
) -> None:
    bad = prod_grant()
    field = TOO_DEEP[name](bad)

    response = stub.CheckBatch(
        pb.CheckBatchRequest(items=[allowed_read(), bad, allowed_read()]), timeout=TIMEOUT
    )

    assert [r.WhichOneof("outcome") for r in response.results] == ["decision", "error", "decision"]
    error = response.results[1].error
    assert (error.code, error.field) == (INVALID_ARGUMENT.value[0], field)


def test_lists_and_objects_at_the_limit_are_accepted(stub: pb_grpc.DecisionServiceStub) -> None:
    request = allowed_read()
    inner: Any = {"v": [1, {"w": 2}]}  # objects and lists alternating, 3 levels
    for _ in range(MAX_STRUCT_DEPTH - 4):
        inner = [inner] if isinstance(inner, dict) else {"l": inner}
    request.payload.update({"deep": inner})

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_ALLOW


# --- NaN and Infinity ----------------------------------------------------------------------

NOT_FINITE = [math.nan, math.inf, -math.inf]
NOT_FINITE_IDS = ["nan", "inf", "-inf"]


@pytest.mark.parametrize("number", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_non_finite_number_in_an_approval_payload_is_invalid_argument_naming_its_path(
    stub: pb_grpc.DecisionServiceStub, number: float
) -> None:
    request = prod_grant()  # would need approval: its payload is digested and shown to reviewers
    request.payload.update({"a": {"b": [1, 2, number]}})

    error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith("invalid request: payload.a.b[2]: not a finite")


@pytest.mark.parametrize("number", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_non_finite_number_in_a_batch_item_is_that_items_error(
    stub: pb_grpc.DecisionServiceStub, number: float
) -> None:
    bad = prod_grant()
    bad.payload["odd key"] = number

    response = stub.CheckBatch(
        pb.CheckBatchRequest(items=[allowed_read(), bad, prod_grant()]), timeout=TIMEOUT
    )

    outcomes = [r.WhichOneof("outcome") for r in response.results]
    assert outcomes == ["decision", "error", "decision"]
    error = response.results[1].error
    assert (error.code, error.field) == (INVALID_ARGUMENT.value[0], 'payload["odd key"]')
    assert response.results[2].decision.verdict == pb.VERDICT_REQUIRE_APPROVAL


NUMERIC_SCHEMA = """
schema:
  principal: {score: double, extra: dyn}
  resource: {weight: double}
  context: {load: dyn}
"""
NUMERIC_POLICIES = """
policies:
  - id: docs
    resources: [doc]
    actions: [read]
    rules:
      - id: allow-trusted
        effect: allow
        when: has(principal.attr.score) && principal.attr.score > 0.5
        reason: trusted callers read
"""


def _doc_read() -> pb.CheckRequest:
    return pb.CheckRequest(
        principal=pb.Principal(id="rita", kind=pb.PRINCIPAL_KIND_HUMAN, roles=["reader"]),
        action="read",
        resource=pb.Resource(kind="doc", id="d1"),
    )


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("principal", {"score": math.nan}, "principal.attributes.score"),
        ("principal", {"score": math.inf}, "principal.attributes.score"),
        ("principal", {"extra": {"k": [0.5, -math.inf]}}, "principal.attributes.extra.k[1]"),
        ("resource", {"weight": math.nan}, "resource.attributes.weight"),
        ("context", {"load": [math.inf]}, "context.attributes.load[0]"),
    ],
    ids=["double-nan", "double-inf", "dyn-nested", "resource-nan", "context-list"],
)
def test_non_finite_number_in_declared_attributes_is_invalid_argument_naming_its_path(
    write_rules: WriteRules, section: str, value: dict[str, Any], field: str
) -> None:
    request = _doc_read()
    getattr(request, section).attributes.update(value)
    if section != "context":
        request.context.SetInParent()
    root = write_rules(schema=NUMERIC_SCHEMA, policies=NUMERIC_POLICIES)
    with serving(root) as running, channel_to(running.port) as channel:
        error = rpc_error(
            lambda: pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)
        )

    assert error.code() == INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"invalid request: {field}: not a finite number")


def test_finite_numbers_still_decide(stub: pb_grpc.DecisionServiceStub) -> None:
    request = allowed_read()
    request.payload.update({"stats": [0.0, -1e308, 1e308, 5e-324]})

    response = stub.Check(request, timeout=TIMEOUT)

    assert response.verdict == pb.VERDICT_ALLOW
