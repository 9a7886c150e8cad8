"""cel-python brought in line with cel-spec where it answers differently from cel-expr.

cel-python 0.5 compares with Python's operators, so `true == 1` holds (bool is an int in
Python), `1.0 == 1` and `1 in [1.0]` fail with "no such overload", and an int and a double
beyond 2**53 compare exactly where cel-spec (and cel-go, cel-cpp) convert the int to a double.
Its `has()` answers false for any selection that fails, where cel-spec makes `has()` on a value
that is neither a map nor a message an error. Each would let the two backends decide the same
request differently. cel-python lets a program override its operators and its evaluator, so the
cel-spec rules are written once here, against cel-spec's language definition (Equality,
Ordering, Field Selection), rather than patched inside the library.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import functools
import math
import re
import zoneinfo
from typing import Any

import lark
import re2  # type: ignore[import-untyped]
from celpy import InterpretedRunner, celtypes
from celpy.evaluation import CELEvalError, Evaluator

_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1
_MAX_UINT = 2**64 - 1
_ORDERED = frozenset({"string", "bytes", "bool", "timestamp", "duration"})


def _no_overload(name: str, *args: Any) -> CELEvalError:
    kinds = ", ".join(_cel_type(a) for a in args)
    return CELEvalError(f"no such overload: {name}({kinds})", TypeError, None)


def _is_number(value: Any) -> bool:
    # cel-python's arithmetic can hand back plain Python numbers (DoubleType * DoubleType is
    # a float), so those count as well; bool is an int in Python but never a CEL number.
    return isinstance(value, int | float) and not isinstance(value, bool | celtypes.BoolType)


def _is_double(value: Any) -> bool:
    return isinstance(value, float)


def _compare_double_int(d: float, i: int, upper: int, lower: int) -> int | None:
    # cel-go's compareDoubleInt/compareDoubleUint: a double outside the integer type's range
    # orders by its sign; inside it the integer becomes a double, lossily, as cel-spec's
    # conformance suite requires (`dyn(9223372036854775807) < 9223372036854775808.0` is false).
    if math.isnan(d):
        return None
    # The bounds as doubles, as cel-go compares them: float(2**63 - 1) is 2**63.
    if d < float(lower):
        return -1
    if d > float(upper):
        return 1
    as_double = float(i)
    return (d > as_double) - (d < as_double)


def _compare_numbers(a: Any, b: Any) -> int | None:
    """-1/0/1 as cel-spec orders two numbers of any numeric types; None when NaN is involved."""
    a_double, b_double = _is_double(a), _is_double(b)
    if a_double and b_double:
        if math.isnan(a) or math.isnan(b):
            return None
        return int((a > b) - (a < b))
    if a_double or b_double:
        d, i, sign = (a, b, 1) if a_double else (b, a, -1)
        unsigned = isinstance(i, celtypes.UintType)
        found = _compare_double_int(
            float(d), int(i), _MAX_UINT if unsigned else _MAX_INT, 0 if unsigned else _MIN_INT
        )
        return None if found is None else sign * found
    # int and uint: exact.
    return (int(a) > int(b)) - (int(a) < int(b))


def equal(a: Any, b: Any) -> Any:
    """cel-spec heterogeneous equality: numbers by value across types, other kinds never equal
    (false, not an error), lists and maps element by element."""
    if isinstance(a, CELEvalError):
        return a
    if isinstance(b, CELEvalError):
        return b
    return celtypes.BoolType(_equal(a, b))


_NUMERIC = frozenset({"int", "uint", "double"})


def _kind(value: Any) -> str:
    """The CEL type name, with the three numeric types as one kind: cel-spec's equality and
    ordering compare numbers across them."""
    name = _cel_type(value)
    return "number" if name in _NUMERIC else name


def _equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "number":
        return _compare_numbers(a, b) == 0
    if kind == "list":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "map":
        if len(a) != len(b):
            return False
        for key, value in a.items():
            other = _lookup(b, key)
            if other is _MISSING or not _equal(value, other):
                return False
        return True
    if kind == "null_type":
        return True
    return bool(a == b)


_MISSING = object()
_KEY_KINDS = frozenset({"string", "number", "bool"})  # what a CEL map key can be


def _lookup(mapping: celtypes.MapType, key: Any) -> Any:
    for k, v in mapping.items():
        if _equal(k, key):
            return v
    return _MISSING


def not_equal(a: Any, b: Any) -> Any:
    result = equal(a, b)
    if isinstance(result, CELEvalError):
        return result
    return celtypes.BoolType(not result)


def _ordering(name: str, test: Any) -> Any:
    def compare(a: Any, b: Any) -> Any:
        if isinstance(a, CELEvalError):
            return a
        if isinstance(b, CELEvalError):
            return b
        if _is_number(a) and _is_number(b):
            found = _compare_numbers(a, b)
            return celtypes.BoolType(found is not None and test(found))
        kind = _kind(a)
        if kind == _kind(b) and kind in _ORDERED:
            # bool is ordered too in cel-spec (false < true); Python's ints agree.
            return celtypes.BoolType(test((a > b) - (a < b)))
        return _no_overload(name, a, b)

    return compare


def contains(item: Any, container: Any) -> Any:
    """`item in container` with cel-spec equality: list elements, or map keys."""
    if isinstance(item, CELEvalError):
        return item
    if isinstance(container, CELEvalError):
        return container
    if isinstance(container, celtypes.ListType):
        return celtypes.BoolType(any(_equal(item, e) for e in container))
    if isinstance(container, celtypes.MapType):
        if _kind(item) not in _KEY_KINDS:
            return _no_overload("_in_", item, container)
        if isinstance(item, celtypes.StringType):
            return celtypes.BoolType(item in container)  # string keys match exactly
        return celtypes.BoolType(_lookup(container, item) is not _MISSING)
    return _no_overload("_in_", item, container)


_QUIET = re2.Options()
# RE2 logs a pattern it cannot compile to stderr, and a pattern can come from the request.
_QUIET.log_errors = False


def matches(text: Any, pattern: Any) -> Any:
    """`text.matches(pattern)` (RE2, unanchored), without RE2 echoing a bad pattern."""
    if isinstance(text, CELEvalError):
        return text
    if isinstance(pattern, CELEvalError):
        return pattern
    if not (isinstance(text, celtypes.StringType) and isinstance(pattern, celtypes.StringType)):
        return _no_overload("matches", text, pattern)
    try:
        found = re2.compile(str(pattern), _QUIET).search(str(text))
    except re2.error:
        return CELEvalError("invalid regular expression", ValueError, None)
    return celtypes.BoolType(found is not None)


def _double_arithmetic(name: str, a: float, b: float) -> Any:
    if name == "_%_":
        return _no_overload(name, a, b)
    if name == "_/_":
        if b == 0.0:
            # IEEE 754, as cel-spec asks: a signed infinity, or NaN for 0/0.
            if a == 0.0 or math.isnan(a):
                return celtypes.DoubleType(math.nan)
            sign = math.copysign(1.0, a) * math.copysign(1.0, b)
            return celtypes.DoubleType(math.copysign(math.inf, sign))
        return celtypes.DoubleType(a / b)
    result = {"_+_": a + b, "_-_": a - b, "_*_": a * b}[name]
    return celtypes.DoubleType(result)


# --- cel-spec's standard functions -------------------------------------------------------------
# cel-python's own versions lean on Python's operators and constructors, which accept far more
# than cel-spec does (`true + true`, `size(null)`, `int('0x12')`, `string([1])`): each would
# give a value where cel-expr gives an error. Every overload below takes exactly the argument
# kinds cel-spec's standard definitions list, and anything else is "no such overload".

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# cel-spec's duration range: +-10000 years of seconds, to the nanosecond.
_MAX_DURATION_NS = 315_576_000_000 * 10**9 + 999_999_999


def _cel_type(value: Any) -> str:
    """The CEL type name of a cel-python value, for overload resolution and messages."""
    if isinstance(value, bool | celtypes.BoolType):
        return "bool"
    if isinstance(value, celtypes.UintType):
        return "uint"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.timedelta):
        return "duration"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    if value is None or isinstance(value, celtypes.NullType):
        return "null_type"
    if isinstance(value, type):
        return "type"
    return type(value).__name__


def _overflow() -> CELEvalError:
    return CELEvalError("numeric overflow", OverflowError, None)


def _conversion_error(source: str, target: str) -> CELEvalError:
    return CELEvalError(f"conversion error: cannot convert {source} to {target}", ValueError, None)


def _strict(function: Any) -> Any:
    """The function, answering the first error among its arguments instead of being called."""

    def call(*args: Any) -> Any:
        for arg in args:
            if isinstance(arg, CELEvalError):
                return arg
        return function(*args)

    return call


def _int(value: int) -> Any:
    return celtypes.IntType(value) if _MIN_INT <= value <= _MAX_INT else _overflow()


def _uint(value: int) -> Any:
    return celtypes.UintType(value) if 0 <= value <= _MAX_UINT else _overflow()


def _nanos(value: dt.timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 10**9 + value.microseconds * 1000


def _duration(value: dt.timedelta) -> Any:
    if abs(_nanos(value)) > _MAX_DURATION_NS:
        return _overflow()
    return celtypes.DurationType(value)


def _timestamp(compute: Any) -> Any:
    # Python's datetime spans exactly cel-spec's years 1 to 9999; beyond them it raises.
    try:
        return celtypes.TimestampType(compute())
    except (OverflowError, ValueError):
        return _overflow()


def _truncated_division(a: int, b: int) -> tuple[int, int]:
    """C's integer division (toward zero) and remainder (sign of the dividend), which cel-spec
    uses; Python's // and % floor instead."""
    quotient = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        quotient = -quotient
    return quotient, a - b * quotient


def _add(a: Any, b: Any) -> Any:
    kind, other = _cel_type(a), _cel_type(b)
    if kind == other:
        if kind == "int":
            return _int(int(a) + int(b))
        if kind == "uint":
            return _uint(int(a) + int(b))
        if kind == "double":
            return _double_arithmetic("_+_", float(a), float(b))
        if kind == "string":
            return celtypes.StringType(str(a) + str(b))
        if kind == "bytes":
            return celtypes.BytesType(bytes(a) + bytes(b))
        if kind == "list":
            return celtypes.ListType([*a, *b])
        if kind == "duration":
            return _duration(dt.timedelta.__add__(a, b))
    if (kind, other) == ("timestamp", "duration"):
        return _timestamp(lambda: dt.datetime.__add__(a, b))
    if (kind, other) == ("duration", "timestamp"):
        return _timestamp(lambda: dt.datetime.__add__(b, a))
    return _no_overload("_+_", a, b)


def _subtract(a: Any, b: Any) -> Any:
    kind, other = _cel_type(a), _cel_type(b)
    if kind == other:
        if kind == "int":
            return _int(int(a) - int(b))
        if kind == "uint":
            return _uint(int(a) - int(b))
        if kind == "double":
            return _double_arithmetic("_-_", float(a), float(b))
        if kind == "duration":
            return _duration(dt.timedelta.__sub__(a, b))
        if kind == "timestamp":
            return _duration(dt.datetime.__sub__(a, b))
    if (kind, other) == ("timestamp", "duration"):
        return _timestamp(lambda: dt.datetime.__sub__(a, b))
    return _no_overload("_-_", a, b)


def _multiply(a: Any, b: Any) -> Any:
    kind = _cel_type(a)
    if kind == _cel_type(b):
        if kind == "int":
            return _int(int(a) * int(b))
        if kind == "uint":
            return _uint(int(a) * int(b))
        if kind == "double":
            return _double_arithmetic("_*_", float(a), float(b))
    return _no_overload("_*_", a, b)


def _divide(a: Any, b: Any) -> Any:
    kind = _cel_type(a)
    if kind == _cel_type(b) and kind in ("int", "uint"):
        if int(b) == 0:
            return CELEvalError("divide by zero", ZeroDivisionError, None)
        quotient, _ = _truncated_division(int(a), int(b))
        return _int(quotient) if kind == "int" else _uint(quotient)
    if kind == _cel_type(b) == "double":
        return _double_arithmetic("_/_", float(a), float(b))
    return _no_overload("_/_", a, b)


def _modulo(a: Any, b: Any) -> Any:
    kind = _cel_type(a)
    if kind == _cel_type(b) and kind in ("int", "uint"):
        if int(b) == 0:
            return CELEvalError("modulus by zero", ZeroDivisionError, None)
        if kind == "int" and int(a) == _MIN_INT and int(b) == -1:
            return _overflow()  # as cel-cpp: the quotient it implies overflows
        _, remainder = _truncated_division(int(a), int(b))
        return celtypes.IntType(remainder) if kind == "int" else celtypes.UintType(remainder)
    return _no_overload("_%_", a, b)


def _negate(a: Any) -> Any:
    kind = _cel_type(a)
    if kind == "int":
        return _int(-int(a))
    if kind == "double":
        return celtypes.DoubleType(-float(a))
    return _no_overload("-_", a)


def _is_true(value: Any) -> bool:
    return isinstance(value, bool | celtypes.BoolType) and bool(value)


def _is_false(value: Any) -> bool:
    return isinstance(value, bool | celtypes.BoolType) and not value


def _error_of(name: str, *args: Any) -> CELEvalError:
    """The error a logical operator answers when no operand decides it: an operand's own
    error, or, for an operand that is no bool at all, no such overload."""
    for arg in args:
        if isinstance(arg, CELEvalError):
            return arg
    return _no_overload(name, *args)


def _logical_not(a: Any) -> Any:
    if isinstance(a, CELEvalError):
        return a
    if isinstance(a, bool | celtypes.BoolType):
        return celtypes.BoolType(not a)
    return _no_overload("!_", a)


def _logical_and(a: Any, b: Any) -> Any:
    # cel-spec: false wins over an error on either side, and a non-bool operand is an error
    # (cel-python passed it through: `dyn(1) && true` was 1).
    if _is_false(a) or _is_false(b):
        return celtypes.BoolType(False)
    if _is_true(a) and _is_true(b):
        return celtypes.BoolType(True)
    return _error_of("_&&_", a, b)


def _logical_or(a: Any, b: Any) -> Any:
    if _is_true(a) or _is_true(b):
        return celtypes.BoolType(True)
    if _is_false(a) and _is_false(b):
        return celtypes.BoolType(False)
    return _error_of("_||_", a, b)


def _conditional(condition: Any, left: Any, right: Any) -> Any:
    if isinstance(condition, CELEvalError):
        return condition
    if not isinstance(condition, bool | celtypes.BoolType):
        return _no_overload("_?_:_", condition)
    return left if condition else right


def _index(container: Any, key: Any) -> Any:
    kind, key_kind = _cel_type(container), _cel_type(key)
    if kind == "list":
        if key_kind == "double":
            # cel-expr indexes a list with a double that holds a whole number, at run time.
            if not float(key).is_integer():
                return _no_overload("_[_]", container, key)
            key = int(key)
        elif key_kind not in ("int", "uint"):
            return _no_overload("_[_]", container, key)
        if not 0 <= int(key) < len(container):
            return CELEvalError("index out of range", IndexError, None)
        return container[int(key)]
    if kind == "map":
        if _kind(key) not in _KEY_KINDS:
            return _no_overload("_[_]", container, key)
        found = container.get(key, _MISSING) if key_kind == "string" else _lookup(container, key)
        if found is _MISSING:
            return CELEvalError("no such key", KeyError, None)
        return found
    return _no_overload("_[_]", container, key)


def _sized(value: Any) -> Any:
    if _cel_type(value) in ("string", "bytes", "list", "map"):
        # A Python str counts code points, as cel-spec's size(string) does.
        return celtypes.IntType(len(value))
    return _no_overload("size", value)


def _string_test(name: str, test: Any) -> Any:
    def call(text: Any, part: Any) -> Any:
        if _cel_type(text) == _cel_type(part) == "string":
            return celtypes.BoolType(test(str(text), str(part)))
        return _no_overload(name, text, part)

    return call


# What absl's number parsers (cel-cpp's int(), uint(), double() of a string) accept: ASCII
# digits only (Python's int() also takes '1_0' and other scripts' digits), whitespace around.
_ASCII_SPACE = " \t\n\v\f\r"
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_UINT_TEXT = re.compile(r"\+?[0-9]+")
_DOUBLE_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_HEX_DOUBLE_TEXT = re.compile(
    r"[+-]?0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?", re.IGNORECASE
)


def _to_int(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "bool":
        return celtypes.IntType(1 if value else 0)  # cel-cpp's runtime has int(bool)
    if kind in ("int", "uint"):
        return _int(int(value))
    if kind == "double":
        # cel-cpp's range is open at both ends (-2**63 itself is refused); NaN fails both tests.
        if not -(2.0**63) < float(value) < 2.0**63:
            return _overflow()
        return celtypes.IntType(int(value))
    if kind == "string":
        text = str(value).strip(_ASCII_SPACE)
        if not _INT_TEXT.fullmatch(text):
            return _conversion_error("string", "int")
        return _int(int(text))
    if kind == "timestamp":
        since = dt.datetime.__sub__(value, _EPOCH)
        return celtypes.IntType(since.days * 86_400 + since.seconds)  # floors, as cel-cpp
    return _no_overload("int", value)


def _to_uint(value: Any) -> Any:
    kind = _cel_type(value)
    if kind in ("int", "uint"):
        return _uint(int(value))
    if kind == "double":
        if not 0.0 <= float(value) < 2.0**64:  # -0.5 too, though it truncates to 0
            return _overflow()
        return celtypes.UintType(int(value))
    if kind == "string":
        text = str(value).strip(_ASCII_SPACE)
        if not _UINT_TEXT.fullmatch(text):
            return _conversion_error("string", "uint")
        return _uint(int(text))
    return _no_overload("uint", value)


def _to_double(value: Any) -> Any:
    kind = _cel_type(value)
    if kind in ("int", "uint", "double"):
        return celtypes.DoubleType(float(value))
    if kind == "string":
        text = str(value).strip(_ASCII_SPACE)
        if _DOUBLE_TEXT.fullmatch(text):
            return celtypes.DoubleType(float(text))
        if _HEX_DOUBLE_TEXT.fullmatch(text):
            try:
                return celtypes.DoubleType(float.fromhex(text))
            except OverflowError:
                return celtypes.DoubleType(math.copysign(math.inf, -1 if "-" in text else 1))
        return _conversion_error("string", "double")
    return _no_overload("double", value)


def _format_double(value: float) -> str:
    """A double as cel-cpp's string() writes it: the shortest digits that read back the same
    value, in C's %g layout (exponent form below 1e-4 and from 1e6 on)."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    shortest = decimal.Decimal(repr(abs(value)))
    digits = "".join(map(str, shortest.as_tuple().digits)).rstrip("0") or "0"
    exponent = shortest.adjusted()
    if -4 <= exponent < 6:
        return sign + format(shortest.normalize(), "f")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _fraction(micros: int) -> str:
    # protobuf's JSON layout, which cel-cpp follows: no, 3 or 6 (or 9) fractional digits.
    if micros == 0:
        return ""
    if micros % 1000 == 0:
        return f".{micros // 1000:03d}"
    return f".{micros:06d}"


def _to_string(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "string":
        return value
    if kind == "bool":
        return celtypes.StringType("true" if value else "false")
    if kind in ("int", "uint"):
        return celtypes.StringType(str(int(value)))
    if kind == "double":
        return celtypes.StringType(_format_double(float(value)))
    if kind == "bytes":
        try:
            return celtypes.StringType(bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            return _conversion_error("bytes", "string")
    if kind == "timestamp":
        utc = value.astimezone(dt.UTC)
        return celtypes.StringType(
            f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}{_fraction(utc.microsecond)}Z"
        )
    if kind == "duration":
        micros = _nanos(value) // 1000
        seconds, rest = divmod(abs(micros), 10**6)
        return celtypes.StringType(f"{'-' if micros < 0 else ''}{seconds}{_fraction(rest)}s")
    return _no_overload("string", value)


_BOOL_TEXT = {
    **dict.fromkeys(("true", "True", "TRUE", "t", "1"), True),
    **dict.fromkeys(("false", "False", "FALSE", "f", "0"), False),
}


def _to_bool(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "bool":
        return celtypes.BoolType(bool(value))
    if kind == "string":
        found = _BOOL_TEXT.get(str(value))
        return _conversion_error("string", "bool") if found is None else celtypes.BoolType(found)
    return _no_overload("bool", value)


def _to_bytes(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "bytes":
        return value
    if kind == "string":
        return celtypes.BytesType(str(value).encode("utf-8"))
    return _no_overload("bytes", value)


# RFC 3339 as absl::ParseTime reads it for cel-cpp: 't'/'z' in either case, one- or two-digit
# fields, any number of fractional digits, an offset with or without its colon, a leap second.
_TIMESTAMP_TEXT = re.compile(
    r"([0-9]+)-([0-9]{1,2})-([0-9]{1,2})[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))"
)


def _parse_timestamp(text: str) -> dt.datetime | None:
    found = _TIMESTAMP_TEXT.fullmatch(text.strip(_ASCII_SPACE))
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    micros = int((found[7] or "").ljust(6, "0")[:6])  # finer digits are lost: see the docs
    leap = second == 60
    offset = dt.timedelta(hours=int(found[9] or 0), minutes=int(found[10] or 0))
    if found[8] == "-":
        offset = -offset
    if offset >= dt.timedelta(hours=24) or int(found[10] or 0) > 59:
        return None
    try:
        local = dt.datetime(year, month, day, hour, minute, second - leap, micros, tzinfo=dt.UTC)
    except ValueError:
        return None
    return local + dt.timedelta(seconds=leap) - offset


def _to_timestamp(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "timestamp":
        return value
    if kind == "string":
        try:
            parsed = _parse_timestamp(str(value))
        except OverflowError:
            return _overflow()
        if parsed is None:
            return _conversion_error("string", "timestamp")
        return _timestamp(lambda: parsed)
    if kind == "int":
        return _timestamp(lambda: _EPOCH + dt.timedelta(seconds=int(value)))
    return _no_overload("timestamp", value)


# Go's duration syntax as absl::ParseDuration reads it (no 'µs', no spaces, '0' alone).
_DURATION_TEXT = re.compile(r"[+-]?(?:0|(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:ns|us|ms|s|m|h))+)")
_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|ms|s|m|h)")
_UNIT_NANOS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _to_duration(value: Any) -> Any:
    kind = _cel_type(value)
    if kind == "duration":
        return value
    if kind != "string":
        return _no_overload("duration", value)
    text = str(value)
    if not _DURATION_TEXT.fullmatch(text):
        return _conversion_error("string", "duration")
    nanos = sum(
        fractions.Fraction(number) * _UNIT_NANOS[unit]
        for number, unit in _DURATION_PART.findall(text)
    )
    total = -int(nanos) if text.startswith("-") else int(nanos)  # int() truncates to 0
    if abs(total) > _MAX_DURATION_NS:
        return _overflow()
    # timedelta holds microseconds: finer parts are lost (see the docs), toward zero.
    micros = abs(total) // 1000
    return celtypes.DurationType(dt.timedelta(microseconds=-micros if total < 0 else micros))


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> dt.tzinfo | dt.timedelta | None:
    """An IANA zone, a fixed offset ('+01:00', '1:00', up to 24 hours), or None if neither."""
    if name == "":
        return dt.UTC  # as cel-cpp
    offset = _OFFSET.fullmatch(name)
    if offset is not None:
        span = dt.timedelta(hours=int(offset[2]), minutes=int(offset[3]))
        return -span if offset[1] == "-" else span
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return None


_OFFSET = re.compile(r"([+-]?)([0-9]{1,2}):([0-9]{2})")


def _local(value: dt.datetime, zone_name: Any) -> Any:
    if _cel_type(zone_name) != "string":
        return _no_overload("timestamp accessor", value, zone_name)
    zone = _zone(str(zone_name))
    if zone is None:
        return CELEvalError("invalid timezone", ValueError, None)
    try:
        if isinstance(zone, dt.timedelta):
            # Offsets can reach 24 hours, beyond what dt.timezone accepts.
            return dt.datetime.__add__(value.astimezone(dt.UTC), zone)
        return value.astimezone(zone)
    except OverflowError:
        return _overflow()


def _accessor(name: str, of_time: Any, of_duration: Any = None) -> Any:
    def call(value: Any, *zone: Any) -> Any:
        kind = _cel_type(value)
        if kind == "timestamp" and len(zone) <= 1:
            local = _local(value, zone[0]) if zone else value.astimezone(dt.UTC)
            if isinstance(local, CELEvalError):
                return local
            return celtypes.IntType(of_time(local))
        if kind == "duration" and of_duration is not None and not zone:
            nanos = _nanos(value)
            return celtypes.IntType(of_duration(abs(nanos)) * (-1 if nanos < 0 else 1))
        return _no_overload(name, value, *zone)

    return call


_ACCESSORS = {
    "getFullYear": _accessor("getFullYear", lambda t: t.year),
    "getMonth": _accessor("getMonth", lambda t: t.month - 1),
    "getDate": _accessor("getDate", lambda t: t.day),
    "getDayOfMonth": _accessor("getDayOfMonth", lambda t: t.day - 1),
    "getDayOfWeek": _accessor("getDayOfWeek", lambda t: (t.weekday() + 1) % 7),
    "getDayOfYear": _accessor("getDayOfYear", lambda t: t.timetuple().tm_yday - 1),
    # On a duration these are its whole length in the unit, toward zero, except that
    # getMilliseconds is the part below a second (cel-cpp's and cel-go's reading).
    "getHours": _accessor("getHours", lambda t: t.hour, lambda n: n // (3600 * 10**9)),
    "getMinutes": _accessor("getMinutes", lambda t: t.minute, lambda n: n // (60 * 10**9)),
    "getSeconds": _accessor("getSeconds", lambda t: t.second, lambda n: n // 10**9),
    "getMilliseconds": _accessor(
        "getMilliseconds", lambda t: t.microsecond // 1000, lambda n: n // 10**6 % 1000
    ),
}


def _type_of(value: Any) -> Any:
    # A type is what its name resolves to: `int` in an expression is the int() conversion
    # above, so type(1) must be that same object for `type(1) == int` to hold.
    if isinstance(value, type) or any(value is name for name in _TYPE_NAMES.values()):
        return _TYPE_NAMES["type"]
    kind = _cel_type(value)
    return _TYPE_NAMES.get(kind) or celtypes.TypeType(value)


_STRICT = {
    "_+_": _add,
    "_-_": _subtract,
    "_*_": _multiply,
    "_/_": _divide,
    "_%_": _modulo,
    "-_": _negate,
    "_[_]": _index,
    "size": _sized,
    "contains": _string_test("contains", lambda s, t: t in s),
    "startsWith": _string_test("startsWith", str.startswith),
    "endsWith": _string_test("endsWith", str.endswith),
    "int": _to_int,
    "uint": _to_uint,
    "double": _to_double,
    "string": _to_string,
    "bool": _to_bool,
    "bytes": _to_bytes,
    "timestamp": _to_timestamp,
    "duration": _to_duration,
    **_ACCESSORS,
}
_STRICT["type"] = _type_of

FUNCTIONS: dict[str, Any] = {
    **{name: _strict(function) for name, function in _STRICT.items()},
    "matches": matches,
    "_==_": equal,
    "_!=_": not_equal,
    "_<_": _ordering("_<_", lambda c: c < 0),
    "_<=_": _ordering("_<=_", lambda c: c <= 0),
    "_>_": _ordering("_>_", lambda c: c > 0),
    "_>=_": _ordering("_>=_", lambda c: c >= 0),
    "_in_": contains,
    # Errors reach these as values: they decide for themselves which one wins.
    "!_": _logical_not,
    "_&&_": _logical_and,
    "_||_": _logical_or,
    "_?_:_": _conditional,
}


_TYPE_NAMES = {
    name: FUNCTIONS[name] for name in ("int", "uint", "double", "string", "bool", "bytes", "type")
}


# --- comprehension macros ------------------------------------------------------------------

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def _comprehension(evaluator: Evaluator, method: str, target: Any, args: list[Any]) -> Any:
    """cel-spec's macros over a list's elements or a map's keys. cel-python also ran them over
    a string's characters, let a non-bool predicate count, and raised out of the whole
    expression on an error inside map() and filter() (so `true || l.map(...)` failed)."""
    if _cel_type(target) not in ("list", "map"):
        return _no_overload(method, target)
    arity = (2, 3) if method == "map" else (2,)
    if len(args) not in arity:
        return CELEvalError(f"{method}() takes {arity[0]} arguments", TypeError, None)
    variable = next(args[0].find_data("ident")).children[0].value
    bodies = [evaluator.sub_evaluator(arg) for arg in args[1:]]

    def run(body: Evaluator, item: Any) -> Any:
        try:
            return body.evaluate({variable: item})
        except CELEvalError as error:
            return error

    items = list(target)
    if method in ("all", "exists"):
        decisive = _is_false if method == "all" else _is_true
        error = None
        for item in items:
            found = run(bodies[0], item)
            if decisive(found):
                return celtypes.BoolType(method == "exists")
            if error is None and not isinstance(found, bool | celtypes.BoolType):
                error = _error_of(method, found)
        return error if error is not None else celtypes.BoolType(method == "all")
    kept = []
    for item in items:
        if method != "map" or len(bodies) == 2:
            found = run(bodies[0], item)
            if not isinstance(found, bool | celtypes.BoolType):
                return _error_of(method, found)
            if not found:
                continue
        kept.append(item)
    if method == "exists_one":
        return celtypes.BoolType(len(kept) == 1)
    if method == "filter":
        return celtypes.ListType(kept)
    mapped = []
    for item in kept:
        found = run(bodies[-1], item)
        if isinstance(found, CELEvalError):
            return found
        mapped.append(found)
    return celtypes.ListType(mapped)


def _selection(tree: Any) -> Any:
    """The `member_dot` node under has()'s single argument, or None if it is not one."""
    node = tree
    while isinstance(node, lark.Tree) and node.data != "member_dot":
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return node if isinstance(node, lark.Tree) else None


class SpecEvaluator(Evaluator):
    """cel-python's tree walker with cel-spec's `has()` and comprehension macros."""

    def sub_evaluator(self, ast: lark.Tree[Any]) -> Evaluator:
        # cel-python builds a plain Evaluator for a macro's body, which would drop the
        # cel-spec `has()` (and the macros below) inside `l.exists(x, has(x.f))`.
        return SpecEvaluator(ast, activation=self.activation)

    def member_dot_arg(self, tree: lark.Tree[Any]) -> Any:
        method = str(getattr(tree.children[1], "value", ""))
        if method not in _MACROS:
            return super().member_dot_arg(tree)
        target = self.visit(tree.children[0])
        if isinstance(target, CELEvalError):
            return target
        args = tree.children[2].children if len(tree.children) > 2 else []
        return _comprehension(self, method, target, args)

    def macro_has_eval(self, exprlist: lark.Tree[Any]) -> Any:
        # cel-spec: has(e.f) tests for key f when e is a map (or a message); an error in e
        # is that error, and any other kind of e is an error too. cel-python answers false
        # for all of them, so `!has(m.level)` held when m was a list.
        node = _selection(exprlist.children[0]) if exprlist.children else None
        if node is None:
            return CELEvalError("invalid argument to has() macro", ValueError, None)
        member_tree, name = node.children
        member = self.visit(member_tree)
        if isinstance(member, CELEvalError):
            return member
        if isinstance(member, celtypes.MapType):
            return celtypes.BoolType(celtypes.StringType(name.value) in member)
        return CELEvalError(
            f"has() needs a map or a message, got {type(member).__name__}", TypeError, None
        )


class SpecRunner(InterpretedRunner):
    """Evaluates with SpecEvaluator; the operators above come in through `functions`."""

    def evaluate(self, context: Any) -> Any:
        return SpecEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)
