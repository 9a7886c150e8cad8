"""Plain, frozen values the client takes and returns, and their protobuf conversions."""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from google.protobuf import struct_pb2

from signoff.client.errors import InvalidInput, ProtocolError
from signoff.client.masking import apply_mask, require_release
from signoff.v1 import signoff_pb2

__all__ = [
    "CheckItem",
    "Context",
    "Decision",
    "Field",
    "ItemFailure",
    "Principal",
    "PrincipalKindName",
    "Resource",
    "Verdict",
]

PrincipalKindName = Literal["human", "agent", "service"]

_PRINCIPAL_KINDS: dict[str, signoff_pb2.PrincipalKind.ValueType] = {
    "human": signoff_pb2.PRINCIPAL_KIND_HUMAN,
    "agent": signoff_pb2.PRINCIPAL_KIND_AGENT,
    "service": signoff_pb2.PRINCIPAL_KIND_SERVICE,
}
_STATUS_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


class Verdict(enum.Enum):
    """The answer to a check; values are the proto enum numbers."""

    ALLOW = 1
    DENY = 2
    MASK = 3
    REQUIRE_APPROVAL = 4


@dataclass(frozen=True)
class Field:
    """A field the action reads or writes: a dot path ("*" matches any key or index) and tags."""

    path: str
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _strings("Field.tags", self.tags))

    def to_proto(self) -> signoff_pb2.Field:
        return signoff_pb2.Field(path=self.path, tags=self.tags)


@dataclass(frozen=True)
class Principal:
    """Who asks: a stable id, whether a human or an automated caller, roles and attributes."""

    id: str
    kind: PrincipalKindName = "human"
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _PRINCIPAL_KINDS:
            raise InvalidInput(f"Principal.kind must be one of {sorted(_PRINCIPAL_KINDS)}")
        object.__setattr__(self, "roles", _strings("Principal.roles", self.roles))

    def to_proto(self) -> signoff_pb2.Principal:
        message = signoff_pb2.Principal(
            id=self.id, kind=_PRINCIPAL_KINDS[self.kind], roles=self.roles
        )
        _fill_struct(message.attributes, "Principal.attributes", self.attributes)
        return message

    def to_bytes(self) -> bytes:
        """`to_proto()` serialized; reused while `attributes` hold what they held then."""
        return _cached(self, "_wire", self.attributes, self._serialize)

    def _serialize(self) -> bytes:
        return self.to_proto().SerializeToString()


@dataclass(frozen=True)
class Resource:
    """What the action touches: its kind, id, attributes and the fields it reads or writes."""

    kind: str
    id: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        fields = tuple(self.fields)
        if not all(isinstance(item, Field) for item in fields):
            raise InvalidInput("Resource.fields must hold Field values")
        object.__setattr__(self, "fields", fields)

    def to_proto(self) -> signoff_pb2.Resource:
        message = signoff_pb2.Resource(
            kind=self.kind, id=self.id, fields=[item.to_proto() for item in self.fields]
        )
        _fill_struct(message.attributes, "Resource.attributes", self.attributes)
        return message

    def to_bytes(self) -> bytes:
        """`to_proto()` serialized; reused while `attributes` hold what they held then."""
        return _cached(self, "_wire", self.attributes, self._serialize)

    def _serialize(self) -> bytes:
        return self.to_proto().SerializeToString()


@dataclass(frozen=True)
class Context:
    """Where and when the action happens, as the caller states it."""

    environment: str = ""
    time: dt.datetime | None = None
    source_ip: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A naive datetime would silently be read as UTC; make the caller say what they mean.
        if self.time is not None and self.time.utcoffset() is None:
            raise InvalidInput("Context.time must be timezone-aware")

    def to_proto(self) -> signoff_pb2.Context:
        message = signoff_pb2.Context(environment=self.environment, source_ip=self.source_ip)
        if self.time is not None:
            message.time.FromDatetime(self.time)
        _fill_struct(message.attributes, "Context.attributes", self.attributes)
        return message

    def to_bytes(self) -> bytes:
        """`to_proto()` serialized; reused while `attributes` hold what they held then."""
        return _cached(self, "_wire", self.attributes, self._serialize)

    def _serialize(self) -> bytes:
        return self.to_proto().SerializeToString()


@dataclass(frozen=True)
class CheckItem:
    """One question for the service: may `principal` do `action` on `resource`?"""

    principal: Principal
    action: str
    resource: Resource
    context: Context | None = None
    payload: Mapping[str, Any] | None = None
    approval_id: str = ""
    explain: bool = False  # ask for each candidate rule's outcome (Decision.explanation)

    def to_proto(self) -> signoff_pb2.CheckRequest:
        message = signoff_pb2.CheckRequest(
            principal=self.principal.to_proto(),
            action=self.action,
            resource=self.resource.to_proto(),
            approval_id=self.approval_id,
            explain=self.explain,
        )
        if self.context is not None:
            message.context.CopyFrom(self.context.to_proto())
        if self.payload is not None:
            # An explicit empty payload is sent as such, unlike an absent one.
            message.payload.SetInParent()
            _fill_struct(message.payload, "payload", self.payload)
        return message

    def to_bytes(self) -> bytes:
        """The CheckRequest this item is, serialized: it parses to exactly `to_proto()`.

        A principal, resource or context used again is not converted again: its bytes are
        kept and reused while its attributes hold what they held when it was (see `_cached`).
        Anything the quick assembly does not vouch for goes through `to_proto()`, so every
        error is the one `to_proto()` raises.
        """
        wire = self._assemble()
        return self.to_proto().SerializeToString() if wire is None else wire

    def _assemble(self) -> bytes | None:
        action, approval_id, explain = self.action, self.approval_id, self.explain
        if not (type(action) is str and type(approval_id) is str and type(explain) is bool):
            return None
        try:
            parts = [
                frame(b"\x0a", self.principal.to_bytes()),
                frame(b"\x12", action.encode()) if action else b"",
                frame(b"\x1a", self.resource.to_bytes()),
            ]
            if self.context is not None:
                parts.append(frame(b"\x22", self.context.to_bytes()))
            if self.payload is not None:
                parts.append(frame(b"\x2a", self._payload_bytes()))
        except Exception:
            return None  # to_proto() raises it, as callers know it
        if approval_id:
            try:
                parts.append(frame(b"\x32", approval_id.encode()))
            except UnicodeEncodeError:
                return None
        if explain:
            parts.append(b"\x38\x01")
        return b"".join(parts)

    def _payload_bytes(self) -> bytes:
        payload = self.payload
        assert payload is not None
        return _cached(self, "_payload_wire", payload, self._serialize_payload)

    def _serialize_payload(self) -> bytes:
        message = struct_pb2.Struct()
        _fill_struct(message, "payload", self.payload or {})
        return message.SerializeToString()


@dataclass(frozen=True)
class Decision:
    """The service's verdict on one check and everything needed to act on it."""

    verdict: Verdict
    decision_id: str
    policy_revision: str
    matched_rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    masking_plan: signoff_pb2.MaskingPlan = field(default_factory=signoff_pb2.MaskingPlan)
    approval: signoff_pb2.ApprovalRequirement | None = None
    errored_rules: tuple[str, ...] = ()
    # With REQUIRE_APPROVAL: the pending approval to wait for and pass back as
    # CheckItem.approval_id. On a check that named an approval: that approval.
    approval_id: str = ""
    # Only when CheckItem.explain asked for it.
    explanation: signoff_pb2.Explanation | None = None

    @property
    def allowed(self) -> bool:
        """Whether the action may go ahead now (with the masking plan applied when MASK)."""
        return self.verdict in (Verdict.ALLOW, Verdict.MASK)

    def mask(
        self, record: Any, keys: Mapping[str, bytes] | None = None, *, lenient: bool = False
    ) -> Any:
        """Return a masked copy of `record` per this decision's plan; see `apply_mask`.

        Raises MaskingError unless the verdict is ALLOW or MASK.
        """
        require_release(self.verdict.value, self.decision_id)
        return apply_mask(record, self.masking_plan, keys=keys, lenient=lenient)

    @classmethod
    def from_proto(cls, response: signoff_pb2.CheckResponse) -> Decision:
        """Convert a CheckResponse; raises ProtocolError for a verdict this client does not know."""
        verdict = _VERDICTS.get(response.verdict)
        if verdict is None:
            raise ProtocolError(
                f"decision {response.decision_id!r} has unusable verdict {response.verdict}"
            )
        # Copies, so the Decision does not share mutable messages with the response.
        plan = signoff_pb2.MaskingPlan()
        if response.HasField("masking_plan"):
            plan.CopyFrom(response.masking_plan)
        approval = None
        if response.HasField("approval"):
            approval = signoff_pb2.ApprovalRequirement()
            approval.CopyFrom(response.approval)
        explanation = None
        if response.HasField("explanation"):
            explanation = signoff_pb2.Explanation()
            explanation.CopyFrom(response.explanation)
        matched, reasons, errored = (
            response.matched_rules,
            response.reasons,
            response.errored_rules,
        )
        # Set as __init__ would (every field, nothing else), without its frozen-dataclass
        # setattr per field: a decision per check is the client's hottest conversion.
        decision = object.__new__(cls)
        decision.__dict__.update(
            verdict=verdict,
            decision_id=response.decision_id,
            policy_revision=response.policy_revision,
            matched_rules=tuple(matched) if matched else (),
            reasons=tuple(reasons) if reasons else (),
            masking_plan=plan,
            approval=approval,
            errored_rules=tuple(errored) if errored else (),
            approval_id=response.approval_id,
            explanation=explanation,
        )
        return decision

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view; enum values are written by their short names."""
        approval: dict[str, Any] | None = None
        if self.approval is not None:
            approval = {
                "approvers": [
                    {"roles": list(item.roles), "groups": list(item.groups)}
                    for item in self.approval.approvers
                ],
                "quorum": self.approval.quorum,
                "pending_ttl": self.approval.pending_ttl.ToJsonString(),
                "grant_ttl": self.approval.grant_ttl.ToJsonString(),
                "rule_ids": list(self.approval.rule_ids),
            }
        view: dict[str, Any] = {
            "verdict": self.verdict.name,
            "decision_id": self.decision_id,
            "policy_revision": self.policy_revision,
            "matched_rules": list(self.matched_rules),
            "reasons": list(self.reasons),
            "masking_plan": [
                {
                    "path": entry.path,
                    "operator": operator_name(entry.operator),
                    "keep_first": entry.keep_first,
                    "keep_last": entry.keep_last,
                    "key_id": entry.key_id,
                    "rule_ids": list(entry.rule_ids),
                }
                for entry in self.masking_plan.fields
            ],
            "approval": approval,
            "errored_rules": list(self.errored_rules),
        }
        # Present only when there is one, so the document of a plain verdict keeps its shape.
        if self.approval_id:
            view["approval_id"] = self.approval_id
        if self.explanation is not None:
            view["explanation"] = {
                "decided_by": list(self.explanation.decided_by),
                "rules": [
                    {
                        "rule_id": r.rule_id,
                        "effect": _short(signoff_pb2.Verdict.Name(r.effect), "VERDICT_"),
                        "outcome": _short(signoff_pb2.RuleOutcome.Name(r.outcome), "RULE_OUTCOME_"),
                        "condition": r.condition,
                        "roles": list(r.roles),
                        "error": r.error,
                        "counted": r.counted,
                        "shadow": r.shadow,
                    }
                    for r in self.explanation.rules
                ],
            }
        return view


_VERDICTS = {verdict.value: verdict for verdict in Verdict}


def _short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


@dataclass(frozen=True)
class ItemFailure:
    """Why one batch item could not be decided; `code` is a google.rpc.Code number."""

    code: int
    message: str
    field: str = ""

    @property
    def code_name(self) -> str:
        """The code's name, e.g. "INVALID_ARGUMENT", or the number when it is unknown."""
        return _STATUS_NAMES.get(self.code, str(self.code))

    @classmethod
    def from_proto(cls, error: signoff_pb2.ItemError) -> ItemFailure:
        return cls(code=error.code, message=error.message, field=error.field)


def operator_name(operator: int) -> str:
    """Return a mask operator's short name, e.g. "EMAIL", or its number when unknown."""
    if operator in signoff_pb2.MaskOperator.values():
        return signoff_pb2.MaskOperator.Name(
            signoff_pb2.MaskOperator.ValueType(operator)
        ).removeprefix("MASK_OPERATOR_")
    return str(operator)


def _strings(where: str, values: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a sequence too; tuple("admin") would silently become five roles.
    if isinstance(values, str):
        raise InvalidInput(f"{where} must be a sequence of strings, not a string")
    items = tuple(values)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"{where} must hold strings only")
    return items


def _fill_struct(target: struct_pb2.Struct, where: str, values: Mapping[str, Any]) -> None:
    if not values:
        return
    try:
        target.update(values)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"{where} must be JSON-like with string keys: {err}") from err


def varint(n: int) -> bytes:
    """`n` (non-negative) as a protobuf varint."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]


def frame(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + varint(len(payload)) + payload


# --------------------------------------------------------------------- reusing encoded values
#
# Callers reuse a Principal (and often a Resource) for many checks, and its conversion is most
# of what a check costs the client. The values are frozen except their attribute mappings,
# which belong to the caller and may change between checks, so encoded bytes are reused only
# while the mapping still holds what it held when they were made: a snapshot of it is kept
# beside them and compared, with every value matched by exact type as well as value (True is
# 1 to ==, not to the encoding; -0.0 is 0.0 to ==, not to the encoding), so a mapping that
# compares equal to the snapshot encodes to the same bytes. An object is snapshotted only
# when it is converted a second time: one made for a single check pays nothing for this.


class _Same:
    """A snapshot of one JSON-like value: equal only to a value that encodes as it did."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: type, value: Any) -> None:
        self.kind = kind
        self.value = value

    def __eq__(self, other: object) -> bool:
        if type(other) is not self.kind:
            return False
        if self.kind is float:
            # NaN never matches (the bytes are simply made again); a zero keeps its sign.
            return bool(
                other == self.value
                and (other != 0.0 or math.copysign(1.0, other) == math.copysign(1.0, self.value))
            )
        return bool(self.value == other)

    __hash__ = None  # type: ignore[assignment]


_LEAVES = frozenset({str, int, float, bool, type(None)})


def _snapshot(value: Any) -> _Same | None:
    """A snapshot of `value`, or None when it holds anything but plain JSON-like values."""
    kind = type(value)
    if kind in _LEAVES:
        return _Same(kind, value)
    if kind is dict:
        items = {}
        for key, item in value.items():
            snap = _snapshot(item)
            if type(key) is not str or snap is None:
                return None
            items[key] = snap
        return _Same(dict, items)
    if kind is list or kind is tuple:
        snaps = [_snapshot(item) for item in value]
        if any(snap is None for snap in snaps):
            return None
        return _Same(kind, snaps if kind is list else tuple(snaps))
    return None


def _cached(
    owner: Any, slot: str, mapping: Mapping[str, Any], encode: Callable[[], bytes]
) -> bytes:
    """`encode()`, or the bytes it gave before if `mapping` still holds what it held then."""
    # The state is (snapshot or None, bytes): plain values, so a copied or pickled owner
    # carries a state that still means what it did.
    state = owner.__dict__.get(slot)
    if state is not None:
        snap, wire = state
        if snap is not None and snap == mapping:
            wire_bytes: bytes = wire
            return wire_bytes
    wire = encode()
    snap = None if state is None else _snapshot(mapping)
    owner.__dict__[slot] = (snap, wire if snap is not None else b"")
    return wire
