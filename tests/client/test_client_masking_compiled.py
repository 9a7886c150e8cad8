"""The compiled masking plan gives exactly what the specification's algorithm gives, errors too.

`_apply_reference` is docs/masking.md's algorithm step by step (copy everything, resolve every
entry, transform deepest first): what apply_mask did before plans were compiled. The operators
are checked against their definitions written out here, independently of the module.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import signoff.client.masking as masking
from signoff.client import REDACTED, MaskingError, apply_mask, key_id
from signoff.client.masking import canonical_form, compile_mask
from signoff.client.partial import SEPARATORS, partial_text
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan

KEY = b"compiled-key"
OTHER = b"compiled-other-key"
KEYS = {key_id(KEY): KEY, key_id(OTHER): OTHER}
NAMES = ["a", "b", "c", "0", "1", "01"]
OPERATORS = [int(op) for op in MaskOperator]

Point = collections.namedtuple("Point", ["a", "b"])


@dataclass
class Pair:
    a: Any
    b: Any


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.text(alphabet="ab1é- @.*\U0001f44d", max_size=8),
    st.sampled_from(["a@b.io", "x@y@z", "@b", "a@", "--", "", "\ud800"]),
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=3).map(types.MappingProxyType),
        st.builds(Point, inner, inner),
        st.builds(Pair, inner, inner),
    )


values = st.recursive(scalars, containers, max_leaves=16)
# Now and then a value no record may hold, or a key that is not a string.
odd = st.one_of(values, st.sampled_from([b"x", {1, 2}, {1: "x"}, collections.deque([1])]))
rows = st.dictionaries(st.sampled_from(NAMES), odd, max_size=5)
records = st.one_of(rows, st.lists(rows, max_size=4), values)


@st.composite
def entries(draw: st.DrawFn) -> MaskEntry:
    segments = draw(st.lists(st.sampled_from([*NAMES, "*"]), min_size=1, max_size=3))
    operator = draw(st.sampled_from(OPERATORS))
    return MaskEntry(
        path=".".join(segments),
        operator=operator,
        keep_first=draw(st.integers(0, 4)),
        keep_last=draw(st.integers(0, 4)),
        key_id=key_id(draw(st.sampled_from([KEY, OTHER]))) if operator == MaskOperator.HASH else "",
    )


plans = st.lists(entries(), max_size=5).map(lambda fields: MaskPlan(tuple(fields)))


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", run())
    except MaskingError as err:
        return ("error", str(err))


def reference(record: Any, plan: MaskPlan, lenient: bool) -> tuple[str, Any]:
    def run() -> Any:
        rules = tuple(masking._rule(i, e, KEYS) for i, e in enumerate(plan.fields))
        return masking._apply_reference(rules, record, lenient=lenient)

    return outcome(run)


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    # json.dumps tells 1 from 1.0 and True from 1, and NaN equals itself there.
    return a[0] == b[0] and json.dumps(a[1], default=repr) == json.dumps(b[1], default=repr)


@settings(max_examples=300, deadline=None)
@given(record=records, plan=plans, lenient=st.booleans())
def test_the_compiled_plan_gives_exactly_the_reference_algorithms_result_or_error(
    record: Any, plan: MaskPlan, lenient: bool
) -> None:
    before = repr(record)  # every type here shows its contents in its repr
    got = outcome(lambda: compile_mask(plan, keys=KEYS, lenient=lenient).apply(record))
    want = reference(record, plan, lenient)
    assert same(got, want), (got, want)
    assert repr(record) == before


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(rows, max_size=6), plan=plans, lenient=st.booleans())
def test_rows_masked_one_by_one_or_as_a_list_agree_with_the_reference(
    rows: list[dict[str, Any]], plan: MaskPlan, lenient: bool
) -> None:
    got = outcome(lambda: apply_mask(rows, plan, keys=KEYS, lenient=lenient))
    assert same(got, reference(rows, plan, lenient))


leaf_rows = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "email", "card", "name", "x"]), scalars, min_size=2, max_size=5
    ),
    max_size=8,
)
leaf_entries = st.builds(
    MaskEntry,
    path=st.sampled_from(["id", "email", "card", "name", "missing"]),
    operator=st.sampled_from(OPERATORS),
    keep_first=st.integers(0, 3),
    keep_last=st.integers(0, 3),
    key_id=st.just(key_id(KEY)),
)


@settings(max_examples=200, deadline=None)
@given(
    rows=leaf_rows,
    fields=st.lists(leaf_entries, min_size=1, max_size=4),
    lenient=st.booleans(),
)
def test_rows_of_leaves_take_the_hot_loop_and_agree_with_the_reference(
    rows: list[dict[str, Any]], fields: list[MaskEntry], lenient: bool
) -> None:
    plan = MaskPlan(tuple(fields))
    compiled = compile_mask(plan, keys=KEYS, lenient=lenient)
    assert same(outcome(lambda: compiled.apply(rows)), reference(rows, plan, lenient))
    for row in rows:  # one row at a time takes apply's own shortcut
        one = functools.partial(compiled.apply, row)
        assert same(outcome(one), reference(row, plan, lenient))


def test_a_clean_record_is_masked_without_the_reference_algorithm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[object] = []
    monkeypatch.setattr(masking, "_apply_reference", lambda *a, **k: used.append(a))
    plan = MaskPlan(
        (
            MaskEntry("email", MaskOperator.EMAIL),
            MaskEntry("card", MaskOperator.PARTIAL, keep_last=4),
            MaskEntry("user.*.id", MaskOperator.HASH, key_id=key_id(KEY)),
        )
    )
    rows = [
        {"email": "a@b.io", "card": "4111 1111", "n": 1, "user": [{"id": 7}]},
        {"email": "c@d.io", "card": "5500 0000", "n": 2.5, "user": []},
    ]
    masked = compile_mask(plan, keys=KEYS).apply(rows)
    assert used == []
    assert masked[0]["email"] == "***@b.io"
    assert masked[1]["card"] == "**** 0000"


def test_compiling_checks_the_plan_and_its_keys_before_any_record() -> None:
    with pytest.raises(MaskingError, match="no hash key"):
        compile_mask(MaskPlan((MaskEntry("a", MaskOperator.HASH, key_id="nope"),)))
    with pytest.raises(MaskingError, match="must not be empty"):
        compile_mask(MaskPlan((MaskEntry("a..b", MaskOperator.REDACT),)))


def test_the_copy_shares_no_container_with_the_input_on_the_fast_path() -> None:
    rows = [{"a": "x", "b": 1}, {"a": "y", "b": 2}]
    masked = compile_mask(MaskPlan((MaskEntry("a", MaskOperator.REDACT),))).apply(rows)
    assert masked == [{"a": REDACTED, "b": 1}, {"a": REDACTED, "b": 2}]
    assert all(m is not r for m, r in zip(masked, rows, strict=True))
    masked[0]["b"] = 9
    assert rows[0]["b"] == 1


# The operators, against their definitions written out here.


def partial_by_definition(text: str, keep_first: int, keep_last: int) -> str:
    positions = [i for i, char in enumerate(text) if char not in SEPARATORS]
    if keep_first + keep_last >= len(positions):
        hidden = set(positions)
    else:
        hidden = set(positions[keep_first : len(positions) - keep_last])
    return "".join("*" if i in hidden else char for i, char in enumerate(text))


@settings(max_examples=600, deadline=None)
@given(
    text=st.one_of(st.text(), st.text(alphabet="ab1*- @.é山\U0001f44d\n", max_size=14)),
    keep_first=st.integers(0, 8) | st.integers(0, 2**32),
    keep_last=st.integers(0, 8) | st.integers(0, 2**32),
)
def test_partial_text_hides_exactly_what_the_definition_hides(
    text: str, keep_first: int, keep_last: int
) -> None:
    assert partial_text(text, keep_first, keep_last) == partial_by_definition(
        text, keep_first, keep_last
    )


@given(text=st.text(alphabet="ab@.\n é", max_size=10))
def test_email_keeps_the_domain_exactly_when_there_is_one_at_with_both_sides(text: str) -> None:
    masked = apply_mask({"v": text}, MaskPlan((MaskEntry("v", MaskOperator.EMAIL),)))["v"]
    local, _, domain = text.partition("@")
    one = text.count("@") == 1 and local and domain
    assert masked == ("***@" + text.split("@")[1] if one else REDACTED)


@given(value=st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.none()))
def test_hash_is_the_truncated_hex_hmac_of_the_canonical_form(value: Any) -> None:
    plan = MaskPlan((MaskEntry("v", MaskOperator.HASH, key_id=key_id(KEY)),))
    try:
        message = canonical_form(value)
    except MaskingError:
        return
    digest = hmac.new(KEY, message, hashlib.sha256).hexdigest()[:32]
    assert apply_mask({"v": value}, plan, keys=KEYS)["v"] == "hmac-sha256:" + digest


def test_apply_mask_reuses_a_compiled_plan_only_under_the_same_keys() -> None:
    plan = MaskPlan((MaskEntry("v", MaskOperator.HASH, key_id=key_id(KEY)),))
    first = apply_mask({"v": "x"}, plan, keys=KEYS)
    assert apply_mask({"v": "x"}, MaskPlan(plan.fields), keys=KEYS) == first
    # The same id filed with another key is refused, cached plan or not.
    with pytest.raises(MaskingError, match="has another id"):
        apply_mask({"v": "x"}, plan, keys={key_id(KEY): OTHER})
    with pytest.raises(MaskingError, match="non-empty bytes"):
        apply_mask({"v": "x"}, plan, keys={key_id(KEY): bytearray(KEY)})  # type: ignore[dict-item]
    with pytest.raises(MaskingError, match="no hash key"):
        apply_mask({"v": "x"}, plan, keys={})
