"""CheckBatch over gRPC: request order, independent items, item errors, the batch size limit."""

from __future__ import annotations

import grpc

from signoff.server import convert
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import (
    TIMEOUT,
    allowed_read,
    bundled,
    channel_to,
    cross_tenant_read,
    masked_export,
    prod_grant,
    rpc_error,
    serving,
)

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _verdicts(response: pb.CheckBatchResponse) -> list[pb.Verdict.ValueType | str]:
    out: list[pb.Verdict.ValueType | str] = []
    for result in response.results:
        if result.WhichOneof("outcome") == "decision":
            out.append(result.decision.verdict)
        else:
            out.append(f"error:{result.error.field}")
    return out


def test_batch_results_come_back_in_request_order(stub: pb_grpc.DecisionServiceStub) -> None:
    items = [prod_grant(), allowed_read(), cross_tenant_read(), masked_export(), allowed_read()]

    response = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    assert _verdicts(response) == [
        pb.VERDICT_REQUIRE_APPROVAL,
        pb.VERDICT_ALLOW,
        pb.VERDICT_DENY,
        pb.VERDICT_MASK,
        pb.VERDICT_ALLOW,
    ]
    assert response.policy_revision == bundled().revision


def test_batch_decisions_match_single_checks(stub: pb_grpc.DecisionServiceStub) -> None:
    items = [masked_export(), prod_grant(), cross_tenant_read()]

    batch = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    for item, result in zip(items, batch.results, strict=True):
        single = stub.Check(item, timeout=TIMEOUT)
        decided = result.decision
        assert decided.policy_revision == single.policy_revision
        assert decided.verdict == single.verdict
        assert list(decided.matched_rules) == list(single.matched_rules)
        assert list(decided.reasons) == list(single.reasons)
        assert decided.masking_plan == single.masking_plan
        assert decided.approval == single.approval


def test_every_batch_decision_has_its_own_decision_id(stub: pb_grpc.DecisionServiceStub) -> None:
    items = [allowed_read() for _ in range(10)]

    response = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    ids = [result.decision.decision_id for result in response.results]
    assert all(ids)
    assert len(set(ids)) == len(ids)


def test_a_bad_item_gets_an_item_error_while_the_others_are_decided(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    no_id = allowed_read()
    no_id.principal.id = ""
    bad_kind = masked_export()
    bad_kind.resource.kind = ""
    items = [allowed_read(), no_id, cross_tenant_read(), bad_kind, masked_export()]

    response = stub.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    assert _verdicts(response) == [
        pb.VERDICT_ALLOW,
        "error:principal.id",
        pb.VERDICT_DENY,
        "error:resource.kind",
        pb.VERDICT_MASK,
    ]
    for index in (1, 3):
        error = response.results[index].error
        assert error.code == INVALID_ARGUMENT
        assert error.message.startswith(f"invalid request: {error.field}: ")


def test_item_errors_from_attribute_validation_name_the_attribute(
    stub: pb_grpc.DecisionServiceStub,
) -> None:
    mistyped = allowed_read()
    mistyped.payload["row_limit"] = "twenty"
    undeclared = allowed_read()
    undeclared.resource.attributes["colour"] = "blue"

    response = stub.CheckBatch(
        pb.CheckBatchRequest(items=[mistyped, allowed_read(), undeclared]), timeout=TIMEOUT
    )

    assert _verdicts(response) == [
        "error:payload.row_limit",
        pb.VERDICT_ALLOW,
        "error:resource.attributes.colour",
    ]
    assert {response.results[i].error.code for i in (0, 2)} == {INVALID_ARGUMENT}


def test_empty_batch_returns_no_results(stub: pb_grpc.DecisionServiceStub) -> None:
    response = stub.CheckBatch(pb.CheckBatchRequest(), timeout=TIMEOUT)

    assert not response.results
    assert response.policy_revision == bundled().revision


def test_batch_over_the_item_limit_is_rejected_as_a_whole() -> None:
    with (
        serving(limits=convert.Limits(max_batch_items=3)) as running,
        channel_to(running.port) as channel,
    ):
        stub = pb_grpc.DecisionServiceStub(channel)
        at_limit = stub.CheckBatch(
            pb.CheckBatchRequest(items=[allowed_read()] * 3), timeout=TIMEOUT
        )
        error = rpc_error(
            lambda: stub.CheckBatch(
                pb.CheckBatchRequest(items=[allowed_read()] * 4), timeout=TIMEOUT
            )
        )

    assert _verdicts(at_limit) == [pb.VERDICT_ALLOW] * 3
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("invalid request: items: ")
