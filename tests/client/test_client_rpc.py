"""SignoffClient over real gRPC against scripted servers: what it sends, returns and raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from signoff.client import (
    CheckItem,
    Decision,
    InvalidInput,
    ItemFailure,
    Principal,
    ProtocolError,
    Resource,
    SignoffClient,
    SignoffClientError,
    SignoffRpcError,
    Verdict,
)
from signoff.v1 import signoff_pb2 as pb

if TYPE_CHECKING:
    from tests.client.conftest import ScriptedServer

ALICE = Principal("alice@example.com", roles=("analyst",))
DOC = Resource("doc", id="42")


class HideStatus(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Client middleware that reports a failed call as a bare RpcError, without its status."""

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        outcome = continuation(client_call_details, request)
        if outcome.exception() is not None:
            raise grpc.RpcError("channel closed")
        return outcome


def test_check_sends_the_request_and_returns_the_decision(scripted: ScriptedServer) -> None:
    scripted.answer(pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d-1"))
    decision = scripted.client().check(
        principal=ALICE, action="read", resource=DOC, payload={"q": 1}
    )
    assert decision.verdict is Verdict.ALLOW
    assert decision.decision_id == "d-1"
    assert scripted.checks == [CheckItem(ALICE, "read", DOC, payload={"q": 1}).to_proto()]
    assert scripted.batches == []


def test_check_uses_the_client_timeout_unless_the_call_gives_one(scripted: ScriptedServer) -> None:
    scripted.answer(
        pb.CheckResponse(verdict=pb.VERDICT_ALLOW), pb.CheckResponse(verdict=pb.VERDICT_ALLOW)
    )
    client = scripted.client(timeout=2.5)
    client.check(principal=ALICE, action="read", resource=DOC)
    client.check(principal=ALICE, action="read", resource=DOC, timeout=0.5)
    # The server sees the deadline each call carried, less transit, give or take the rounding
    # of the grpc-timeout header; the two timeouts are far enough apart to tell which was sent.
    first, second = scripted.time_remaining
    assert first is not None
    assert 0.6 < first < 2.6
    assert second is not None
    assert 0 < second < 0.6


def test_reply_slower_than_the_timeout_fails_with_deadline_exceeded(
    scripted: ScriptedServer,
) -> None:
    scripted.stall()
    with pytest.raises(SignoffRpcError) as caught:
        scripted.client(timeout=0.2).check(principal=ALICE, action="read", resource=DOC)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert caught.value.method == "Check"


def test_rpc_failure_is_wrapped_with_code_name_and_details(scripted: ScriptedServer) -> None:
    scripted.abort(grpc.StatusCode.PERMISSION_DENIED, "caller may not ask for decisions")
    with pytest.raises(SignoffRpcError) as caught:
        scripted.client().check(principal=ALICE, action="read", resource=DOC)
    assert caught.value.code == "PERMISSION_DENIED"
    assert caught.value.details == "caller may not ask for decisions"
    assert caught.value.method == "Check"
    assert str(caught.value) == (
        "Check failed: PERMISSION_DENIED: caller may not ask for decisions"
    )
    assert isinstance(caught.value, SignoffClientError)


def test_rpc_error_without_status_is_still_wrapped(scripted: ScriptedServer) -> None:
    scripted.abort(grpc.StatusCode.UNAVAILABLE, "down")
    with grpc.intercept_channel(grpc.insecure_channel(scripted.address), HideStatus()) as channel:
        client = SignoffClient(scripted.address, channel=channel)
        with pytest.raises(SignoffRpcError, match="UNKNOWN: channel closed"):
            client.check(principal=ALICE, action="read", resource=DOC)
    assert len(scripted.checks) == 1


def test_check_batch_returns_decisions_and_failures_in_order(scripted: ScriptedServer) -> None:
    scripted.answer_batch(
        pb.CheckBatchResponse(
            results=[
                pb.CheckBatchResult(decision=pb.CheckResponse(verdict=pb.VERDICT_DENY)),
                pb.CheckBatchResult(error=pb.ItemError(code=3, message="bad", field="action")),
                pb.CheckBatchResult(decision=pb.CheckResponse(verdict=pb.VERDICT_MASK)),
            ]
        )
    )
    items = [CheckItem(ALICE, action, DOC) for action in ("delete", "", "read")]
    results = scripted.client().check_batch(items)
    assert [type(result) for result in results] == [Decision, ItemFailure, Decision]
    assert isinstance(results[0], Decision)
    assert results[0].verdict is Verdict.DENY
    assert results[1] == ItemFailure(3, "bad", "action")
    assert isinstance(results[2], Decision)
    assert results[2].verdict is Verdict.MASK
    (sent,) = scripted.batches
    assert list(sent.items) == [item.to_proto() for item in items]


def test_check_batch_of_nothing_makes_no_call(scripted: ScriptedServer) -> None:
    assert scripted.client().check_batch([]) == []
    assert scripted.calls() == 0


def test_check_batch_with_wrong_result_count_is_a_protocol_error(
    scripted: ScriptedServer,
) -> None:
    scripted.answer_batch(
        pb.CheckBatchResponse(
            results=[pb.CheckBatchResult(decision=pb.CheckResponse(verdict=pb.VERDICT_ALLOW))]
        )
    )
    with pytest.raises(ProtocolError, match="1 results for 2 items"):
        scripted.client().check_batch([CheckItem(ALICE, "a", DOC)] * 2)


def test_check_batch_result_with_no_outcome_is_a_protocol_error(scripted: ScriptedServer) -> None:
    scripted.answer_batch(pb.CheckBatchResponse(results=[pb.CheckBatchResult()]))
    with pytest.raises(ProtocolError, match="result 0 has neither"):
        scripted.client().check_batch([CheckItem(ALICE, "a", DOC)])


def test_check_batch_rpc_failure_is_wrapped(scripted: ScriptedServer) -> None:
    scripted.abort(grpc.StatusCode.UNAVAILABLE, "down", method="CheckBatch")
    with pytest.raises(SignoffRpcError, match="CheckBatch failed: UNAVAILABLE: down"):
        scripted.client().check_batch([CheckItem(ALICE, "a", DOC)])


def test_context_manager_leaves_a_caller_channel_open(signoff_address: str) -> None:
    with grpc.insecure_channel(signoff_address) as channel:
        with SignoffClient(signoff_address, channel=channel):
            pass
        # The channel still carries calls, for this client or any other sharing it.
        decision = SignoffClient(signoff_address, channel=channel).check(
            principal=ALICE, action="read", resource=DOC
        )
    assert decision.decision_id


def test_context_manager_closes_the_channel_it_opened(signoff_address: str) -> None:
    with SignoffClient(signoff_address) as client:
        assert client.check(principal=ALICE, action="read", resource=DOC).decision_id
    with pytest.raises(ValueError, match="closed"):
        client.check(principal=ALICE, action="read", resource=DOC)


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_non_positive_timeout_is_invalid(timeout: float, unreachable: str) -> None:
    with pytest.raises(InvalidInput, match="timeout"):
        SignoffClient(unreachable, timeout=timeout)


def test_empty_target_without_channel_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="target"):
        SignoffClient("")
