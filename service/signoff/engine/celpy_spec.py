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
import math
from typing import Any

import lark
import re2
from celpy import InterpretedRunner, celtypes
from celpy.evaluation import CELEvalError, Evaluator, base_functions

_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1
_MAX_UINT = 2**64 - 1
_ORDERED = frozenset({"string", "bytes", "bool", "timestamp", "duration"})


def _no_overload(name: str, a: Any, b: Any) -> CELEvalError:
    return CELEvalError(
        f"no such overload: {name}({type(a).__name__}, {type(b).__name__})", TypeError, None
    )


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
        return (a > b) - (a < b)
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


def _kind(value: Any) -> str:
    """The CEL kind of a cel-python value; its arithmetic may return plain Python values."""
    if isinstance(value, bool | celtypes.BoolType):
        return "bool"
    if isinstance(value, int | float):
        return "number"
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
        return "null"
    return type(value).__name__


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
    if kind == "null":
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


def _number_kind(value: Any) -> str:
    if isinstance(value, celtypes.UintType):
        return "uint"
    return "double" if isinstance(value, float) else "int"


def _arithmetic(name: str) -> Any:
    base = base_functions[name]

    def apply(a: Any, b: Any) -> Any:
        # cel-spec has no mixed-type arithmetic (`2.0 + 1` has no overload); Python would
        # quietly promote. Same-kind operands go to cel-python's own operator.
        if _is_number(a) and _is_number(b):
            kind = _number_kind(a)
            if kind != _number_kind(b):
                return _no_overload(name, a, b)
            if kind == "double":
                return _double_arithmetic(name, float(a), float(b))
        return base(a, b)

    return apply


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


FUNCTIONS: dict[str, Any] = {
    "_+_": _arithmetic("_+_"),
    "_-_": _arithmetic("_-_"),
    "_*_": _arithmetic("_*_"),
    "_/_": _arithmetic("_/_"),
    "_%_": _arithmetic("_%_"),
    "matches": matches,
    "_==_": equal,
    "_!=_": not_equal,
    "_<_": _ordering("_<_", lambda c: c < 0),
    "_<=_": _ordering("_<=_", lambda c: c <= 0),
    "_>_": _ordering("_>_", lambda c: c > 0),
    "_>=_": _ordering("_>=_", lambda c: c >= 0),
    "_in_": contains,
}


def _selection(tree: Any) -> Any:
    """The `member_dot` node under has()'s single argument, or None if it is not one."""
    node = tree
    while isinstance(node, lark.Tree) and node.data != "member_dot":
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return node if isinstance(node, lark.Tree) else None


class SpecEvaluator(Evaluator):
    """cel-python's tree walker with cel-spec's `has()`."""

    def macro_has_eval(self, exprlist: lark.Tree) -> Any:
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
