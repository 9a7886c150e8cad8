"""Approval records, verified identities and transition events, as plain data."""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from signoff.engine.model import FieldRef

# "apr_" + secrets.token_urlsafe(18): anything else is no approval of ours, and must never be
# spliced into a Redis key (":votes" or ":events" suffixes would name other keys).
APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_-]{24}")


def is_approval_id(value: str) -> bool:
    return APPROVAL_ID.fullmatch(value) is not None


class State(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CONSUMED = "consumed"

    @property
    def final(self) -> bool:
        return self not in (State.PENDING, State.APPROVED)


@dataclass(frozen=True)
class Identity:
    """A caller proven by a verified credential; never built from request fields."""

    subject: str
    kind: str  # "human", "agent", "service", or "unknown" when the credential does not say
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    issuer: str = ""

    @property
    def is_human(self) -> bool:
        return self.kind == "human"


@dataclass(frozen=True)
class Vote:
    approver_id: str
    approve: bool
    reason: str
    at_ms: int


@dataclass(frozen=True)
class MaskedField:
    """A masking plan entry as reviewer views and audit records keep it: the operator by its
    name ("redact", ...), with its options, so a replay can tell `redact` from `partial`.
    """

    path: str
    operator: str
    keep_first: int = 0
    keep_last: int = 0


def _fields(doc: Mapping[str, Any]) -> tuple[FieldRef, ...]:
    return tuple(FieldRef(f["path"], tuple(f.get("tags", ()))) for f in doc.get("fields", ()))


def _known(cls: type, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The members of `doc` that `cls` has fields for: a later writer may add members."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


class _Stored:
    """A dataclass stored as a JSON object whose member names are its field names."""

    def to_doc(self) -> dict[str, Any]:
        """What `dataclasses.asdict` gives, built per member: asdict deep-copies every leaf
        through its generic path, a fifth of the work of holding an approval."""
        out: dict[str, Any] = _plain(self)
        return out


_ATOMS = (str, int, float, bool, type(None))


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    kind: type = type(value)
    if kind in _ATOMS:  # exactly these types: immutable, so asdict's deep copy is the value
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _names(kind)}
    if kind is tuple or kind is list:
        return kind(_plain(v) for v in value)
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    # Anything else (a namedtuple, a dict subclass, an enum): exactly as asdict treats it.
    return dataclasses.asdict(_Wrap(value))["value"]


@dataclass(frozen=True)
class _Wrap:
    value: Any


@dataclass(frozen=True)
class ReviewerView(_Stored):
    """The request as approvers see it: ids, names and the masked payload, no attributes.

    Stored as JSON inside the approval (`to_doc`); `from_doc` reads what any version wrote.
    """

    requester_id: str
    requester_kind: str
    action: str
    resource_kind: str
    requester_roles: tuple[str, ...] = ()
    resource_id: str = ""
    fields: tuple[FieldRef, ...] = ()
    payload: Any = None
    environment: str = ""
    reasons: tuple[str, ...] = ()
    matched_rules: tuple[str, ...] = ()
    masking_plan: tuple[MaskedField, ...] = ()

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ReviewerView:
        known = _known(cls, doc)
        return cls(
            **{
                **known,
                "requester_roles": tuple(known.get("requester_roles", ())),
                "reasons": tuple(known.get("reasons", ())),
                "matched_rules": tuple(known.get("matched_rules", ())),
                "fields": _fields(doc),
                "masking_plan": tuple(
                    MaskedField(**_known(MaskedField, m)) for m in doc.get("masking_plan", ())
                ),
            }
        )


@dataclass(frozen=True)
class ApprovalSummary(_Stored):
    """What transition events and notifications carry: never payload or attribute values."""

    requester_id: str
    requester_kind: str
    action: str
    resource_kind: str
    resource_id: str
    environment: str
    fields: tuple[FieldRef, ...]
    reasons: tuple[str, ...]
    matched_rules: tuple[str, ...]
    requirement: dict[str, Any]
    pending_expires_at: str


@dataclass(frozen=True)
class ApprovalRequest(_Stored):
    """What an approval was asked for: written once when it is created, never changed."""

    requester_id: str
    requester_kind: str
    requester_ids: tuple[str, ...]
    requirement: dict[str, Any]  # {"approvers": [{"roles": [...], "groups": [...]}], "quorum", ...}
    view: ReviewerView
    policy_revision: str = ""
    decision_id: str = ""

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ApprovalRequest:
        known = _known(cls, doc)
        return cls(
            **{
                **known,
                "requester_ids": tuple(known["requester_ids"]),
                "view": ReviewerView.from_doc(doc["view"]),
            }
        )


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval as stored; `view` is the masked request reviewers see."""

    id: str
    state: State
    digest: str
    requester_id: str
    requester_kind: str
    requester_ids: tuple[str, ...]
    requirement: dict[str, Any]  # as in ApprovalRequest
    view: ReviewerView
    created_ms: int
    pending_expires_ms: int
    grant_ttl_ms: int
    approved_ms: int = 0
    grant_expires_ms: int = 0
    final_ms: int = 0
    final_reason: str = ""
    policy_revision: str = ""
    decision_id: str = ""
    votes: tuple[Vote, ...] = field(default_factory=tuple)

    @property
    def quorum(self) -> int:
        return int(self.requirement["quorum"])

    @property
    def approver_sets(self) -> list[dict[str, list[str]]]:
        sets: list[dict[str, list[str]]] = self.requirement["approvers"]
        return sets
