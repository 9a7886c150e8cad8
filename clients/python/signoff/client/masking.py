"""The one implementation of signoff masking plans; docs/masking.md is its specification."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from signoff.client.errors import MaskingError
from signoff.client.partial import partial_text
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan

if TYPE_CHECKING:  # the API's messages are accepted, but only imported when one is passed
    from signoff.v1 import signoff_pb2

__all__ = [
    "HASH_PREFIX",
    "REDACTED",
    "MaskingError",
    "apply_mask",
    "canonical_form",
    "key_id",
    "plan_from_proto",
]

REDACTED = "[REDACTED]"
HASH_PREFIX = "hmac-sha256:"

_KEY_ID_MESSAGE = b"signoff-key-id"
_WILDCARD = "*"
# Only the canonical decimal spelling indexes a list, so "01" and "+1" never alias index 1.
_INDEX = re.compile(r"0|[1-9][0-9]*")
# Higher wins when several entries hit the same value.
_STRICTNESS: dict[int, int] = {
    MaskOperator.PARTIAL: 1,
    MaskOperator.EMAIL: 2,
    MaskOperator.HASH: 3,
    MaskOperator.REDACT: 4,
    MaskOperator.NULLIFY: 5,
}
# The API's Verdict numbers that let data go (ALLOW, MASK), and each verdict's name.
_RELEASING = frozenset({1, 3})
_VERDICT_NAMES = {0: "UNSPECIFIED", 1: "ALLOW", 2: "DENY", 3: "MASK", 4: "REQUIRE_APPROVAL"}
# The record's data model: JSON. bool is an int, so it is covered.
_SCALARS = (str, int, float, type(None))
# Deep enough for any record a policy can describe, and far from Python's recursion limit, so
# a deep or looping record fails as MaskingError rather than RecursionError.
MAX_DEPTH = 256

# A concrete position in a record: dict keys and list indices from the root down.
_Location: TypeAlias = tuple[Any, ...]


@dataclass(frozen=True)
class _Rule:
    """One validated plan entry, with its hash key resolved up front."""

    segments: tuple[str, ...]
    operator: int
    where: str
    keep_first: int = 0
    keep_last: int = 0
    key: bytes = b""


def apply_mask(
    record: Any,
    plan: MaskPlan | signoff_pb2.MaskingPlan | signoff_pb2.CheckResponse,
    *,
    keys: Mapping[str, bytes] | None = None,
    lenient: bool = False,
) -> Any:
    """Return a masked deep copy of `record`; `record` itself is never modified.

    `record` is JSON-like: objects (any Mapping with str keys, a namedtuple or a dataclass
    instance), arrays (list or tuple), str, int, float, bool and None, nested freely up to
    MAX_DEPTH; a list at the top is treated as rows. Anything else is refused. The copy is made
    of plain dicts and lists. `plan` is a plain MaskPlan, the API's MaskingPlan, or a
    CheckResponse whose masking_plan is used. `keys` maps a key id (see `key_id`) to the HMAC
    key used by HASH entries naming it.

    A path the record cannot address (a name on an array, a segment on a string, number or
    boolean, or an entry that selects nothing because a member or index is missing) raises
    MaskingError naming the path; with `lenient=True` such an entry masks nothing instead.

    Raises MaskingError when `plan` is a CheckResponse whose verdict is not ALLOW or MASK, and,
    before touching anything, when the plan has an unusable entry: an empty
    path or path segment, an unspecified or unknown operator, or a HASH entry whose key id is
    not in `keys`. Raises MaskingError when a value to hash cannot be put in canonical form.
    See docs/masking.md for the exact semantics.
    """
    if not isinstance(plan, MaskPlan) and hasattr(plan, "DESCRIPTOR"):
        plan = _from_message(plan)
    if not isinstance(plan, MaskPlan):
        raise TypeError(
            f"plan must be a MaskPlan, a MaskingPlan or a CheckResponse, not {type(plan).__name__}"
        )
    rules = [_rule(index, entry, keys) for index, entry in enumerate(plan.fields)]
    result = _copy(record, 0, set())
    targets: dict[_Location, _Rule] = {}
    for rule in rules:
        segments = rule.segments
        if isinstance(result, list) and segments[0] != _WILDCARD:
            segments = (_WILDCARD, *segments)
        for location in _resolve(result, segments, rule.where, strict=not lenient):
            current = targets.get(location)
            targets[location] = rule if current is None else _stricter(current, rule)
    # Deepest first: a value is masked before any ancestor, so an ancestor's operator only ever
    # sees already-masked descendants and no weaker entry can reveal what a stricter one hid.
    for location in sorted(targets, key=len, reverse=True):
        parent = result
        for step in location[:-1]:
            parent = parent[step]
        parent[location[-1]] = _transform(targets[location], parent[location[-1]])
    return result


def _from_message(message: Any) -> Any:
    """A plain plan from the API's MaskingPlan or CheckResponse (checking its verdict); any
    other message is returned as it came, for apply_mask to refuse."""
    # Imported here: the service's core masks with plain plans and never loads protobuf code.
    from signoff.v1 import signoff_pb2

    if isinstance(message, signoff_pb2.CheckResponse):
        require_release(message.verdict, message.decision_id)
        return plan_from_proto(message.masking_plan)
    if isinstance(message, signoff_pb2.MaskingPlan):
        return plan_from_proto(message)
    return message


def plan_from_proto(message: signoff_pb2.MaskingPlan) -> MaskPlan:
    """The API's MaskingPlan as a plain MaskPlan; operators stay numbers, known or not."""
    return MaskPlan(
        tuple(
            MaskEntry(
                path=entry.path,
                operator=_operator(int(entry.operator)),
                keep_first=entry.keep_first,
                keep_last=entry.keep_last,
                key_id=entry.key_id,
                rule_ids=tuple(entry.rule_ids),
            )
            for entry in message.fields
        )
    )


def _operator(number: int) -> int:
    try:
        return MaskOperator(number)
    except ValueError:  # refused with its number when the plan is used
        return number


def require_release(verdict: int, decision_id: str) -> None:
    """Raise MaskingError unless `verdict` (a proto Verdict number) lets data go: ALLOW or MASK.

    A denied request, or one still waiting for sign-off, has no data to release; masking it
    anyway would hand the caller a record it must not send, with nothing to say so.
    """
    if verdict not in _RELEASING:
        name = _VERDICT_NAMES.get(verdict, str(verdict))
        raise MaskingError(
            f"decision {decision_id!r} is {name}: its data may not be released, masked or not"
        )


def key_id(key: bytes) -> str:
    """Return the public identifier of an HMAC key: it names the key without revealing it."""
    return hmac.new(key, _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def canonical_form(value: Any) -> bytes:
    """Return the bytes HASH feeds to HMAC: a string's UTF-8, else its canonical JSON (RFC 8785).

    Integers are written as exact decimals; floats as ECMAScript writes numbers. Raises
    MaskingError for values JSON cannot carry (NaN, infinities, non-string keys, other types).
    """
    text = value if isinstance(value, str) else _json(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MaskingError("value contains a lone surrogate, which has no UTF-8 form") from err


def _rule(index: int, entry: MaskEntry, keys: Mapping[str, bytes] | None) -> _Rule:
    where = f"masking plan entry {index} (path {entry.path!r})"
    segments = tuple(entry.path.split("."))
    if "" in segments:
        raise MaskingError(f"{where}: path and path segments must not be empty")
    operator = int(entry.operator)
    if operator not in _STRICTNESS:
        name = "MASK_OPERATOR_UNSPECIFIED" if operator == 0 else str(operator)
        raise MaskingError(f"{where}: unsupported mask operator {name}")
    if operator == MaskOperator.PARTIAL:
        return _Rule(segments, operator, where, entry.keep_first, entry.keep_last)
    if operator == MaskOperator.HASH:
        key = (keys or {}).get(entry.key_id)
        if key is None:
            raise MaskingError(f"{where}: no hash key for key id {entry.key_id!r}")
        if not isinstance(key, bytes) or not key:
            raise MaskingError(f"{where}: hash key {entry.key_id!r} must be non-empty bytes")
        if not hmac.compare_digest(key_id(key), entry.key_id):
            # A wrong key would still produce pseudonyms, just ones that never join.
            raise MaskingError(f"{where}: the key given for id {entry.key_id!r} has another id")
        return _Rule(segments, operator, where, key=key)
    return _Rule(segments, operator, where)


def _stricter(current: _Rule, new: _Rule) -> _Rule:
    if _STRICTNESS[new.operator] != _STRICTNESS[current.operator]:
        return new if _STRICTNESS[new.operator] > _STRICTNESS[current.operator] else current
    if current.operator == MaskOperator.PARTIAL:
        return _Rule(
            current.segments,
            current.operator,
            current.where,
            min(current.keep_first, new.keep_first),
            min(current.keep_last, new.keep_last),
        )
    # Same operator otherwise: the earlier entry stays, so plan order decides the HASH key.
    return current


def _copy(value: Any, depth: int, open_: set[int]) -> Any:
    # Not copy.deepcopy: it keeps shared sub-objects shared, and masking one occurrence must not
    # change another that sits at an unmasked path. Messages name types and depths only: keys
    # and values are record data.
    if isinstance(value, _SCALARS):
        return value
    if depth >= MAX_DEPTH:
        raise MaskingError(f"record is nested deeper than {MAX_DEPTH} levels")
    if id(value) in open_:
        raise MaskingError(f"record contains itself (at depth {depth})")
    open_.add(id(value))
    try:
        if isinstance(value, list) or (isinstance(value, tuple) and not _is_namedtuple(value)):
            return [_copy(item, depth + 1, open_) for item in value]
        members = _members(value, depth)
        copied: dict[str, Any] = {}
        for key, item in members:
            if not isinstance(key, str):
                raise MaskingError(
                    f"record has an object key of type {type(key).__name__} (at depth {depth}): "
                    "object keys must be strings"
                )
            copied[key] = _copy(item, depth + 1, open_)
        return copied
    finally:
        open_.discard(id(value))


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and isinstance(getattr(value, "_fields", None), tuple)


def _members(value: Any, depth: int) -> Iterable[tuple[Any, Any]]:
    """The members of a value read as an object; MaskingError for a type that is no record."""
    if isinstance(value, Mapping):
        return value.items()
    if _is_namedtuple(value):
        # Read by field name, so paths written for the row's fields find them.
        return zip(value._fields, value, strict=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    # A deque, a set, bytes, a date or any other object: passing it through could carry a
    # value a path was meant to mask, and reading its attributes would be a guess.
    raise MaskingError(
        f"cannot mask a value of type {type(value).__name__} (at depth {depth}): records are "
        "made of mappings, namedtuples, dataclasses, lists, tuples, str, int, float, bool and None"
    )


def _resolve(root: Any, segments: tuple[str, ...], where: str, *, strict: bool) -> list[_Location]:
    found: list[tuple[_Location, Any]] = [((), root)]
    missing = False
    for segment in segments:
        deeper: list[tuple[_Location, Any]] = []
        for location, node in found:
            if isinstance(node, dict):
                if segment == _WILDCARD:
                    deeper.extend(((*location, key), item) for key, item in node.items())
                elif segment in node:
                    deeper.append(((*location, segment), node[segment]))
                else:
                    missing = True
            elif isinstance(node, list):
                if segment == _WILDCARD:
                    deeper.extend(((*location, i), item) for i, item in enumerate(node))
                elif not _INDEX.fullmatch(segment):
                    if strict:
                        raise MaskingError(
                            f"{where}: segment {segment!r} meets an array, which only '*' or an "
                            "index can address"
                        )
                elif int(segment) < len(node):
                    deeper.append(((*location, int(segment)), node[int(segment)]))
                else:
                    missing = True
            elif node is not None and strict:
                raise MaskingError(
                    f"{where}: segment {segment!r} meets a {_kind(node)}, which has no members"
                )
        found = deeper
    if strict and missing and not found:
        raise MaskingError(
            f"{where}: selects nothing in this record (a member or index is missing)"
        )
    return [location for location, _ in found]


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    return "boolean" if isinstance(value, bool) else "number"


def _transform(rule: _Rule, value: Any) -> Any:
    if rule.operator == MaskOperator.NULLIFY:
        return None
    if rule.operator == MaskOperator.REDACT:
        return REDACTED
    if rule.operator == MaskOperator.HASH:
        digest = hmac.new(rule.key, canonical_form(value), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:32]
    if rule.operator == MaskOperator.EMAIL:
        return _email(value)
    return _partial(value, rule.keep_first, rule.keep_last)


def _email(value: Any) -> str:
    if isinstance(value, str) and value.count("@") == 1:
        local, domain = value.split("@")
        if local and domain:
            return "***@" + domain
    return REDACTED


def _partial(value: Any, keep_first: int, keep_last: int) -> str:
    text = value if isinstance(value, str) else canonical_form(value).decode("utf-8")
    masked = partial_text(text, keep_first, keep_last)
    # Every hidden character changes ("*" is a separator), so only text without content would
    # come back as it was, and a masked value must never equal the raw one.
    return REDACTED if masked == text and text else masked


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        try:
            return str(int(value))
        except ValueError:
            # Past sys.get_int_max_str_digits(): say so without the digits.
            raise MaskingError(
                f"cannot hash an integer of {value.bit_length()} bits: too many digits"
            ) from None
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                # The key is record data: name only its type.
                raise MaskingError(f"cannot hash an object with a {type(key).__name__} key")
        # RFC 8785 orders keys by UTF-16 code units, which differs from code point order
        # once characters beyond the Basic Multilingual Plane are involved.
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        members = (f"{json.dumps(key, ensure_ascii=False)}:{_json(value[key])}" for key in keys)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(item) for item in value) + "]"
    raise MaskingError(f"cannot hash a value of type {type(value).__name__}")


def _number(value: float) -> str:
    """Write a float as ECMAScript's Number::toString does (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        raise MaskingError(f"cannot hash the non-finite number {value!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, the same digits ECMAScript chooses.
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    digits = significant.rstrip("0")
    # value = 0.<digits> x 10**point, the form the ECMAScript algorithm is stated in.
    point = int(exponent or "0") - len(fraction) + len(significant)
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        text = digits[0] + ("." + digits[1:] if count > 1 else "")
        text += f"e{'+' if power >= 0 else '-'}{abs(power)}"
    return sign + text
