"""CEL behind one small interface: type-check at load, compile once, evaluate per request.

Two backends evaluate: cel-expr-python (Google's runtime, the default) and cel-python (pure
Python, the portable reference). Type checking always uses cel-expr-python's checker against
protobuf message types built from the declared attribute schema, so a typo such as
`principal.rol` is a load error whichever backend evaluates.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, struct_pb2, timestamp_pb2

# CEL text is scanned in one module; the evaluator and the decision cache take the clock
# analysis from here, as before.
from signoff.engine.celscan import finer_than_a_microsecond, spelled_in
from signoff.engine.schema import SECTIONS, AttributeSchema

# cel-python logs whole activations (request values) at DEBUG, and a failing function's
# arguments at ERROR; signoff reports evaluation failures itself, by rule id only.
logging.getLogger("celpy").setLevel(logging.CRITICAL)

BACKENDS = ("cel-expr", "cel-python")
DEFAULT_BACKEND = "cel-expr"

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[str, tuple[descriptor_pb2.FieldDescriptorProto.Type.ValueType, str]] = {
    "string": (_FDP.TYPE_STRING, ""),
    "int": (_FDP.TYPE_INT64, ""),
    "double": (_FDP.TYPE_DOUBLE, ""),
    "bool": (_FDP.TYPE_BOOL, ""),
    "timestamp": (_FDP.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
    "duration": (_FDP.TYPE_MESSAGE, ".google.protobuf.Duration"),
    "dyn": (_FDP.TYPE_MESSAGE, ".google.protobuf.Value"),
}
_PKG = "signoff.celtypes"
_ISSUE = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")


@dataclass(frozen=True)
class CelIssue:
    """One compile problem at a 1-based line/column inside the expression text."""

    line: int
    column: int
    message: str


class CelCompileError(Exception):
    def __init__(self, issues: list[CelIssue]) -> None:
        self.issues = issues
        super().__init__("; ".join(i.message for i in issues))


class CelEvalError(Exception):
    """Evaluation failed; the message names no request value (safe to log)."""


class Program(Protocol):
    source: str  # the expression as compiled (policy variables already expanded)

    def evaluate(self, activation: Any) -> bool:
        """True only when the expression yields boolean true; raises CelEvalError on error."""
        ...


class Programs(Protocol):
    """Several conditions evaluated in one call of the runtime."""

    def evaluate(self, activation: Any) -> tuple[bool, ...] | None:
        """Each condition's boolean, in order; None when any of them failed to evaluate or
        yielded no bool (the caller then evaluates them one by one, for the exact error)."""
        ...


class Backend(Protocol):
    name: str

    def compile(self, text: str) -> Program: ...

    def compile_many(self, texts: Sequence[str]) -> Programs | None:
        """All of `texts` as one program, or None when they cannot be combined."""
        ...

    def activation(self, data: Mapping[str, Any]) -> Any: ...


# Each condition in a combined program sits on lines of its own, so a `//` comment in it ends
# before the text that joins it to the next.
def _wrapped(text: str) -> str:
    return f"(\n{text}\n)"


def _add_field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, type_name: str) -> None:
    f = msg.field.add(name=name, number=number, json_name=name)
    if type_name.startswith("list<"):
        inner = type_name[5:-1]
        f.label = _FDP.LABEL_REPEATED
        f.type, tn = _SCALARS[inner]
        if tn:
            f.type_name = tn
        return
    f.label = _FDP.LABEL_OPTIONAL
    if type_name == "map<string,string>":
        entry = msg.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=_FDP.TYPE_STRING, label=_FDP.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=_FDP.TYPE_STRING, label=_FDP.LABEL_OPTIONAL)
        f.label = _FDP.LABEL_REPEATED
        f.type = _FDP.TYPE_MESSAGE
        f.type_name = f".{_PKG}.{msg.name}.{entry.name}"
        return
    f.type, tn = _SCALARS[type_name]
    if tn:
        f.type_name = tn


def _message(fdp: descriptor_pb2.FileDescriptorProto, name: str, fields: Mapping[str, str]) -> None:
    msg = fdp.message_type.add(name=name)
    for number, (field_name, type_name) in enumerate(sorted(fields.items()), start=1):
        _add_field(msg, field_name, number, type_name)


def _append(
    msg: descriptor_pb2.DescriptorProto, name: str, message: str, *, repeated: bool = False
) -> None:
    """Add field `name` to `msg`: of message type `message` in this package, or a string."""
    field = msg.field.add(name=name, number=len(msg.field) + 1)
    field.label = _FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL
    if message:
        field.type, field.type_name = _FDP.TYPE_MESSAGE, f".{_PKG}.{message}"
    else:
        field.type = _FDP.TYPE_STRING


def _type_pool(schema: AttributeSchema) -> descriptor_pool.DescriptorPool:
    """Message types mirroring the CEL variables, so the checker knows every field."""
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, struct_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    fdp = descriptor_pb2.FileDescriptorProto(name="signoff/celtypes.proto", package=_PKG)
    fdp.dependency.extend(
        [
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/struct.proto",
        ]
    )
    fdp.syntax = "proto3"
    for section in SECTIONS:
        _message(fdp, f"{section.title()}Attributes", schema.attrs(section))
    _message(fdp, "Field", {"path": "string", "tags": "list<string>"})
    _message(fdp, "Principal", {"id": "string", "kind": "string", "roles": "list<string>"})
    _message(fdp, "Resource", {"kind": "string", "id": "string"})
    _message(fdp, "Context", {"environment": "string", "source_ip": "string", "time": "timestamp"})
    by_name = {m.name: m for m in fdp.message_type}
    for section in ("principal", "resource", "context"):
        _append(by_name[section.title()], "attr", f"{section.title()}Attributes")
    res = by_name["Resource"]
    _append(res, "fields", "Field", repeated=True)
    for extra in ("tags", "paths"):
        _append(res, extra, "", repeated=True)
    pool.Add(fdp)
    return pool


class Checker:
    """Type-checks expressions against the declared schema (cel-expr-python's checker)."""

    def __init__(self, schema: AttributeSchema) -> None:
        self.schema = schema
        self._env = cel.NewEnv(
            _type_pool(schema),
            variables={
                "principal": cel.Type(f"{_PKG}.Principal"),
                "resource": cel.Type(f"{_PKG}.Resource"),
                "context": cel.Type(f"{_PKG}.Context"),
                "payload": cel.Type(f"{_PKG}.PayloadAttributes"),
                "action": cel.Type.STRING,
                "now": cel.Type.TIMESTAMP,
            },
        )

    def check(self, text: str, *, condition: bool = True) -> None:
        """Raise CelCompileError unless `text` parses, type-checks and (for a condition)
        yields a bool; a policy variable may yield any type."""
        try:
            expr = self._env.compile(text)
        except RuntimeError as exc:
            raise CelCompileError(_issues(str(exc))) from None
        precise = finer_than_a_microsecond(text)
        if precise is not None:
            offset, kind = precise
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            raise CelCompileError(
                [
                    CelIssue(
                        line,
                        column,
                        f"{kind} literal finer than a microsecond: signoff keeps times to the "
                        "microsecond (and cel-python can hold nothing finer)",
                    )
                ]
            )
        result = expr.return_type()
        if condition and result != cel.Type.BOOL and result != cel.Type.DYN:
            raise CelCompileError(
                [CelIssue(1, 1, f"condition must be a bool, but it yields {result.name().lower()}")]
            )


def _issues(message: str) -> list[CelIssue]:
    found = [CelIssue(int(m[1]), int(m[2]), m[3].strip()) for m in _ISSUE.finditer(message)]
    return found or [CelIssue(1, 1, message.splitlines()[0] if message else "invalid expression")]


# --- cel-expr-python -------------------------------------------------------------------------


class _CelExprProgram:
    __slots__ = ("_expr", "source")

    def __init__(self, expr: Any, source: str) -> None:
        self._expr = expr
        self.source = source

    def evaluate(self, activation: Any) -> bool:
        try:
            value = self._expr.eval(activation)
        except Exception as exc:
            # cel-cpp raises for some faults instead of returning an error value (a map
            # literal whose keys collide at run time raises RuntimeError ALREADY_EXISTS).
            # Whatever leaves the runtime is this rule's evaluation error: fail closed.
            raise CelEvalError(_safe_cel_expr_error(str(exc), self.source)) from None
        # Errors come back as values whose text is truthy: only a real boolean true matches.
        plain = value.value()
        if plain is True or plain is False:
            return plain
        kind = value.type()
        if kind == cel.Type.BOOL:
            return value.value() is True
        if kind == cel.Type.ERROR:
            raise CelEvalError(_safe_cel_expr_error(str(value.value()), self.source))
        raise CelEvalError(f"condition yielded {kind.name().lower()}, not a bool")


class _CelExprPrograms:
    """Conditions as one string, a character per condition: `(c) ? 't' : 'f'` fails on an
    error or a non-bool, and the concatenation fails when any part does, so a result means
    every condition yielded a plain boolean. Conditions too deep to join in one expression
    are joined in several, each evaluated in turn."""

    __slots__ = ("_count", "_exprs")

    def __init__(self, exprs: list[Any], count: int) -> None:
        self._exprs = exprs
        self._count = count

    def evaluate(self, activation: Any) -> tuple[bool, ...] | None:
        flags = ""
        for expr in self._exprs:
            try:
                value = expr.eval(activation)
            except Exception:
                return None
            # An error comes back as a value whose text is a string too: the type tells.
            if value.type() != _STRING:
                return None
            part = value.value()
            if type(part) is not str:
                return None
            flags += part
        if len(flags) != self._count:
            return None
        return tuple(map(_TRUE.__eq__, flags))


def _joined(parts: Sequence[str]) -> str:
    """`parts` concatenated as a balanced tree: the parser's recursion limit (32 levels) is
    met by the depth of the expression, which then grows with the log of the count."""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    return f"({_joined(parts[:half])} + {_joined(parts[half:])})"


_TRUE = "t"
_STRING = cel.Type.STRING
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _to_cel_expr(value: Any) -> Any:
    # cel-expr-python takes datetimes only at the top level; nested ones must be protobuf
    # well-known types or every read of the enclosing map fails. This runs on every request,
    # so plain values (nearly all of them) are passed through without a call.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        for v in value.values():
            if type(v) not in _PLAIN:
                return {k: v if type(v) in _PLAIN else _to_cel_expr(v) for k, v in value.items()}
        return value  # nothing to convert: handed over as it is, not copied
    if kind is list:
        return [v if type(v) in _PLAIN else _to_cel_expr(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_cel_expr(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cel_expr(v) for v in value]
    if isinstance(value, dt.datetime):
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(value)
        return ts
    if isinstance(value, dt.timedelta):
        d = duration_pb2.Duration()
        d.FromTimedelta(value)
        return d
    return value


# cel-cpp's messages, and what of each may be shown. Its messages can quote values, and even a
# missing map key can come from the request (`m[payload.k]`): only the shape of the fault is
# kept, plus a key name when the policy text itself spells it (then it is no request value).
_CEL_EXPR_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Key not found in map\s*:?\s*\"?(.*?)\"?$"), "no such key"),
    (re.compile(r"Applying SELECT to non-message type"), "field selection on a non-map value"),
    (re.compile(r"No matching overloads found\s*:\s*([\w_]+\([\w<>, .]*\))"), "no such overload"),
    (re.compile(r"No matching overloads"), "no such overload"),
    (re.compile(r"duplicate key in map"), "duplicate key in map literal"),
    (re.compile(r"divide by zero"), "divide by zero"),
    (re.compile(r"modulus by zero"), "modulus by zero"),
    (re.compile(r"integer overflow|overflow", re.IGNORECASE), "numeric overflow"),
    (re.compile(r"Index error|index out of (range|bounds)", re.IGNORECASE), "index out of range"),
    (re.compile(r"cannot convert (\w+) to (\w+)"), "conversion error"),
    (re.compile(r"invalid regular expression"), "invalid regular expression"),
    (re.compile(r"String to (Timestamp|Duration) conversion failed"), "conversion error"),
)
_TYPE_SIGNATURE = re.compile(r"^[\w_]+\((?:[\w<>]+(?:, )?)*\)$")


def _safe_cel_expr_error(text: str, source: str = "") -> str:
    """A message for an evaluation error that names no request value."""
    first = text.splitlines()[0] if text else ""
    detail = first.split(":", 1)[1].strip() if ":" in first else first
    for pattern, shape in _CEL_EXPR_ERRORS:
        m = pattern.search(detail)
        if m is None:
            continue
        if shape == "no such key":
            key = m[1].strip().strip('"')
            if key and spelled_in(key, source):
                return f"no such key: {key}"
            return shape
        if shape == "no such overload" and m.groups() and _TYPE_SIGNATURE.match(m[1] or ""):
            return f"no such overload: {m[1]}"  # operator and operand types only
        if shape == "conversion error" and m.groups() and m.lastindex == 2:
            return f"cannot convert {m[1]} to {m[2]}"
        return shape
    code = first.split(":", 1)[0].strip()
    return (
        f"evaluation error ({code})"
        if code.isupper() and code.isidentifier()
        else ("evaluation error")
    )


class CelExprBackend:
    name = "cel-expr"

    def __init__(self) -> None:
        self._env = cel.NewEnv(
            variables={
                "principal": cel.Type.DYN,
                "resource": cel.Type.DYN,
                "context": cel.Type.DYN,
                "payload": cel.Type.DYN,
                "action": cel.Type.STRING,
                "now": cel.Type.TIMESTAMP,
            }
        )

    def compile(self, text: str) -> Program:
        try:
            return _CelExprProgram(self._env.compile(text), text)
        except RuntimeError as exc:
            raise CelCompileError(_issues(str(exc))) from None

    def compile_many(self, texts: Sequence[str]) -> Programs | None:
        exprs = self._compile_flags(texts)
        return None if exprs is None else _CelExprPrograms(exprs, len(texts))

    def _compile_flags(self, texts: Sequence[str]) -> list[Any] | None:
        """Programs whose results, concatenated, are the flags of `texts`: one if they can
        be joined, else those of each half; None when even one condition cannot be."""
        flags = [f"({_wrapped(t)} ? '{_TRUE}' : 'f')" for t in texts]
        try:
            return [self._env.compile(_joined(flags))]
        except RuntimeError:
            if len(texts) == 1:
                return None
        half = len(texts) // 2
        first, second = self._compile_flags(texts[:half]), self._compile_flags(texts[half:])
        return None if first is None or second is None else first + second

    def activation(self, data: Mapping[str, Any]) -> Any:
        # Timestamps and durations can only sit in attribute maps, context.time and the
        # payload (the evaluator builds everything else from strings); top-level `now` is
        # accepted as a datetime. Converting just those keeps this off the per-request bill,
        # and a section with nothing to convert is handed over without a copy.
        out = dict(data)
        for section in ("principal", "resource", "context"):
            part = data.get(section)
            if isinstance(part, dict) and ("attr" in part or "time" in part):
                attr = part.get("attr")
                new_attr = _to_cel_expr(attr) if attr is not None else None
                time = part.get("time")
                new_time = _to_cel_expr(time) if time is not None else None
                if new_attr is not attr or new_time is not time:
                    part = dict(part)
                    if attr is not None:
                        part["attr"] = new_attr
                    if time is not None:
                        part["time"] = new_time
                    out[section] = part
        if "payload" in data:
            out["payload"] = _to_cel_expr(data["payload"])
        return self._env.Activation(out)


# --- cel-python -----------------------------------------------------------------------------


class _CelPythonProgram:
    def __init__(self, runner: Any, source: str) -> None:
        self._runner = runner
        self.source = source
        # cel-python's runner keeps per-evaluation state on itself.
        self._lock = threading.Lock()

    def evaluate(self, activation: Any) -> bool:
        from celpy import celtypes
        from celpy.evaluation import CELEvalError

        try:
            with self._lock:
                value = self._runner.evaluate(activation)
        except CELEvalError as exc:
            raise CelEvalError(_safe_celpy_error(exc, self.source)) from None
        except Exception as exc:  # a bug inside cel-python must still fail closed
            raise CelEvalError(f"cel-python raised {type(exc).__name__}") from None
        if isinstance(value, CELEvalError):
            raise CelEvalError(_safe_celpy_error(value, self.source))
        if isinstance(value, celtypes.BoolType):
            return bool(value)
        raise CelEvalError(f"condition yielded {type(value).__name__}, not a bool")


class _CelPythonPrograms:
    """Conditions as one list literal; any element that is not a boolean (an error among
    them) sends the caller to the one-by-one evaluation."""

    def __init__(self, runner: Any, count: int) -> None:
        self._runner = runner
        self._count = count
        self._lock = threading.Lock()

    def evaluate(self, activation: Any) -> tuple[bool, ...] | None:
        from celpy import celtypes

        try:
            with self._lock:
                values = self._runner.evaluate(activation)
        except Exception:
            return None
        if not isinstance(values, list) or len(values) != self._count:
            return None
        if not all(isinstance(v, celtypes.BoolType) for v in values):
            return None
        return tuple(bool(v) for v in values)


_CELPY_MEMBER = re.compile(r"^no such member in mapping: '(.*)'$")
# cel-python's messages (and exception types), in the words cel-expr's errors get above, so an
# explanation reads the same on either backend.
_CELPY_ERRORS: tuple[tuple[str, str], ...] = (
    ("does not support field selection", "field selection on a non-map value"),
    ("has() needs a map", "field selection on a non-map value"),
    ("no such key", "no such key"),
    ("divide by zero", "divide by zero"),
    ("modulus by zero", "modulus by zero"),
    ("overflow", "numeric overflow"),
    ("invalid_argument", "index out of range"),
    ("index out of range", "index out of range"),
    ("conversion error", "conversion error"),
    ("invalid timezone", "invalid timezone"),
    ("invalid regular expression", "invalid regular expression"),
    ("match error", "invalid regular expression"),
    ("no matching overload", "no such overload"),
    ("no such overload", "no such overload"),
)


def _safe_celpy_error(exc: BaseException, source: str = "") -> str:
    # cel-python embeds the whole activation (request values) in some messages: keep only
    # the kind of failure, and a key only when the policy text spells it.
    text = str(exc.args[0] if exc.args else "")
    member = _CELPY_MEMBER.match(text)
    if member is not None:
        key = member[1]
        return f"no such key: {key}" if spelled_in(key, source) else "no such key"
    if text.startswith("return error for overflow") and len(exc.args) > 1:
        cause = exc.args[1]
        if cause is not ValueError and isinstance(cause, type):
            return "conversion error"
    lowered = text.lower()
    for shape, safe in _CELPY_ERRORS:
        if shape in lowered:
            return safe
    return "evaluation error"


def _to_celpy(value: Any) -> Any:
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, dt.datetime):
        return celtypes.TimestampType(value)
    if isinstance(value, dt.timedelta):
        return celtypes.DurationType(value)
    if isinstance(value, list | tuple):
        return celtypes.ListType([_to_celpy(v) for v in value])
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): _to_celpy(v) for k, v in value.items()})
    raise TypeError(f"cannot convert {type(value).__name__} to CEL")


class CelPythonBackend:
    """cel-python evaluates in Python, each condition costing about what a whole decision
    does on cel-expr: skipping conditions (a rule whose roles are not held, the rules after a
    deny) then saves more than one combined call does (measured 1.15x the CPU per decision on
    bench/inprocess.py's workload). So `compile_many` combines only when `combine` is set,
    which the tests do to hold the combined evaluation to both backends' semantics."""

    name = "cel-python"

    def __init__(self, *, combine: bool = False) -> None:
        import celpy

        from signoff.engine.celpy_spec import SpecRunner

        self._env = celpy.Environment(runner_class=SpecRunner)
        self._combine = combine

    def compile(self, text: str) -> Program:
        from celpy.celparser import CELParseError

        try:
            from signoff.engine.celpy_spec import FUNCTIONS

            ast = self._env.compile(text)
            return _CelPythonProgram(self._env.program(ast, functions=FUNCTIONS), text)
        except CELParseError as exc:
            line = getattr(exc, "line", None) or 1
            column = getattr(exc, "column", None) or 1
            raise CelCompileError(
                [CelIssue(line, column, "cel-python cannot parse this")]
            ) from None

    def compile_many(self, texts: Sequence[str]) -> Programs | None:
        from celpy.celparser import CELParseError

        from signoff.engine.celpy_spec import FUNCTIONS

        if not self._combine:
            return None
        try:
            ast = self._env.compile("[" + ", ".join(_wrapped(t) for t in texts) + "]")
            runner = self._env.program(ast, functions=FUNCTIONS)
        except CELParseError:
            return None
        return _CelPythonPrograms(runner, len(texts))

    def activation(self, data: Mapping[str, Any]) -> Any:
        return {k: _to_celpy(v) for k, v in data.items()}


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "cel-expr": CelExprBackend,
    "cel-python": CelPythonBackend,
}


def backend(name: str) -> Backend:
    """The evaluation backend called `name` (one of BACKENDS)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        choices = ", ".join(BACKENDS)
        raise ValueError(f"unknown CEL backend {name!r}; choose one of {choices}") from None
