"""Data of a shape the plan did not expect fails loudly instead of leaking unmasked."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import sys
from typing import Any, NamedTuple

import pytest

from signoff.client import REDACTED, MaskingError, apply_mask, key_id
from signoff.client.masking import MAX_DEPTH
from signoff.v1 import signoff_pb2 as pb

SECRET = "jane@example.com"


def redact(*paths: str) -> pb.MaskingPlan:
    return pb.MaskingPlan(
        fields=[pb.FieldMask(path=path, operator=pb.MASK_OPERATOR_REDACT) for path in paths]
    )


@dataclasses.dataclass
class CustomerRow:
    email: str
    country: str


class CustomerTuple(NamedTuple):
    email: str
    country: str


class CustomerObject:
    def __init__(self) -> None:
        self.email = SECRET


def test_dataclass_rows_are_masked_by_field_name() -> None:
    masked = apply_mask([CustomerRow(SECRET, "DE")], redact("email"))
    assert masked == [{"email": REDACTED, "country": "DE"}]


def test_namedtuple_rows_keep_their_field_names_so_paths_find_them() -> None:
    masked = apply_mask({"customers": [CustomerTuple(SECRET, "DE")]}, redact("customers.*.email"))
    assert masked == {"customers": [{"email": REDACTED, "country": "DE"}]}


@pytest.mark.parametrize(
    "value",
    [
        CustomerObject(),
        collections.deque([{"email": SECRET}]),
        {SECRET},
        SECRET.encode(),
        dt.date(2024, 1, 1),
        frozenset({SECRET}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_values_of_other_types_are_refused_even_where_nothing_is_masked(value: Any) -> None:
    for record in ({"customers": value}, {"other": value, "customers": []}):
        with pytest.raises(MaskingError, match=f"type {type(value).__name__}") as info:
            apply_mask(record, redact("customers.*.email"), lenient=True)
        assert SECRET not in str(info.value)


def test_non_string_object_keys_are_refused_without_quoting_them() -> None:
    with pytest.raises(MaskingError, match="object key of type int") as info:
        apply_mask({"by_id": {4111: SECRET}}, redact("by_id.4111"))
    assert "4111" not in str(info.value)


def test_a_name_on_an_array_is_an_error_naming_the_path() -> None:
    # The request declared customers.email, the data holds a list of customers.
    record = {"customers": [{"email": SECRET}]}
    with pytest.raises(MaskingError, match=r"'customers\.email'.*meets an array") as info:
        apply_mask(record, redact("customers.email"))
    assert SECRET not in str(info.value)


def test_a_path_through_a_scalar_is_an_error() -> None:
    record = {"customers": '[{"email": "jane@example.com"}]'}
    with pytest.raises(MaskingError, match=r"'customers\.\*\.email'.*meets a string") as info:
        apply_mask(record, redact("customers.*.email"))
    assert SECRET not in str(info.value)


def test_rows_without_the_declared_parent_are_an_error() -> None:
    # A list of customers where the plan expects rows holding a customers member.
    with pytest.raises(MaskingError, match=r"'customers\.email'.*selects nothing"):
        apply_mask([{"email": SECRET}], redact("customers.email"))


def test_optional_members_and_empty_or_null_collections_are_not_errors() -> None:
    rows = [{"email": SECRET}, {"country": "DE"}]
    assert apply_mask(rows, redact("email")) == [{"email": REDACTED}, {"country": "DE"}]
    assert apply_mask({"customers": []}, redact("customers.*.email")) == {"customers": []}
    assert apply_mask({"customers": None}, redact("customers.*.email")) == {"customers": None}


def test_lenient_mode_masks_what_it_can_address_and_skips_the_rest() -> None:
    record = {"customers": [{"email": SECRET}], "note": "x"}
    masked = apply_mask(record, redact("customers.email", "customers.*.email"), lenient=True)
    assert masked == {"customers": [{"email": REDACTED}], "note": "x"}


def test_a_record_that_contains_itself_is_refused() -> None:
    record: dict[str, Any] = {"email": SECRET}
    record["self"] = record
    with pytest.raises(MaskingError, match="contains itself"):
        apply_mask(record, redact("email"))
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(MaskingError, match="contains itself"):
        apply_mask({"rows": looped}, redact("email"), lenient=True)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, sys.getrecursionlimit() * 2])
def test_a_record_nested_too_deep_is_refused(depth: int) -> None:
    record: Any = SECRET
    for _ in range(depth):
        record = {"a": record}
    with pytest.raises(MaskingError, match=f"deeper than {MAX_DEPTH}"):
        apply_mask(record, redact("a"))


def test_a_record_at_the_depth_limit_is_masked() -> None:
    record: Any = SECRET
    for _ in range(MAX_DEPTH - 1):
        record = {"a": record}
    path = ".".join(["a"] * (MAX_DEPTH - 1))
    masked = apply_mask(record, redact(path))
    for _ in range(MAX_DEPTH - 1):
        masked = masked["a"]
    assert masked == REDACTED


@pytest.mark.parametrize("operator", [pb.MASK_OPERATOR_PARTIAL, pb.MASK_OPERATOR_HASH])
def test_an_integer_too_long_to_write_is_a_masking_error(
    operator: pb.MaskOperator.ValueType,
) -> None:
    key = b"k" * 32
    entry = pb.FieldMask(path="n", operator=operator, key_id=key_id(key))
    with pytest.raises(MaskingError, match="bits"):
        apply_mask({"n": 10**5000}, pb.MaskingPlan(fields=[entry]), keys={key_id(key): key})
