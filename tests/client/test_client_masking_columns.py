"""Columnar masking gives, value for value, what the row path gives for the same field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.client import REDACTED, MaskingError, apply_mask, key_id
from signoff.client.masking import compile_mask
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

from signoff.client import masking_columns  # noqa: E402
from signoff.client.masking_columns import mask_column, mask_columns  # noqa: E402

KEY = b"columns-key"
KEYS = {key_id(KEY): KEY}
OPERATORS = [int(op) for op in MaskOperator]


def entry(operator: int, keep_first: int = 0, keep_last: int = 0, path: str = "c") -> MaskEntry:
    return MaskEntry(
        path,
        operator,
        keep_first=keep_first,
        keep_last=keep_last,
        key_id=key_id(KEY) if operator == MaskOperator.HASH else "",
    )


def by_rows(values: list[Any], plan: MaskPlan, name: str = "c") -> list[Any]:
    return [row[name] for row in apply_mask([{name: v} for v in values], plan, keys=KEYS)]


def plain(values: list[Any]) -> list[Any]:
    # The comparison's only freedom: a null is None whatever spelled it.
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


texts = st.lists(
    st.one_of(
        st.none(),
        st.text(max_size=12),  # hypothesis leaves out lone surrogates, which Arrow cannot hold
        st.text(alphabet="ab1*- @.é山\U0001f44d\n\x00", max_size=10),
        st.sampled_from(["a@b.io", "x@y@z", "@b", "a@", "--", "", "4111 1111 1111 1234"]),
    ),
    max_size=30,
)
operator_entries = st.builds(
    entry,
    st.sampled_from(OPERATORS),
    st.integers(0, 5) | st.integers(0, 2**32 - 1),
    st.integers(0, 5) | st.integers(0, 2**32 - 1),
)


@settings(max_examples=500, deadline=None)
@given(values=texts, field=operator_entries)
def test_a_string_column_is_masked_as_the_rows_are(values: list[Any], field: MaskEntry) -> None:
    plan = MaskPlan((field,))
    masked = mask_column(pa.array(values, pa.string()), "c", compile_mask(plan, keys=KEYS))
    assert masked.to_pylist() == by_rows(values, plan)


# Runs of ASCII-only values between runs of any text: PARTIAL reuses its scratch arrays from
# block to block, so an ASCII-only block may follow one with multi-byte characters, and back.
ascii_texts = st.lists(st.one_of(st.none(), st.text(alphabet="aZ9 -.", max_size=8)), max_size=90)
any_texts = st.lists(
    st.one_of(
        st.none(),
        st.just(""),
        st.text(max_size=12),
        # combining marks, 2-, 3- and 4-byte characters
        st.text(alphabet="aZ9 -e\u0301\u0300é山\U0001f44d\U00010348", max_size=10),
    ),
    max_size=90,
)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.one_of(ascii_texts, any_texts), min_size=1, max_size=4),
    keep_first=st.integers(0, 3),
    keep_last=st.integers(0, 3),
    cut=st.integers(1, 200),
)
def test_partial_over_many_blocks_and_chunks_is_masked_as_the_rows_are(
    parts: list[list[Any]], keep_first: int, keep_last: int, cut: int
) -> None:
    values = [value for part in parts for value in part]
    plan = MaskPlan((entry(MaskOperator.PARTIAL, keep_first, keep_last),))
    chunks = [values[i : i + cut] for i in range(0, len(values), cut)]
    column = pa.chunked_array([pa.array(chunk, pa.string()) for chunk in chunks], pa.string())
    with pytest.MonkeyPatch.context() as patch:
        # The smallest blocks (64 values), so that a few hundred values take several.
        patch.setattr(masking_columns, "_BLOCK_BYTES", 1)
        masked = mask_column(column, "c", compile_mask(plan, keys=KEYS))
    assert masked.to_pylist() == by_rows(values, plan)


@settings(max_examples=200, deadline=None)
@given(
    values=st.one_of(
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=20),
        st.lists(
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=20
        ),
        st.lists(st.one_of(st.none(), st.booleans()), max_size=20),
    ),
    field=operator_entries,
)
def test_number_and_boolean_columns_are_masked_as_the_rows_are(
    values: list[Any], field: MaskEntry
) -> None:
    plan = MaskPlan((field,))
    masked = mask_column(pa.array(values), "c", compile_mask(plan, keys=KEYS))
    assert masked.to_pylist() == by_rows(values, plan)


def test_a_non_finite_number_to_hash_fails_as_in_the_rows() -> None:
    plan = MaskPlan((entry(MaskOperator.HASH),))
    with pytest.raises(MaskingError, match="non-finite") as from_rows:
        by_rows([1.0, math.inf], plan)
    with pytest.raises(MaskingError) as from_column:
        mask_column(pa.array([1.0, math.inf]), "c", plan, keys=KEYS)
    assert str(from_column.value) == str(from_rows.value)


def test_nullify_keeps_the_column_type_and_every_value_null() -> None:
    masked = mask_column(pa.array([1, None, 3]), "c", MaskPlan((entry(MaskOperator.NULLIFY),)))
    assert masked.type == pa.int64()
    assert masked.to_pylist() == [None, None, None]


def test_other_operators_mask_a_null_as_the_row_path_masks_none() -> None:
    values = [None, "a@b.io"]
    for operator in (MaskOperator.REDACT, MaskOperator.EMAIL, MaskOperator.PARTIAL):
        plan = MaskPlan((entry(operator, keep_first=1),))
        assert mask_column(pa.array(values), "c", plan).to_pylist() == by_rows(values, plan)
    assert mask_column(
        pa.array(values), "c", MaskPlan((entry(MaskOperator.REDACT),))
    ).to_pylist() == [
        REDACTED,
        REDACTED,
    ]


def test_hash_runs_once_per_distinct_value_and_repeats_the_pseudonym() -> None:
    values = ["x", "y", "x", None, "x"]
    plan = MaskPlan((entry(MaskOperator.HASH),))
    masked = mask_column(pa.array(values), "c", plan, keys=KEYS).to_pylist()
    assert masked == by_rows(values, plan)
    assert masked[0] == masked[2] == masked[4] != masked[1]


def test_a_column_no_entry_names_comes_back_as_it_was() -> None:
    column = pa.array(["a", None])
    assert mask_column(column, "other", MaskPlan((entry(MaskOperator.REDACT),))) is column


def test_chunked_arrays_series_and_lists_give_the_same_values() -> None:
    values = ["jane@example.com", None, "4111-1111", "山田 太郎"]
    plan = MaskPlan((entry(MaskOperator.PARTIAL, keep_first=1, keep_last=2),))
    want = by_rows(values, plan)
    chunked = mask_column(pa.chunked_array([values[:2], values[2:]]), "c", plan)
    assert isinstance(chunked, pa.ChunkedArray)
    assert chunked.to_pylist() == want
    series = mask_column(pd.Series(values, name="c", index=[5, 6, 7, 8]), "c", plan)
    assert list(series.index) == [5, 6, 7, 8]
    assert plain(series.tolist()) == want
    assert mask_column(values, "c", plan) == want


def test_a_pandas_column_of_mixed_values_is_masked_value_by_value() -> None:
    values = ["a@b.io", 7, None, 2.5]
    plan = MaskPlan((entry(MaskOperator.EMAIL),))
    assert plain(mask_column(pd.Series(values, dtype=object), "c", plan).tolist()) == by_rows(
        values, plan
    )


def test_values_of_types_no_record_may_hold_are_refused_as_in_the_rows() -> None:
    column = pa.array([b"raw"], pa.binary())
    with pytest.raises(MaskingError, match="bytes"):
        mask_column(column, "c", MaskPlan((entry(MaskOperator.REDACT, path="other"),)))


def test_entries_inside_a_columns_values_are_applied_value_by_value() -> None:
    column = pa.array([{"city": "Berlin", "zip": "10115"}, None, {"zip": "75001"}])
    plan = MaskPlan((entry(MaskOperator.REDACT, path="addr.city"),))
    # Arrow's struct column has a city slot in every row: a None there, redacted like any.
    assert mask_column(column, "addr", plan).to_pylist() == [
        {"city": REDACTED, "zip": "10115"},
        None,
        {"city": REDACTED, "zip": "75001"},
    ]
    assert mask_column(column, "addr", plan).to_pylist() == by_rows(
        column.to_pylist(), plan, "addr"
    )


def test_a_plan_masking_whole_rows_cannot_mask_a_column() -> None:
    with pytest.raises(MaskingError, match="whole rows"):
        mask_column(pa.array(["a"]), "c", MaskPlan((entry(MaskOperator.REDACT, path="*"),)))


def table_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "email": f"u{i}@x.io", "card": f"4111 {i:04d}", "amount": i * 1.5}
        for i in range(n)
    ]


TABLE_PLAN = MaskPlan(
    (
        entry(MaskOperator.HASH, path="id"),
        entry(MaskOperator.EMAIL, path="email"),
        entry(MaskOperator.PARTIAL, keep_last=2, path="card"),
    )
)


def test_a_table_and_a_data_frame_are_masked_as_their_rows() -> None:
    rows = table_rows(5)
    want = apply_mask(rows, TABLE_PLAN, keys=KEYS)
    table = mask_columns(pa.Table.from_pylist(rows), TABLE_PLAN, keys=KEYS)
    assert table.to_pylist() == want
    frame = mask_columns(pd.DataFrame(rows), TABLE_PLAN, keys=KEYS)
    assert frame.to_dict(orient="records") == want


def test_an_entry_naming_no_column_fails_as_in_the_rows_unless_lenient() -> None:
    rows = table_rows(3)
    plan = MaskPlan((*TABLE_PLAN.fields, entry(MaskOperator.REDACT, path="ssn")))
    with pytest.raises(MaskingError, match="selects nothing") as from_rows:
        apply_mask(rows, plan, keys=KEYS)
    with pytest.raises(MaskingError) as from_table:
        mask_columns(pa.Table.from_pylist(rows), plan, keys=KEYS)
    assert str(from_table.value) == str(from_rows.value)
    lenient = mask_columns(pa.Table.from_pylist(rows), plan, keys=KEYS, lenient=True)
    assert lenient.to_pylist() == apply_mask(rows, plan, keys=KEYS, lenient=True)


def test_pandas_missing_values_are_the_row_paths_none() -> None:
    plan = MaskPlan((entry(MaskOperator.HASH),))
    frame = pd.DataFrame({"c": [1.5, float("nan")], 7: ["a", "b"]})
    masked = mask_columns(frame, plan, keys=KEYS)
    assert list(masked.columns) == ["c", 7]
    assert masked["c"].tolist() == by_rows([1.5, None], plan)
    assert masked[7].tolist() == ["a", "b"]
