"""Approvals as plain, frozen values, converted from the ApprovalService messages."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from signoff.client.errors import ProtocolError
from signoff.client.types import Field, operator_name
from signoff.v1 import approvals_pb2, signoff_pb2

__all__ = [
    "Approval",
    "ApprovalState",
    "ApproverSet",
    "RequestView",
    "Requirement",
    "Vote",
    "format_duration",
]

_KIND_NAMES = {
    signoff_pb2.PRINCIPAL_KIND_HUMAN: "human",
    signoff_pb2.PRINCIPAL_KIND_AGENT: "agent",
    signoff_pb2.PRINCIPAL_KIND_SERVICE: "service",
}


class ApprovalState(enum.Enum):
    """Where an approval is in its life; values are the proto enum numbers."""

    PENDING = 1
    APPROVED = 2
    REJECTED = 3
    CANCELLED = 4
    EXPIRED = 5
    CONSUMED = 6

    @property
    def final(self) -> bool:
        """Whether nothing can change any more (APPROVED can still be used or cancelled)."""
        return self not in (ApprovalState.PENDING, ApprovalState.APPROVED)


@dataclass(frozen=True)
class Vote:
    """One approver's word: `approve` is False for a rejection."""

    approver_id: str
    approve: bool
    reason: str
    at: dt.datetime | None


@dataclass(frozen=True)
class ApproverSet:
    """Satisfied by a human holding any of `roles` or belonging to any of `groups`."""

    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """Who must sign off (every counted approver satisfies every set) and within which windows."""

    approvers: tuple[ApproverSet, ...]
    quorum: int
    pending_ttl: dt.timedelta
    grant_ttl: dt.timedelta
    rule_ids: tuple[str, ...] = ()
    requester_ids: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, message: signoff_pb2.ApprovalRequirement) -> Requirement:
        return cls(
            approvers=tuple(
                ApproverSet(tuple(item.roles), tuple(item.groups)) for item in message.approvers
            ),
            quorum=message.quorum,
            pending_ttl=message.pending_ttl.ToTimedelta(),
            grant_ttl=message.grant_ttl.ToTimedelta(),
            rule_ids=tuple(message.rule_ids),
            requester_ids=tuple(message.requester_ids),
        )


@dataclass(frozen=True)
class RequestView:
    """The held request as reviewers see it: the payload already masked, no attribute values."""

    requester_id: str
    requester_kind: str  # "human", "agent", "service" or "unspecified"
    requester_roles: tuple[str, ...]
    action: str
    resource_kind: str
    resource_id: str
    fields: tuple[Field, ...]
    payload: Mapping[str, Any]
    environment: str
    reasons: tuple[str, ...]
    matched_rules: tuple[str, ...]
    masking_plan: signoff_pb2.MaskingPlan = field(default_factory=signoff_pb2.MaskingPlan)

    @classmethod
    def from_proto(cls, message: approvals_pb2.ApprovalRequestView) -> RequestView:
        plan = signoff_pb2.MaskingPlan()
        plan.CopyFrom(message.masking_plan)
        return cls(
            requester_id=message.requester_id,
            requester_kind=_KIND_NAMES.get(message.requester_kind, "unspecified"),
            requester_roles=tuple(message.requester_roles),
            action=message.action,
            resource_kind=message.resource_kind,
            resource_id=message.resource_id,
            fields=tuple(Field(item.path, tuple(item.tags)) for item in message.fields),
            payload=json_format.MessageToDict(message.payload),
            environment=message.environment,
            reasons=tuple(message.reasons),
            matched_rules=tuple(message.matched_rules),
            masking_plan=plan,
        )


@dataclass(frozen=True)
class Approval:
    """One request for sign-off, bound to the exact action it was asked for."""

    id: str
    state: ApprovalState
    requirement: Requirement
    request: RequestView
    votes: tuple[Vote, ...] = ()
    created_at: dt.datetime | None = None
    pending_expires_at: dt.datetime | None = None
    approved_at: dt.datetime | None = None
    grant_expires_at: dt.datetime | None = None
    final_at: dt.datetime | None = None
    final_reason: str = ""
    policy_revision: str = ""
    decision_id: str = ""

    @property
    def approvals(self) -> int:
        """How many distinct approvers have approved so far."""
        return sum(1 for vote in self.votes if vote.approve)

    @property
    def expires_at(self) -> dt.datetime | None:
        """When the current window ends: the pending window, or the grant once approved."""
        if self.state is ApprovalState.PENDING:
            return self.pending_expires_at
        if self.state is ApprovalState.APPROVED:
            return self.grant_expires_at
        return None

    @classmethod
    def from_proto(cls, message: approvals_pb2.Approval) -> Approval:
        """Convert an Approval message; raises ProtocolError for a state this client lacks."""
        try:
            state = ApprovalState(message.state)
        except ValueError:
            raise ProtocolError(
                f"approval {message.id!r} has unusable state {message.state}"
            ) from None
        return cls(
            id=message.id,
            state=state,
            requirement=Requirement.from_proto(message.requirement),
            request=RequestView.from_proto(message.request),
            votes=tuple(
                Vote(
                    approver_id=vote.approver_id,
                    approve=vote.decision == approvals_pb2.VOTE_DECISION_APPROVE,
                    reason=vote.reason,
                    at=_time(vote, "at"),
                )
                for vote in message.votes
            ),
            created_at=_time(message, "created_at"),
            pending_expires_at=_time(message, "pending_expires_at"),
            approved_at=_time(message, "approved_at"),
            grant_expires_at=_time(message, "grant_expires_at"),
            final_at=_time(message, "final_at"),
            final_reason=message.final_reason,
            policy_revision=message.policy_revision,
            decision_id=message.decision_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready view: states by name, times as ISO 8601, durations in seconds."""
        requirement = self.requirement
        request = self.request
        return {
            "id": self.id,
            "state": self.state.name,
            "approvals": self.approvals,
            "requirement": {
                "approvers": [
                    {"roles": list(item.roles), "groups": list(item.groups)}
                    for item in requirement.approvers
                ],
                "quorum": requirement.quorum,
                "pending_ttl_seconds": requirement.pending_ttl.total_seconds(),
                "grant_ttl_seconds": requirement.grant_ttl.total_seconds(),
                "rule_ids": list(requirement.rule_ids),
                "requester_ids": list(requirement.requester_ids),
            },
            "request": {
                "requester_id": request.requester_id,
                "requester_kind": request.requester_kind,
                "requester_roles": list(request.requester_roles),
                "action": request.action,
                "resource_kind": request.resource_kind,
                "resource_id": request.resource_id,
                "fields": [{"path": item.path, "tags": list(item.tags)} for item in request.fields],
                "payload": dict(request.payload),
                "environment": request.environment,
                "reasons": list(request.reasons),
                "matched_rules": list(request.matched_rules),
                "masking_plan": [
                    {
                        "path": entry.path,
                        "operator": operator_name(entry.operator),
                        "keep_first": entry.keep_first,
                        "keep_last": entry.keep_last,
                    }
                    for entry in request.masking_plan.fields
                ],
            },
            "votes": [
                {
                    "approver_id": vote.approver_id,
                    "decision": "APPROVE" if vote.approve else "REJECT",
                    "reason": vote.reason,
                    "at": _iso(vote.at),
                }
                for vote in self.votes
            ],
            "created_at": _iso(self.created_at),
            "pending_expires_at": _iso(self.pending_expires_at),
            "approved_at": _iso(self.approved_at),
            "grant_expires_at": _iso(self.grant_expires_at),
            "final_at": _iso(self.final_at),
            "final_reason": self.final_reason,
            "policy_revision": self.policy_revision,
            "decision_id": self.decision_id,
        }


def format_duration(seconds: float) -> str:
    """Say how long, coarsely: "45s", "59m", "3h59m", "2d4h"; never negative."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _time(message: Any, name: str) -> dt.datetime | None:
    # An unset Timestamp reads as the epoch; None says "not yet" instead of 1970.
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
