"""Properties of apply_mask over arbitrary JSON-like records and plans, checked by hypothesis.

The expected set of masked positions comes from an oracle written here from the spec (match a
pattern against every concrete position of the record), not from the resolver under test.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.client import REDACTED, MaskingError, apply_mask, key_id
from signoff.v1 import signoff_pb2 as pb

KEY = b"property-key"
KEYS = {key_id(KEY): KEY}
# Keys include digit strings so numeric segments meet both dict keys and list indices.
NAMES = ["a", "b", "c", "0", "1"]
SEGMENTS = [*NAMES, "*"]
RANK = {
    pb.MASK_OPERATOR_PARTIAL: 1,
    pb.MASK_OPERATOR_EMAIL: 2,
    pb.MASK_OPERATOR_HASH: 3,
    pb.MASK_OPERATOR_REDACT: 4,
    pb.MASK_OPERATOR_NULLIFY: 5,
}
HASHED = re.compile(r"hmac-sha256:[0-9a-f]{32}")

Location = tuple[Any, ...]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    # Short strings of few letters make PARTIAL's keep counts reach the whole value often.
    st.text(alphabet="ab1é- @.", max_size=6),
    st.sampled_from(["a@b.io", "x@y@z", "***@b.io", REDACTED, "--", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner),
    max_leaves=20,
)
rows = st.dictionaries(st.sampled_from(NAMES), values)
records = st.one_of(rows, st.lists(rows, max_size=3))


@st.composite
def field_masks(draw: st.DrawFn) -> pb.FieldMask:
    operator = draw(st.sampled_from(sorted(RANK)))
    return pb.FieldMask(
        path=".".join(draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3))),
        operator=operator,
        keep_first=draw(st.integers(0, 4)),
        keep_last=draw(st.integers(0, 4)),
        key_id=key_id(KEY) if operator == pb.MASK_OPERATOR_HASH else "",
    )


plans = st.lists(field_masks(), max_size=5).map(lambda fields: pb.MaskingPlan(fields=fields))


def positions(value: Any, prefix: Location = ()) -> list[tuple[Location, Any]]:
    """Every position below the root, with the value found there."""
    found: list[tuple[Location, Any]] = []
    if isinstance(value, dict):
        children: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        children = []
    for step, child in children:
        found.append(((*prefix, step), child))
        found.extend(positions(child, (*prefix, step)))
    return found


def matches(path: str, location: Location, rows: bool) -> bool:
    segments = path.split(".")
    if rows and segments[0] != "*":
        segments = ["*", *segments]
    if len(segments) != len(location):
        return False
    # Dict keys are strings and list indices ints here, so the step's type says which it is.
    return all(
        segment == "*" or segment == (step if isinstance(step, str) else str(step))
        for segment, step in zip(segments, location, strict=True)
    )


def lookup(value: Any, location: Location) -> Any:
    for step in location:
        value = value[step]
    return value


def strictest(plan: pb.MaskingPlan, location: Location, rows: bool) -> int | None:
    hits = [entry.operator for entry in plan.fields if matches(entry.path, location, rows)]
    return max(hits, key=RANK.__getitem__) if hits else None


def legitimately_unchanged(operator: int, original: Any) -> bool:
    """Whether masking `original` with `operator` may give back an equal value."""
    if operator == pb.MASK_OPERATOR_NULLIFY:
        return original is None
    if operator == pb.MASK_OPERATOR_REDACT:
        return isinstance(original, str) and original == REDACTED
    if operator == pb.MASK_OPERATOR_EMAIL:
        # Already masked: "***@domain" keeps its form and "[REDACTED]" is redacted again.
        return isinstance(original, str) and (
            original == REDACTED or (original.startswith("***@") and original.count("@") == 1)
        )
    if operator == pb.MASK_OPERATOR_PARTIAL:
        return isinstance(original, str) and not original
    return False


def has_shape_of(operator: int, masked: Any) -> bool:
    if operator == pb.MASK_OPERATOR_NULLIFY:
        return masked is None
    if operator == pb.MASK_OPERATOR_REDACT:
        return isinstance(masked, str) and masked == REDACTED
    if operator == pb.MASK_OPERATOR_HASH:
        return isinstance(masked, str) and HASHED.fullmatch(masked) is not None
    if operator == pb.MASK_OPERATOR_EMAIL:
        return masked == REDACTED or (isinstance(masked, str) and masked.startswith("***@"))
    return isinstance(masked, str)


@settings(max_examples=250, deadline=None)
@given(record=records, plan=plans)
def test_no_value_at_a_masked_path_survives(record: Any, plan: pb.MaskingPlan) -> None:
    rows = isinstance(record, list)
    masked = apply_mask(record, plan, keys=KEYS, lenient=True)
    hit = {loc for loc, _ in positions(record) if strictest(plan, loc, rows) is not None}
    for location, original in positions(record):
        operator = strictest(plan, location, rows)
        if operator is None or any(location[:n] in hit for n in range(1, len(location))):
            # Unmasked here, or inside a masked ancestor that replaced the whole subtree.
            continue
        result = lookup(masked, location)
        assert has_shape_of(operator, result), (location, operator, result)
        assert result != original or legitimately_unchanged(operator, original), (
            location,
            operator,
            original,
        )


@settings(max_examples=250, deadline=None)
@given(record=records, plan=plans)
def test_values_outside_every_masked_path_are_kept_exactly(
    record: Any, plan: pb.MaskingPlan
) -> None:
    rows = isinstance(record, list)
    masked = apply_mask(record, plan, keys=KEYS, lenient=True)
    hit = {loc for loc, _ in positions(record) if strictest(plan, loc, rows) is not None}
    for location, original in positions(record):
        touched = any(location[:n] in hit for n in range(1, len(location) + 1))
        if touched or isinstance(original, dict | list):
            continue
        kept = lookup(masked, location)
        assert type(kept) is type(original)
        assert kept == original


@settings(max_examples=200, deadline=None)
@given(record=records, plan=plans)
def test_input_is_left_as_it_was(record: Any, plan: pb.MaskingPlan) -> None:
    before = copy.deepcopy(record)
    apply_mask(record, plan, keys=KEYS, lenient=True)
    assert record == before


@settings(max_examples=200, deadline=None)
@given(record=records, plan=plans)
def test_entry_order_does_not_change_the_result(record: Any, plan: pb.MaskingPlan) -> None:
    # Within one operator, entry order legitimately decides nothing but HASH keys (one key
    # here), so reversing the plan must give the same result.
    reversed_plan = pb.MaskingPlan(fields=list(reversed(plan.fields)))
    assert apply_mask(record, plan, keys=KEYS, lenient=True) == apply_mask(
        record, reversed_plan, keys=KEYS, lenient=True
    )


@settings(max_examples=200, deadline=None)
@given(record=records, plan=plans)
def test_strict_masking_fails_or_agrees_with_lenient(record: Any, plan: pb.MaskingPlan) -> None:
    # The default only adds failures for paths the record cannot address; it never masks
    # differently.
    lenient = apply_mask(record, plan, keys=KEYS, lenient=True)
    try:
        strict, failure = apply_mask(record, plan, keys=KEYS), ""
    except MaskingError as error:
        strict, failure = lenient, str(error)
    assert strict == lenient
    assert not failure or "masking plan entry" in failure
