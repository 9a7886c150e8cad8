"""Plain, frozen values the client takes and returns, and their protobuf conversions."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
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
        try:
            verdict = Verdict(response.verdict)
        except ValueError:
            raise ProtocolError(
                f"decision {response.decision_id!r} has unusable verdict {response.verdict}"
            ) from None
        # Copies, so the Decision does not share mutable messages with the response.
        plan = signoff_pb2.MaskingPlan()
        plan.CopyFrom(response.masking_plan)
        approval = None
        if response.HasField("approval"):
            approval = signoff_pb2.ApprovalRequirement()
            approval.CopyFrom(response.approval)
        explanation = None
        if response.HasField("explanation"):
            explanation = signoff_pb2.Explanation()
            explanation.CopyFrom(response.explanation)
        return cls(
            verdict=verdict,
            decision_id=response.decision_id,
            policy_revision=response.policy_revision,
            matched_rules=tuple(response.matched_rules),
            reasons=tuple(response.reasons),
            masking_plan=plan,
            approval=approval,
            errored_rules=tuple(response.errored_rules),
            approval_id=response.approval_id,
            explanation=explanation,
        )

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
