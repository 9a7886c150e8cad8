"""Declared attribute types: how policies type-check and how request values are validated."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signoff.errors import InvalidRequest

TYPES = (
    "string",
    "int",
    "double",
    "bool",
    "timestamp",
    "duration",
    "list<string>",
    "list<int>",
    "list<double>",
    "map<string,string>",
    "dyn",
)
SECTIONS = ("principal", "resource", "context", "payload")
MAX_NAME_LENGTH = 128
# google.protobuf.Duration's range, which both CEL backends enforce.
MAX_DURATION_SECONDS = 315_576_000_000

# JSON values (`dyn` attributes) nest at most this deep; the edge bounds whole messages itself.
MAX_JSON_DEPTH = 32
_MIN_INT64 = -(2**63)
_MAX_INT64 = 2**63 - 1

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> dt.timedelta:
    """Parse '1h30m', '45s', ... (the policy-file duration syntax)."""
    m = _DURATION.match(text)
    if not text or m is None:
        raise ValueError(f"invalid duration {text[:40]!r}: expected e.g. '30m', '1h', '2h30m'")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    total = h * 3600 + mi * 60 + s
    if total > MAX_DURATION_SECONDS:
        raise ValueError("duration out of range (CEL allows about 10,000 years)")
    return dt.timedelta(seconds=total)


@dataclass(frozen=True)
class AttributeSchema:
    """Declared attribute types per section; anything undeclared is rejected."""

    sections: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def attrs(self, section: str) -> Mapping[str, str]:
        return self.sections.get(section, {})


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(where, "expected an integer, got a bool")
    if isinstance(value, int):
        if not _MIN_INT64 <= value <= _MAX_INT64:
            raise InvalidRequest(where, "integer out of the 64-bit range")
        return value
    # Struct carries every JSON number as a double; accept only exact integers.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) > 2**53:
            raise InvalidRequest(where, "integer out of the exactly representable range")
        return int(value)
    raise InvalidRequest(where, "expected an integer")


def _double(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(where, "expected a number")
    return _finite(value, where)


def _finite(value: int | float, where: str) -> float:
    # NaN compares false with everything, so `score >= 0.8` would be false and a threshold
    # deny rule silently skipped; JSON has no such values, so they are refused as input.
    try:
        number = float(value)
    except OverflowError:
        raise InvalidRequest(where, "number out of the double range") from None
    if not math.isfinite(number):
        raise InvalidRequest(where, "NaN and infinity are not numbers signoff accepts")
    return number


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(where, "expected a string")
    return text(value, where)


def text(value: str, where: str) -> str:
    """`value`, refused if it holds NUL: cel-expr's runtime ends a string at NUL, so
    `principal.id == 'bob'` would hold for "bob\\0anything" there and not on cel-python."""
    if "\0" in value:
        raise InvalidRequest(where, "NUL characters are not allowed in text")
    return value


def timestamp(value: Any, where: str) -> dt.datetime:
    """An RFC 3339 timestamp with an offset, as UTC; InvalidRequest naming `where` otherwise."""
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, str):
        try:
            result = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(where, "expected an RFC 3339 timestamp") from None
    else:
        raise InvalidRequest(where, "expected an RFC 3339 timestamp string")
    if result.tzinfo is None:
        raise InvalidRequest(where, "timestamp needs a time zone offset (e.g. 'Z')")
    try:
        return result.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidRequest(where, "timestamp out of range") from None


def _duration(value: Any, where: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise InvalidRequest(where, "expected a duration like '90s', '15m' or '1h'")


def _json(value: Any, where: str, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequest(where, f"value nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        return text(value, where)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # CEL's JSON mapping: every JSON number is a double, so `used / quota > 1.0` divides
        # as doubles and `n == 1` still holds (CEL compares numbers across types by value).
        return _finite(value, where)
    if isinstance(value, list | tuple):
        return [_json(v, where, depth + 1) for v in value]
    if isinstance(value, dict):
        return {text(str(k), where): _json(v, where, depth + 1) for k, v in value.items()}
    raise InvalidRequest(where, f"unsupported value of type {type(value).__name__}")


def convert(type_name: str, value: Any, where: str) -> Any:
    """Validate and convert one request value to its declared type."""
    if type_name == "string":
        return _string(value, where)
    if type_name == "int":
        return _int(value, where)
    if type_name == "double":
        return _double(value, where)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise InvalidRequest(where, "expected a bool")
        return value
    if type_name == "timestamp":
        return timestamp(value, where)
    if type_name == "duration":
        return _duration(value, where)
    if type_name.startswith("list<"):
        if not isinstance(value, list):
            raise InvalidRequest(where, "expected a list")
        inner = type_name[5:-1]
        return [convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if type_name == "map<string,string>":
        # Its keys are caller data like its values: an error names the attribute only.
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise InvalidRequest(where, "expected an object of strings")
        for k, v in value.items():
            text(str(k), where)
            text(v, where)
        return {str(k): v for k, v in value.items()}
    if type_name == "dyn":
        return _json(value, where)
    raise InvalidRequest(where, f"unknown declared type {type_name!r}")


def convert_section(
    schema: AttributeSchema, section: str, values: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Validate a request's attribute map against the section's declarations."""
    declared = schema.attrs(section)
    out: dict[str, Any] = {}
    for key, value in values.items():
        type_name = declared.get(key)
        if type_name is None and len(key) > MAX_NAME_LENGTH:
            raise InvalidRequest(where, f"attribute name longer than {MAX_NAME_LENGTH} characters")
        if type_name is None:
            raise InvalidRequest(
                f"{where}.{key}", f"attribute not declared in the {section} schema"
            )
        if value is None:
            continue  # JSON null means absent: reading it fails closed like a missing key
        out[key] = convert(type_name, value, f"{where}.{key}")
    return out


# Per declared type, the values `convert` takes without a question, told apart by a type test,
# and what it makes of them; anything else (and every refusal) is left to `convert` itself.
_MISS: Any = object()


def _plain_string(v: Any) -> Any:
    return v if type(v) is str and "\0" not in v else _MISS


def _plain_int(v: Any) -> Any:
    if type(v) is int:
        return v if _MIN_INT64 <= v <= _MAX_INT64 else _MISS
    # Struct carries every JSON number as a double: an exact integer is the int it spells.
    if type(v) is float and v.is_integer() and abs(v) <= 2**53:
        return int(v)
    return _MISS


def _plain_double(v: Any) -> Any:
    return v if type(v) is float and math.isfinite(v) else _MISS


def _plain_bool(v: Any) -> Any:
    return v if type(v) is bool else _MISS


def _never(v: Any) -> Any:
    return _MISS


_PLAIN_OF: dict[str, Callable[[Any], Any]] = {
    "string": _plain_string,
    "int": _plain_int,
    "double": _plain_double,
    "bool": _plain_bool,
}

SectionConverter = Callable[[Mapping[str, Any], str], dict[str, Any]]


def section_converter(schema: AttributeSchema, section: str) -> SectionConverter:
    """`convert_section` for one section, with the declarations looked up once: a value of
    the plain kind its declared type expects costs one type test; anything else (and every
    refusal) goes through `convert_section` itself, so the results and errors are its own."""
    plain = {k: _PLAIN_OF.get(t, _never) for k, t in schema.attrs(section).items()}

    def run(values: Mapping[str, Any], where: str) -> dict[str, Any]:
        if not values:
            return {}
        out: dict[str, Any] = {}
        for key, value in values.items():
            check = plain.get(key)
            converted = _MISS if check is None or value is None else check(value)
            if converted is _MISS:
                return convert_section(schema, section, values, where)
            out[key] = converted
        return out

    return run
