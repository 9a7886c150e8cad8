"""Hash keys must be the keys the plan names: a wrong key fails instead of mis-pseudonymising."""

from __future__ import annotations

import pytest

from signoff.client import MaskingError, apply_mask, key_id
from signoff.v1 import signoff_pb2 as pb

RIGHT = b"r" * 32
WRONG = b"w" * 32


def plan_for(kid: str) -> pb.MaskingPlan:
    return pb.MaskingPlan(
        fields=[pb.FieldMask(path="id", operator=pb.MASK_OPERATOR_HASH, key_id=kid)]
    )


def test_the_named_key_hashes() -> None:
    masked = apply_mask({"id": "c-1"}, plan_for(key_id(RIGHT)), keys={key_id(RIGHT): RIGHT})
    assert masked["id"].startswith("hmac-sha256:")
    assert "c-1" not in masked["id"]


def test_a_key_filed_under_another_id_is_refused() -> None:
    with pytest.raises(MaskingError, match="has another id"):
        apply_mask({"id": "c-1"}, plan_for(key_id(RIGHT)), keys={key_id(RIGHT): WRONG})


def test_error_for_an_unhashable_key_does_not_quote_the_record() -> None:
    plan = pb.MaskingPlan(
        fields=[pb.FieldMask(path="doc", operator=pb.MASK_OPERATOR_HASH, key_id=key_id(RIGHT))]
    )
    with pytest.raises(MaskingError) as info:
        apply_mask({"doc": {7: "secret-canary"}}, plan, keys={key_id(RIGHT): RIGHT})
    assert "secret-canary" not in str(info.value)
    assert "7" not in str(info.value)
