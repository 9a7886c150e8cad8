"""The one implementation of signoff masking plans; docs/masking.md is its specification."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from signoff.client.errors import MaskingError
from signoff.client.partial import partial_text
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan

if TYPE_CHECKING:  # the API's messages are accepted, but only imported when one is passed
    from signoff.v1 import signoff_pb2

__all__ = [
    "HASH_PREFIX",
    "REDACTED",
    "CompiledMask",
    "MaskingError",
    "apply_mask",
    "canonical_form",
    "compile_mask",
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
    key: bytes = field(default=b"", repr=False)

    @functools.cached_property
    def fn(self) -> Callable[[Any], Any]:
        """The operator as one function of the value, bound to its options."""
        if self.operator == MaskOperator.NULLIFY:
            return _nullify
        if self.operator == MaskOperator.REDACT:
            # str.format ignores arguments its text has no field for: REDACTED whatever the
            # value, called in C (REDACTED has no braces).
            return REDACTED.format
        if self.operator == MaskOperator.HASH:
            return functools.partial(_hash, self.key)
        if self.operator == MaskOperator.EMAIL:
            return _email
        return functools.partial(_partial, self.keep_first, self.keep_last)


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
    See docs/masking.md for the exact semantics. To mask many records with one plan, compile
    it once with `compile_mask`.
    """
    if not isinstance(plan, MaskPlan) and hasattr(plan, "DESCRIPTOR"):
        plan = _from_message(plan)
    if not isinstance(plan, MaskPlan):
        return compile_mask(plan, keys=keys, lenient=lenient).apply(record)  # refused there
    # The same plan comes again and again (one per policy), so its compiled form is kept,
    # under the keys its HASH entries use: other keys must compile (and be checked) anew.
    hash_keys = tuple(
        (keys or {}).get(entry.key_id)
        for entry in plan.fields
        if entry.operator == MaskOperator.HASH
    )
    try:
        cache_key = (plan, lenient, hash_keys)
        compiled = _COMPILED.get(cache_key)
    except TypeError:  # an unhashable key or entry field: compiled, and refused or used, anew
        return compile_mask(plan, keys=keys, lenient=lenient).apply(record)
    if compiled is None:
        compiled = compile_mask(plan, keys=keys, lenient=lenient)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[cache_key] = compiled
    return compiled.apply(record)


# apply_mask's compiled plans, by (plan, lenient, the HASH entries' keys); bounded, so plans
# made up on the fly cannot grow it, and cleared whole when full (cheap, and safe under threads).
_COMPILED: dict[tuple[MaskPlan, bool, tuple[bytes | None, ...]], CompiledMask] = {}
_COMPILED_MAX = 256


def compile_mask(
    plan: MaskPlan | signoff_pb2.MaskingPlan | signoff_pb2.CheckResponse,
    *,
    keys: Mapping[str, bytes] | None = None,
    lenient: bool = False,
) -> CompiledMask:
    """Validate `plan` (and its keys) once and return what applies it to any number of records.

    Raises exactly what `apply_mask` raises for the plan itself, before any record is seen;
    `CompiledMask.apply(record)` then gives exactly `apply_mask(record, plan, ...)`.
    """
    if not isinstance(plan, MaskPlan) and hasattr(plan, "DESCRIPTOR"):
        plan = _from_message(plan)
    if not isinstance(plan, MaskPlan):
        raise TypeError(
            f"plan must be a MaskPlan, a MaskingPlan or a CheckResponse, not {type(plan).__name__}"
        )
    return CompiledMask(
        tuple(_rule(index, entry, keys) for index, entry in enumerate(plan.fields)),
        lenient=lenient,
    )


# A walk state: which rules are still matching at a position, each with the segments it has
# left. A rule with none left targets the position.
_Elements: TypeAlias = frozenset[tuple[int, tuple[str, ...]]]
# The value types a record is made of that hold nothing, by exact type, for one C-level test.
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})
_STR_TYPE = frozenset({str})


class _Fallback(Exception):
    """The fast walk met something only the reference order can report exactly."""


@dataclass(eq=False)
class _State:
    """What happens at a position reached by a set of rules: the merged operator there, and
    for each child (by key or index) the state of the rules that go on."""

    rule: _Rule | None  # the merged entry of the rules that end here
    fn: Callable[[Any], Any] | None  # its operator
    targets: int  # bitmask of the rules that end here
    goes_on: bool  # some rule has segments left
    named: dict[str, _State]  # object member -> state (named rules, plus "*" rules)
    named_items: tuple[tuple[str, _State], ...]
    other: _State | None  # state of a member no name selects ("*" rules only)
    named_rules: dict[str, int]  # name -> bitmask of the rules naming it here
    indexed: dict[int, _State]  # array index -> state
    index_other: _State | None
    index_rules: dict[int, int]  # index -> bitmask of the rules naming it here
    names_on_array: bool  # some rule names a member, which an array does not have
    # (name, operator) per member when every rule here names a member and ends there: an object
    # of leaves is then masked by copying it and replacing those members.
    leaves: tuple[tuple[str, Callable[[Any], Any]], ...] | None


class CompiledMask:
    """A masking plan compiled once: validated entries and a walk plan over their paths.

    `apply` copies a record once and masks it in the same pass: each position knows, from a
    precomputed state, which entries reach it and what its children's states are, so a field no
    entry names is copied without a look and a named field is found by one dict lookup. Records
    the fast pass cannot finish (any error, or a shape only the reference order can report
    exactly) are masked by the reference algorithm of docs/masking.md, which raises the same
    error the specification's order gives.
    """

    def __init__(self, rules: tuple[_Rule, ...], *, lenient: bool) -> None:
        self._rules = rules
        self.lenient = lenient
        self._states: dict[_Elements, _State] = {}
        self._object_root = self._state(
            frozenset((i, rule.segments) for i, rule in enumerate(rules))
        )
        root = self._object_root
        self._leaves = root.leaves if root is not None and root.fn is None else None
        # On rows (an array at the top) a path not starting with "*" applies to every row.
        self._rows_root = self._state(
            frozenset(
                (i, rule.segments if rule.segments[0] == _WILDCARD else (_WILDCARD, *rule.segments))
                for i, rule in enumerate(rules)
            )
        )

    def apply(self, record: Any) -> Any:
        """Return the masked copy of `record`, exactly as `apply_mask` does."""
        try:
            leaves = self._leaves
            if leaves is not None and type(record) is dict and _flat(record):
                # One row of leaves, the common call: masked here, without the walk's calls.
                out = record.copy()
                for name, fn in leaves:
                    try:
                        out[name] = fn(out[name])
                    except KeyError:
                        if not self.lenient:
                            raise _Fallback from None  # the entry selects nothing here
                return out
            return self._fast(record)
        except (_Fallback, MaskingError):
            return _apply_reference(self._rules, record, lenient=self.lenient)

    def field(self, name: str) -> tuple[_Rule | None, bool]:
        """For the top-level field `name` of rows: the merged entry that masks its values (None
        when none does) and whether some entry reaches inside its values."""
        state = self._field_state(name)
        return (None, False) if state is None else (state.rule, state.goes_on)

    def column(self, name: str, values: Iterable[Any], found: list[int] | None = None) -> list[Any]:
        """The values of the top-level field `name` of rows, masked as `apply` masks them in
        the rows, as a list.

        An entry naming another field is not this column's concern: it is not checked for
        selecting nothing. With `found` (see `rows_found`), what the column's values select is
        added to it and not checked here, so several columns can be checked as one table.
        Raises MaskingError when the plan masks whole rows (an entry "*"), which no column can
        carry, and as `apply` does for anything else.
        """
        state = self._field_state(name)
        if state is None:
            return [_copy(value, 1, set()) for value in values]
        values = values if isinstance(values, list) else list(values)
        mine = [0, 0]
        try:
            out = [self._visit(value, state, 1, set(), mine) for value in values]
            if found is None and not self.lenient and mine[1] & ~mine[0]:
                raise _Fallback
        except (_Fallback, MaskingError):
            rows = [{name: value} for value in values]
            masked = _apply_reference(self._field_rules(name), rows, lenient=self.lenient)
            return [row[name] for row in masked]
        if found is not None:
            found[0] |= mine[0]
            found[1] |= mine[1]
        return out

    def column_found(self, name: str, rows: int, found: list[int]) -> None:
        """Add to `found` what a column of `rows` scalar values of field `name` selects."""
        state = self._field_state(name)
        if state is not None and rows:
            found[0] |= state.targets

    def rows_found(self, names: Iterable[str], rows: int, found: list[int]) -> None:
        """Add to `found` the entries naming a field that none of `names` is, in `rows` rows:
        each of them meets a missing member in every row."""
        row = self._rows_root.index_other if self._rows_root is not None else None
        if row is None or not rows:
            return
        present = set(names)
        for name, rules in row.named_rules.items():
            if name not in present:
                found[1] |= rules

    def selects_nothing(self, found: list[int]) -> bool:
        """Whether, in strict mode, some entry met only missing members (an error)."""
        return not self.lenient and bool(found[1] & ~found[0])

    def _field_state(self, name: str) -> _State | None:
        row = self._rows_root.index_other if self._rows_root is not None else None
        if row is None:
            return None
        if row.fn is not None:
            raise MaskingError(
                "the plan masks whole rows (an entry selects each row): mask rows, not columns"
            )
        return row.named.get(name, row.other)

    def _field_rules(self, name: str) -> tuple[_Rule, ...]:
        # The entries that reach this field of a row, for the reference algorithm on rows of
        # that field alone.
        rules = []
        for rule in self._rules:
            rest = rule.segments[1:] if rule.segments[0] == _WILDCARD else rule.segments
            if rest and rest[0] in (name, _WILDCARD):
                rules.append(rule)
        return tuple(rules)

    # The walk. `found` is [bitmask of rules that targeted something, bitmask of rules that met
    # a missing member or index]; strict mode fails a rule that only ever met missing ones.

    def _fast(self, record: Any) -> Any:
        found = [0, 0]
        if isinstance(record, list) or (isinstance(record, tuple) and not _is_namedtuple(record)):
            root = self._rows_root
        else:
            root = self._object_root
        if root is None:  # an empty plan
            return _copy(record, 0, set())
        result = self._visit(record, root, 0, set(), found)
        if not self.lenient and found[1] & ~found[0]:
            raise _Fallback
        return result

    def _visit(
        self, value: Any, state: _State, depth: int, open_: set[int], found: list[int]
    ) -> Any:
        if type(value) in _LEAF_TYPES or isinstance(value, _SCALARS):
            if state.goes_on and value is not None and not self.lenient:
                raise _Fallback  # a segment meets a string, number or boolean
        elif depth >= MAX_DEPTH or id(value) in open_:
            raise _Fallback
        elif isinstance(value, list) or (isinstance(value, tuple) and not _is_namedtuple(value)):
            node = id(value)
            open_.add(node)
            try:
                value = self._array(value, state, depth, open_, found)
            finally:
                open_.discard(node)
        elif type(value) is dict and state.other is None and _flat(value):
            # Members that hold nothing cannot lead back here: no cycle to watch for.
            value = self._flat_object(value, state, found)
        else:
            node = id(value)
            open_.add(node)
            try:
                value = self._object(value, state, depth, open_, found)
            finally:
                open_.discard(node)
        found[0] |= state.targets
        return value if state.fn is None else state.fn(value)

    def _flat_object(self, node: dict[str, Any], state: _State, found: list[int]) -> Any:
        out = node.copy()
        if state.leaves is not None:
            for name, fn in state.leaves:
                if name in out:
                    out[name] = fn(out[name])
                    found[0] |= state.named_rules[name]
                else:
                    found[1] |= state.named_rules[name]
            return out
        for name, child in state.named_items:
            value = out.get(name, _ABSENT)
            if value is _ABSENT:
                found[1] |= state.named_rules[name]
                continue
            if child.goes_on and value is not None and not self.lenient:
                raise _Fallback
            found[0] |= child.targets
            if child.fn is not None:
                out[name] = child.fn(value)
        return out

    def _rows(
        self, node: list[Any], state: _State, depth: int, open_: set[int], found: list[int]
    ) -> list[Any]:
        # The hot loop of masking rows of leaves: no call per row but the operators'.
        leaves = state.leaves
        assert leaves is not None
        out: list[Any] = []
        append = out.append
        absent: set[str] = set()
        flat = False
        visit = self._visit
        # Bound once: per row, every lookup counts.
        join, leaf_types, values, copy = "".join, _LEAF_TYPES.issuperset, dict.values, dict.copy
        for item in node:
            if type(item) is dict and leaf_types(map(type, values(item))):
                try:
                    join(item)  # a TypeError unless every key is a str, found in C
                except TypeError:
                    append(visit(item, state, depth + 1, open_, found))
                    continue
                row = copy(item)
                for name, fn in leaves:
                    try:
                        row[name] = fn(row[name])
                    except KeyError:
                        absent.add(name)
                append(row)
                flat = True
            else:
                append(visit(item, state, depth + 1, open_, found))
        # Which names the rows of leaves had, worked out once rather than per row (the other
        # rows were visited, which kept count themselves).
        for name, _ in leaves:
            rules = state.named_rules[name]
            if name in absent:
                found[1] |= rules
                if any(name in row for row in node if type(row) is dict):
                    found[0] |= rules
            elif flat:
                found[0] |= rules
        return out

    def _object(
        self, node: Any, state: _State, depth: int, open_: set[int], found: list[int]
    ) -> dict[str, Any]:
        named, other = state.named, state.other
        out: dict[str, Any] = {}
        for key, item in _members(node, depth):
            if not isinstance(key, str):
                raise _Fallback
            child = named.get(key, other)
            out[key] = (
                _copy(item, depth + 1, open_)
                if child is None
                else self._visit(item, child, depth + 1, open_, found)
            )
        for name, rules in state.named_rules.items():
            if name not in out:
                found[1] |= rules
        return out

    def _array(
        self, node: Any, state: _State, depth: int, open_: set[int], found: list[int]
    ) -> list[Any]:
        if state.names_on_array and not self.lenient:
            raise _Fallback  # a name meets an array
        indexed, other = state.indexed, state.index_other
        if indexed:
            out = [
                self._visit(item, child, depth + 1, open_, found)
                if (child := indexed.get(i, other)) is not None
                else _copy(item, depth + 1, open_)
                for i, item in enumerate(node)
            ]
            for index, rules in state.index_rules.items():
                if index >= len(node):
                    found[1] |= rules
            return out
        if other is None:
            return [_copy(item, depth + 1, open_) for item in node]
        if other.leaves is not None and other.fn is None and type(node) is list:
            return self._rows(node, other, depth, open_, found)
        return [self._visit(item, other, depth + 1, open_, found) for item in node]

    def _state(self, elements: _Elements) -> _State | None:
        if not elements:
            return None
        known = self._states.get(elements)
        if known is not None:
            return known
        ending = sorted(i for i, rest in elements if not rest)
        merged: _Rule | None = None
        for i in ending:  # plan order: the first HASH entry's key wins
            merged = self._rules[i] if merged is None else _stricter(merged, self._rules[i])
        going = [(i, rest) for i, rest in elements if rest]
        wild = [(i, rest[1:]) for i, rest in going if rest[0] == _WILDCARD]
        names = sorted({rest[0] for _, rest in going if rest[0] != _WILDCARD})
        named_rules = {name: _mask(i for i, rest in going if rest[0] == name) for name in names}
        indices = {int(name): name for name in names if _INDEX.fullmatch(name)}
        state = _State(
            rule=merged,
            fn=None if merged is None else merged.fn,
            targets=_mask(ending),
            goes_on=bool(going),
            named={},
            named_items=(),
            other=None,
            named_rules=named_rules,
            indexed={},
            index_other=None,
            index_rules={index: named_rules[name] for index, name in indices.items()},
            names_on_array=len(indices) < len(names),
            leaves=None,
        )
        self._states[elements] = state
        for name in names:
            child = self._state(
                frozenset([*wild, *((i, rest[1:]) for i, rest in going if rest[0] == name)])
            )
            assert child is not None
            state.named[name] = child
        state.named_items = tuple(state.named.items())
        state.other = self._state(frozenset(wild))
        if state.other is None and all(
            child.fn is not None and not child.goes_on for child in state.named.values()
        ):
            state.leaves = tuple((name, child.fn) for name, child in state.named_items if child.fn)
        for index, name in indices.items():
            state.indexed[index] = state.named[name]
        state.index_other = state.other
        return state


_ABSENT = object()


def _mask(indices: Iterable[int]) -> int:
    bits = 0
    for i in indices:
        bits |= 1 << i
    return bits


def _flat(node: dict[Any, Any]) -> bool:
    """Whether a dict has only str keys and only values that hold nothing, tested in C."""
    return _STR_TYPE.issuperset(map(type, node)) and _LEAF_TYPES.issuperset(
        map(type, node.values())
    )


def _apply_reference(rules: tuple[_Rule, ...], record: Any, *, lenient: bool) -> Any:
    """docs/masking.md's algorithm step by step: copy, resolve every entry, then transform the
    deepest positions first. Slower, and the order in which its errors are found is the
    specification's, so every record the fast walk gives up on is finished here."""
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
        parent[location[-1]] = targets[location].fn(parent[location[-1]])
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


def _nullify(value: Any) -> None:
    return None


def _hash(key: bytes, value: Any) -> str:
    # The one-shot HMAC runs in C; the first 16 bytes are the first 32 hex digits.
    return HASH_PREFIX + hmac.digest(key, canonical_form(value), "sha256")[:16].hex()


def _email(value: Any) -> str:
    if isinstance(value, str):
        local, at, domain = value.partition("@")
        if local and at and domain and "@" not in domain:
            return "***@" + domain
    return REDACTED


def _partial(keep_first: int, keep_last: int, value: Any) -> str:
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
