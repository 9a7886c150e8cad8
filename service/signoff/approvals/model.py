"""Approval records, verified identities and transition events, as plain data."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

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
class ApprovalRecord:
    """One approval as stored; `view` is the masked request reviewers see (JSON-ready)."""

    id: str
    state: State
    digest: str
    requester_id: str
    requester_kind: str
    requester_ids: tuple[str, ...]
    requirement: dict[str, Any]  # {"approvers": [{"roles": [...], "groups": [...]}], "quorum", ...}
    view: dict[str, Any]
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
