"""Columnar masking: a column of rows' values (Arrow, pandas or a list) in, the masked column out.

The output is, value for value, what `apply_mask` gives for that field of the rows: the plan is
the same compiled plan (`compile_mask`), and whatever the vectorised kernels do not cover is
masked by it value by value. Needs pyarrow (the client's `columns` extra); pandas is optional.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from signoff.client.masking import REDACTED, CompiledMask, MaskingError, compile_mask
from signoff.client.partial import MASK_CHAR
from signoff.client.plan import MaskOperator, MaskPlan

if TYPE_CHECKING:
    import pandas as pd

    from signoff.v1 import signoff_pb2

__all__ = ["mask_column", "mask_columns"]

# Arrow types whose values are JSON scalars as Python sees them (to_pylist gives str, int,
# float, bool or None), so a vectorised kernel gives what the row path gives.
_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_SCALAR_TYPES = (
    *_STRING_TYPES,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_null,
)
_STAR = np.uint8(ord(MASK_CHAR))
_NO_BYTES = np.zeros(0, dtype=np.uint8)
_BLOCK_BYTES = 128 * 1024  # text per block: the work arrays are several times that
_RANGE = np.array([False, True, False])
_EMAIL_TAIL = np.frombuffer(b"***" + REDACTED.encode(), dtype=np.uint8)


def mask_column(
    column: Any,
    name: str,
    plan: CompiledMask | MaskPlan | signoff_pb2.MaskingPlan | signoff_pb2.CheckResponse,
    *,
    keys: Mapping[str, bytes] | None = None,
    lenient: bool = False,
) -> Any:
    """Mask `column`, the values of the top-level field `name` of rows, as the plan masks them.

    `column` is a pyarrow Array or ChunkedArray, a pandas Series or a list; the result is of the
    same kind (an Arrow result is a string array when the field is masked, except NULLIFY, which
    keeps the type). `plan` is a compiled plan or anything `apply_mask` takes (compile it once
    with `compile_mask` for many columns). Value for value, the result is what
    `apply_mask(rows, plan)` gives for `name`, nulls included (a null is None in the row path:
    NULLIFY keeps it null, the other operators mask it like None). Raises MaskingError as the
    row path does, and when the plan masks whole rows, which no column can carry.
    """
    compiled = _compiled(plan, keys, lenient)
    return _mask(column, name, compiled, None)


def mask_columns(
    table: Any,
    plan: CompiledMask | MaskPlan | signoff_pb2.MaskingPlan | signoff_pb2.CheckResponse,
    *,
    keys: Mapping[str, bytes] | None = None,
    lenient: bool = False,
) -> Any:
    """Mask every column of a pyarrow Table or a pandas DataFrame, read as rows of its columns.

    The result is what `apply_mask` gives for the table's rows, column by column; it fails as
    the rows would, e.g. on an entry naming a field no column has, unless `lenient`.
    """
    compiled = _compiled(plan, keys, lenient)
    is_arrow = isinstance(table, pa.Table)
    # Field names are strings; a DataFrame's column labels need not be.
    labels = {str(label): label for label in (table.column_names if is_arrow else table.columns)}
    found = [0, 0]
    try:
        columns = {n: _mask(table[label], n, compiled, found) for n, label in labels.items()}
        compiled.rows_found(labels, len(table), found)
        failed = compiled.selects_nothing(found)
    except MaskingError:
        failed = True
    if failed:
        # The table's rows decide, in the order the specification finds errors.
        rows = compiled.apply(table.to_pylist() if is_arrow else _rows(table))
        columns = {n: [row[n] for row in rows] for n in labels}
        if is_arrow:
            return pa.table({n: pa.array(values) for n, values in columns.items()})
    if is_arrow:
        return pa.table(columns)
    import pandas as pd

    return pd.DataFrame({labels[n]: column for n, column in columns.items()}, index=table.index)


def _compiled(plan: Any, keys: Mapping[str, bytes] | None, lenient: bool) -> CompiledMask:
    if isinstance(plan, CompiledMask):
        return plan
    return compile_mask(plan, keys=keys, lenient=lenient)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _python(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _mask(column: Any, name: str, compiled: CompiledMask, found: list[int] | None) -> Any:
    if isinstance(column, list):
        return compiled.column(name, column, found)
    if isinstance(column, pa.ChunkedArray):
        chunks = [_mask_array(chunk, name, compiled, found) for chunk in column.chunks]
        if not chunks:
            return pa.chunked_array([], type=_result_type(column.type, name, compiled))
        return pa.chunked_array(chunks)
    if isinstance(column, pa.Array):
        return _mask_array(column, name, compiled, found)
    return _mask_series(column, name, compiled, found)


def _mask_series(
    series: pd.Series[Any], name: str, compiled: CompiledMask, found: list[int] | None
) -> Any:
    import pandas as pd

    try:
        array = pa.Array.from_pandas(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed or non-Arrow values: the row path decides, value by value.
        values = compiled.column(name, [_python(v) for v in series.tolist()], found)
        return pd.Series(values, index=series.index, name=series.name, dtype=object)
    masked = _mask_array(array, name, compiled, found)
    if masked is array:
        return series.copy()
    return masked.to_pandas().set_axis(series.index).rename(series.name)


def _python(value: Any) -> Any:
    # pandas spells a missing value NaN, NA or NaT (and Arrow reads NaN from pandas as null);
    # the row path's missing value is None.
    import pandas as pd

    if value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    return value


def _result_type(arrow_type: Any, name: str, compiled: CompiledMask) -> Any:
    rule, _ = compiled.field(name)
    if rule is None or rule.operator == MaskOperator.NULLIFY:
        return arrow_type
    return pa.string()


def _mask_array(array: Any, name: str, compiled: CompiledMask, found: list[int] | None) -> Any:
    rule, goes_on = compiled.field(name)
    if goes_on or not any(test(array.type) for test in _SCALAR_TYPES):
        return _by_value(array, name, compiled, found)
    if rule is None:
        return array  # JSON scalars, and no entry reaches them
    try:
        masked = _vectorised(array, rule.operator, rule.keep_first, rule.keep_last, rule.fn)
    except MaskingError:
        # Whatever value failed, the row path names the failure its own order finds first.
        return _by_value(array, name, compiled, found)
    if found is not None:
        compiled.column_found(name, len(array), found)
    return masked


def _by_value(array: Any, name: str, compiled: CompiledMask, found: list[int] | None) -> Any:
    values = compiled.column(name, array.to_pylist(), found)
    rule, _ = compiled.field(name)
    if rule is not None and rule.operator == MaskOperator.NULLIFY:
        return pa.nulls(len(values), array.type)
    return pa.array(values) if values else pa.array([], _result_type(array.type, name, compiled))


def _vectorised(
    array: Any, operator: int, keep_first: int, keep_last: int, fn: Callable[[Any], Any]
) -> Any:
    size = len(array)
    if operator == MaskOperator.NULLIFY:
        return pa.nulls(size, array.type)
    if operator == MaskOperator.REDACT:
        return pa.repeat(pa.scalar(REDACTED, pa.string()), size)
    is_text = any(test(array.type) for test in _STRING_TYPES)
    if operator == MaskOperator.EMAIL:
        if not is_text:
            return pa.repeat(pa.scalar(REDACTED, pa.string()), size)
        # A null is masked as None is: not a string, so redacted.
        return _blocks(_email_block, pc.fill_null(array, REDACTED))
    if operator == MaskOperator.PARTIAL and is_text and keep_first >= 0 and keep_last >= 0:
        # A null is masked as None is: its text is "null".
        return _partial(pc.fill_null(array, "null"), keep_first, keep_last)
    return _by_distinct(array, fn)


def _blocks(mask: Callable[[Any], Any], text: Any) -> Any:
    """`mask` applied to blocks of `text` small enough for the CPU caches (the work arrays are
    several bytes per byte of text), the results joined as one string array."""
    text = text.cast(pa.large_string())
    average = max(1, text.buffers()[2].size // len(text)) if len(text) and text.buffers()[2] else 1
    step = max(64, _BLOCK_BYTES // average)
    blocks = [mask(text.slice(start, step)) for start in range(0, len(text), step)]
    if not blocks:
        return pa.array([], pa.string())
    return pa.concat_arrays(blocks).cast(pa.string())


def _utf8(text: Any) -> tuple[Any, Any]:
    """A large_string array's bytes and its offsets into them (from 0)."""
    bounds = np.frombuffer(text.buffers()[1], dtype=np.int64)[
        text.offset : text.offset + len(text) + 1
    ]
    raw = text.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8)[bounds[0] : bounds[-1]] if raw else _NO_BYTES
    return data, bounds - bounds[0]


def _email_block(text: Any) -> Any:
    """EMAIL over UTF-8 bytes: values with one "@" and bytes on both sides become "***" and
    their bytes from the "@" on; others become REDACTED."""
    data, offsets = _utf8(text)
    value_start, value_end = offsets[:-1], offsets[1:]
    ats = np.flatnonzero(data == ord("@"))
    before = np.searchsorted(ats, offsets)
    at = np.take(ats, before[:-1], mode="clip") if len(ats) else value_start
    valid = (np.diff(before) == 1) & (at > value_start) & (at < value_end - 1)
    # Gather the output from the bytes followed by "***[REDACTED]": per value, a prefix (the
    # stars, or the whole of REDACTED) and then, if valid, the bytes from the "@" on.
    source = np.concatenate((data, _EMAIL_TAIL))
    stars, redacted = len(data), len(data) + 3
    runs = np.empty(2 * len(valid), dtype=np.int64)
    runs[0::2] = np.where(valid, 3, len(REDACTED))
    runs[1::2] = np.where(valid, value_end - at, 0)
    begins = np.empty(2 * len(valid), dtype=np.int64)
    begins[0::2] = np.where(valid, stars, redacted)
    begins[1::2] = at
    ends = np.cumsum(runs)
    index = np.repeat(begins - (ends - runs), runs) + np.arange(ends[-1] if len(ends) else 0)
    out = source[index]
    new_offsets = np.concatenate(([0], ends[1::2]))
    return pa.LargeStringArray.from_buffers(len(text), pa.py_buffer(new_offsets), pa.py_buffer(out))


def _partial(text: Any, keep_first: int, keep_last: int) -> Any:
    """PARTIAL over UTF-8 bytes at once: find every content character, hide those between the
    kept ends of each value, and write one MASK_CHAR per hidden code point."""
    work = _Work()
    return _blocks(lambda block: _partial_block(block, keep_first, keep_last, work), text)


class _Work:
    """Scratch arrays reused from block to block. A fresh array per step and block cost as
    much as the steps themselves: the allocator hands the pages back and faults them in again."""

    def __init__(self) -> None:
        self._arrays: dict[str, Any] = {}

    def get(self, name: str, size: int, dtype: Any) -> Any:
        array = self._arrays.get(name)
        if array is None or len(array) < size:
            array = self._arrays[name] = np.empty(max(size, 1024), dtype=dtype)
        return array[:size]


def _partial_block(text: Any, keep_first: int, keep_last: int, work: _Work) -> Any:
    data, offsets = _utf8(text)
    lengths = np.diff(offsets)
    size = len(data)
    # Content bytes: ASCII letters and digits, and every byte of a code point beyond ASCII.
    # (uint8 arithmetic wraps: b - 0x30 < 10 only for digits, (b | 0x20) - 0x61 < 26 only
    # for letters.)
    scratch = work.get("scratch", size, np.uint8)
    test = work.get("test", size, bool)
    content = work.get("content", size, bool)
    np.bitwise_or(data, 0x20, out=scratch)
    np.subtract(scratch, 0x61, out=scratch)
    np.less(scratch, 26, out=content)
    np.subtract(data, 0x30, out=scratch)
    np.less(scratch, 10, out=test)
    np.logical_or(content, test, out=content)
    np.greater_equal(data, 0x80, out=test)
    np.logical_or(content, test, out=content)
    ascii_only = not size or int(data.max()) < 0x80
    if ascii_only:
        starts = content
    else:  # first bytes
        starts = work.get("starts", size, bool)
        np.bitwise_and(data, 0xC0, out=scratch)
        np.not_equal(scratch, 0x80, out=test)
        np.logical_and(content, test, out=starts)
    # Where each content character starts, and how many come before each value.
    where = np.flatnonzero(starts)
    before = np.searchsorted(where, offsets)
    count = np.diff(before)
    # Keep counts beyond the block's size act alike (all hidden): capped, they fit any int.
    first, last = min(keep_first, size + 1), min(keep_last, size + 1)
    every = first + last >= count
    # The hidden characters of a value are its content characters from index `lo` up to,
    # not including, `hi` (indices into `where`); as bytes, from where `lo` starts to where
    # `hi` starts (or the value ends).
    lo = np.where(every, before[:-1], before[:-1] + first)
    hi = np.where(every, before[1:], before[1:] - last)
    value_start, value_end = offsets[:-1], offsets[1:]
    if len(where):
        some = lo < hi
        byte_lo = np.where(some, np.take(where, lo, mode="clip"), value_start)
        byte_hi = np.where(
            some & (hi < len(where)),
            np.minimum(np.take(where, hi, mode="clip"), value_end),
            value_end,
        )
        byte_hi = np.where(some, byte_hi, value_start)
    else:
        byte_lo = byte_hi = value_start
    # Each value's bytes are three runs: before the hidden range, in it, after it. Repeating a
    # (no, yes, no) pattern by those run lengths marks the range in one pass.
    runs = np.empty(3 * len(count), dtype=np.int64)
    runs[0::3] = byte_lo - value_start
    runs[1::3] = byte_hi - byte_lo
    runs[2::3] = value_end - byte_hi
    hidden = np.repeat(np.tile(_RANGE, len(count)), runs)
    np.logical_and(hidden, content, out=hidden)
    # A hidden code point's bytes after its first go (hidden and not a first byte).
    drop = None
    if not ascii_only:
        np.greater(hidden, starts, out=test)
        if test.any():
            drop = test
    # data, with MASK_CHAR where hidden: uint8 arithmetic, which wraps, in one SIMD pass each.
    # Arrow keeps the result, so it is a fresh array unless bytes are dropped from it.
    out = np.empty(size, np.uint8) if drop is None else work.get("out", size, np.uint8)
    np.subtract(_STAR, data, out=scratch)
    np.multiply(scratch, hidden.view(np.uint8), out=scratch)
    np.add(data, scratch, out=out)
    new_offsets = offsets
    if drop is not None:
        new_offsets = offsets - np.searchsorted(np.flatnonzero(drop), offsets)
        # A boolean index copies the kept bytes in one pass; np.compress would first list
        # their positions, then gather them (twice as slow here).
        out = out[np.logical_not(drop, out=drop)]
    masked = pa.LargeStringArray.from_buffers(
        len(text), pa.py_buffer(new_offsets), pa.py_buffer(out)
    )
    # Text without any content would come back unchanged, so it is redacted (unless empty).
    bare = (count == 0) & (lengths > 0)
    return pc.if_else(pa.array(bare), REDACTED, masked) if bare.any() else masked


def _by_distinct(array: Any, fn: Callable[[Any], Any]) -> Any:
    """A keyed or non-text operator, run once per distinct value (the array dictionary-encoded)."""
    encoded = array.dictionary_encode()
    distinct = [fn(value) for value in encoded.dictionary.to_pylist()]
    indices = encoded.indices
    if encoded.null_count:
        distinct.append(fn(None))
        indices = pc.fill_null(indices, len(distinct) - 1)
    return pc.take(pa.array(distinct, pa.string()), indices)
