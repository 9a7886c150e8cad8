"""The guard context manager and the guarded decorator, fed scripted decisions over real gRPC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from signoff.client import (
    ApprovalRequired,
    Context,
    Denied,
    MaskingError,
    Principal,
    Resource,
    SignoffClient,
    SignoffClientError,
    SignoffRpcError,
    Verdict,
    guard,
    guarded,
    key_id,
)
from signoff.v1 import signoff_pb2 as pb

if TYPE_CHECKING:
    from tests.client.conftest import ScriptedServer

BOT = Principal("agent:export-bot", kind="agent")
TABLE = Resource("table", id="customers")
EMAIL_PLAN = pb.MaskingPlan(
    fields=[pb.FieldMask(path="email", operator=pb.MASK_OPERATOR_EMAIL)],
)


def client_answering(scripted: ScriptedServer, *responses: pb.CheckResponse) -> SignoffClient:
    scripted.answer(*responses)
    return scripted.client()


def test_allow_runs_the_block_with_a_permit(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted, pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d-1")
    )
    ran = False
    with guard(client, principal=BOT, action="export", resource=TABLE) as permit:
        ran = True
    assert ran
    assert permit.decision.verdict is Verdict.ALLOW
    assert permit.decision.decision_id == "d-1"
    assert [request.action for request in scripted.checks] == ["export"]


def test_mask_runs_the_block_and_the_permit_masks_records(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted, pb.CheckResponse(verdict=pb.VERDICT_MASK, masking_plan=EMAIL_PLAN)
    )
    with guard(client, principal=BOT, action="export", resource=TABLE) as permit:
        rows = permit.mask([{"email": "a@x.io"}, {"email": "b@y.io"}])
    assert permit.masking_plan == EMAIL_PLAN
    assert rows == [{"email": "***@x.io"}, {"email": "***@y.io"}]


def test_permit_masks_with_the_keys_given_to_the_guard(scripted: ScriptedServer) -> None:
    key = b"k"
    plan = pb.MaskingPlan(
        fields=[pb.FieldMask(path="id", operator=pb.MASK_OPERATOR_HASH, key_id=key_id(key))]
    )
    client = client_answering(
        scripted, pb.CheckResponse(verdict=pb.VERDICT_MASK, masking_plan=plan)
    )
    keys = {key_id(key): key}
    with guard(client, principal=BOT, action="export", resource=TABLE, keys=keys) as permit:
        masked = permit.mask({"id": 7})
    assert masked["id"].startswith("hmac-sha256:")


def test_permit_repr_does_not_show_hash_keys(scripted: ScriptedServer) -> None:
    client = client_answering(scripted, pb.CheckResponse(verdict=pb.VERDICT_ALLOW))
    keys = {"kid": b"very-secret-key"}
    permit = guard(client, principal=BOT, action="export", resource=TABLE, keys=keys).check()
    assert "very-secret-key" not in repr(permit)


def test_deny_raises_before_the_block_runs(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted,
        pb.CheckResponse(
            verdict=pb.VERDICT_DENY,
            decision_id="d-2",
            reasons=["agents may not export PII", "prod is frozen"],
            matched_rules=["r.no-agent-pii"],
        ),
    )
    ran = False
    with (
        pytest.raises(Denied) as caught,
        guard(client, principal=BOT, action="export", resource=TABLE),
    ):
        ran = True
    assert not ran
    assert caught.value.decision_id == "d-2"
    assert caught.value.reasons == ("agents may not export PII", "prod is frozen")
    assert caught.value.matched_rules == ("r.no-agent-pii",)
    assert str(caught.value) == (
        "'export' denied: agents may not export PII; prod is frozen [decision d-2]"
    )


def test_deny_message_mentions_rules_that_failed_to_evaluate(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted,
        pb.CheckResponse(verdict=pb.VERDICT_DENY, decision_id="d", errored_rules=["r.bad"]),
    )
    with pytest.raises(Denied, match=r"no reason given \(rules that failed to evaluate: r\.bad\)"):
        guard(client, principal=BOT, action="export", resource=TABLE).check()


def test_require_approval_raises_with_the_requirement(scripted: ScriptedServer) -> None:
    requirement = pb.ApprovalRequirement(approvers=[pb.ApproverSet(roles=["dba"])], quorum=2)
    client = client_answering(
        scripted,
        pb.CheckResponse(
            verdict=pb.VERDICT_REQUIRE_APPROVAL,
            decision_id="d-3",
            reasons=["prod export"],
            approval=requirement,
        ),
    )
    with (
        pytest.raises(ApprovalRequired) as caught,
        guard(client, principal=BOT, action="export", resource=TABLE),
    ):
        pytest.fail("the block must not run")
    assert caught.value.decision_id == "d-3"
    assert caught.value.requirement == requirement
    assert str(caught.value) == (
        "'export' requires approval by 2 approver(s): prod export [decision d-3]"
    )


def test_guard_exceptions_share_the_client_root() -> None:
    assert issubclass(Denied, SignoffClientError)
    assert issubclass(ApprovalRequired, SignoffClientError)


def test_unreachable_service_raises_rpc_error_and_block_does_not_run(unreachable: str) -> None:
    with (
        SignoffClient(unreachable) as client,
        pytest.raises(SignoffRpcError, match="UNAVAILABLE"),
        guard(client, principal=BOT, action="export", resource=TABLE),
    ):
        pytest.fail("the block must not run")


def test_guard_sends_approval_id_context_and_payload(scripted: ScriptedServer) -> None:
    client = client_answering(scripted, pb.CheckResponse(verdict=pb.VERDICT_ALLOW))
    guard(
        client,
        principal=BOT,
        action="export",
        resource=TABLE,
        context=Context(environment="prod", source_ip="10.0.0.1"),
        payload={"target": "s3://x"},
        approval_id="apr-9",
    ).check()
    (request,) = scripted.checks
    assert request.approval_id == "apr-9"
    assert (request.context.environment, request.context.source_ip) == ("prod", "10.0.0.1")
    assert dict(request.payload) == {"target": "s3://x"}


def test_guarded_checks_on_every_call_before_running(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted,
        pb.CheckResponse(verdict=pb.VERDICT_ALLOW),
        pb.CheckResponse(verdict=pb.VERDICT_DENY, reasons=["no"]),
    )
    calls: list[int] = []

    @guarded(client, principal=BOT, action="export", resource=TABLE)
    def export(n: int) -> int:
        calls.append(n)
        return n * 2

    assert export(1) == 2
    with pytest.raises(Denied):
        export(2)
    assert calls == [1]
    assert len(scripted.checks) == 2


def test_guarded_masks_the_return_value_when_the_decision_has_a_plan(
    scripted: ScriptedServer,
) -> None:
    client = client_answering(
        scripted, pb.CheckResponse(verdict=pb.VERDICT_MASK, masking_plan=EMAIL_PLAN)
    )

    @guarded(client, principal=BOT, action="export", resource=TABLE)
    def export() -> list[dict[str, Any]]:
        return [{"email": "a@x.io", "n": 1}]

    assert export() == [{"email": "***@x.io", "n": 1}]


def test_guarded_refuses_a_result_the_plan_cannot_address(scripted: ScriptedServer) -> None:
    client = client_answering(
        scripted, pb.CheckResponse(verdict=pb.VERDICT_MASK, masking_plan=EMAIL_PLAN)
    )

    @guarded(client, principal=BOT, action="export", resource=TABLE)
    def export() -> str:
        return "a@x.io"

    with pytest.raises(MaskingError, match="'export' must be masked"):
        export()


def test_guarded_returns_the_result_untouched_without_a_plan(scripted: ScriptedServer) -> None:
    client = client_answering(scripted, pb.CheckResponse(verdict=pb.VERDICT_ALLOW))
    result = ("a", "b")

    @guarded(client, principal=BOT, action="export", resource=TABLE)
    def export() -> tuple[str, str]:
        return result

    assert export() is result


def test_guarded_keeps_the_function_name_and_docstring(scripted: ScriptedServer) -> None:
    client = client_answering(scripted)

    @guarded(client, principal=BOT, action="export", resource=TABLE)
    def export() -> None:
        """Export the table."""

    assert export.__name__ == "export"
    assert export.__doc__ == "Export the table."
    assert scripted.calls() == 0
