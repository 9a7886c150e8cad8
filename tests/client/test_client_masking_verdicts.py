"""Only a decision that lets the data go may mask it: DENY and REQUIRE_APPROVAL are refused."""

from __future__ import annotations

import pytest

from signoff.client import Decision, MaskingError, apply_mask
from signoff.v1 import signoff_pb2 as pb

RECORD = {"email": "jane@example.com", "note": "raw"}
PLAN = pb.MaskingPlan(fields=[pb.FieldMask(path="email", operator=pb.MASK_OPERATOR_EMAIL)])
WITHHELD = [pb.VERDICT_DENY, pb.VERDICT_REQUIRE_APPROVAL, pb.VERDICT_UNSPECIFIED]


def response(verdict: pb.Verdict.ValueType, plan: pb.MaskingPlan = PLAN) -> pb.CheckResponse:
    return pb.CheckResponse(verdict=verdict, decision_id="dec_1", masking_plan=plan)


@pytest.mark.parametrize("verdict", WITHHELD, ids=pb.Verdict.Name)
@pytest.mark.parametrize("plan", [PLAN, pb.MaskingPlan()], ids=["with-plan", "no-plan"])
def test_apply_mask_refuses_a_response_that_does_not_allow(
    verdict: pb.Verdict.ValueType, plan: pb.MaskingPlan
) -> None:
    with pytest.raises(
        MaskingError, match=f"'dec_1' is {pb.Verdict.Name(verdict).removeprefix('VERDICT_')}:"
    ):
        apply_mask(RECORD, response(verdict, plan))


@pytest.mark.parametrize(
    "verdict", [pb.VERDICT_DENY, pb.VERDICT_REQUIRE_APPROVAL], ids=pb.Verdict.Name
)
def test_decision_mask_refuses_a_decision_that_does_not_allow(
    verdict: pb.Verdict.ValueType,
) -> None:
    decision = Decision.from_proto(response(verdict))
    with pytest.raises(MaskingError, match="may not be released"):
        decision.mask(RECORD)


@pytest.mark.parametrize("verdict", [pb.VERDICT_ALLOW, pb.VERDICT_MASK], ids=pb.Verdict.Name)
def test_allowing_decisions_mask_as_planned(verdict: pb.Verdict.ValueType) -> None:
    expected = {"email": "***@example.com", "note": "raw"}
    assert apply_mask(RECORD, response(verdict)) == expected
    assert Decision.from_proto(response(verdict)).mask(RECORD) == expected
