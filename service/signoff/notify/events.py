"""Approval events as the notifier reads them: only allowlisted fields of expected types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

CREATED: Final = "approval.created"
# Final outcomes get a one-line follow-up so reviewers stop acting on a closed request.
# `voted` (progress toward quorum) and `consumed` (the grant was used) are not posted:
# neither asks anything of a reviewer, and a channel full of them buries the requests.
FOLLOW_UPS: Final[Mapping[str, str]] = {
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.expired": "expired",
    "approval.cancelled": "cancelled",
}


@dataclass(frozen=True)
class FieldRef:
    path: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApproverSet:
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Summary:
    """The masked summary, holding only the keys the notifier renders; all else is dropped."""

    requester_id: str = ""
    requester_kind: str = ""
    action: str = ""
    resource_kind: str = ""
    resource_id: str = ""
    environment: str = ""
    fields: tuple[FieldRef, ...] = ()
    reasons: tuple[str, ...] = ()
    matched_rules: tuple[str, ...] = ()
    approvers: tuple[ApproverSet, ...] = ()
    quorum: int = 0
    pending_ttl_seconds: int = 0
    grant_ttl_seconds: int = 0
    pending_expires_at: str = ""
    # The asking rules' labels (e.g. compliance: soc2, gdpr) as sorted (name, values) pairs.
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Event:
    """One stream entry. The free-text `reason` is deliberately not carried: it is never posted."""

    type: str
    approval_id: str
    from_state: str = ""
    to_state: str = ""
    actor: str = ""
    at: str = ""
    summary: Summary = Summary()


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; `true` is not a quorum.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _dicts(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def parse_summary(raw: str) -> Summary:
    """Parse the summary JSON, copying only allowlisted keys of the expected types."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return Summary()
    requirement = data.get("requirement")
    if not isinstance(requirement, dict):
        requirement = {}
    return Summary(
        requester_id=_str(data, "requester_id"),
        requester_kind=_str(data, "requester_kind"),
        action=_str(data, "action"),
        resource_kind=_str(data, "resource_kind"),
        resource_id=_str(data, "resource_id"),
        environment=_str(data, "environment"),
        fields=tuple(
            FieldRef(path=_str(f, "path"), tags=_strs(f, "tags"))
            for f in _dicts(data, "fields")
            if _str(f, "path")
        ),
        reasons=_strs(data, "reasons"),
        matched_rules=_strs(data, "matched_rules"),
        approvers=tuple(
            ApproverSet(roles=_strs(s, "roles"), groups=_strs(s, "groups"))
            for s in _dicts(requirement, "approvers")
        ),
        quorum=_int(requirement, "quorum"),
        pending_ttl_seconds=_int(requirement, "pending_ttl_seconds"),
        grant_ttl_seconds=_int(requirement, "grant_ttl_seconds"),
        pending_expires_at=_str(data, "pending_expires_at"),
        labels=_labels(requirement),
    )


def _labels(requirement: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    value = requirement.get("labels")
    if not isinstance(value, dict):
        return ()
    pairs = ((name, _strs(value, name)) for name in sorted(value) if isinstance(name, str))
    return tuple((name, values) for name, values in pairs if values)


def parse_event(fields: Mapping[str, str]) -> Event:
    """Build an Event from a stream entry's fields; unknown fields are ignored."""
    return Event(
        type=fields.get("type", ""),
        approval_id=fields.get("approval_id", ""),
        from_state=fields.get("from", ""),
        to_state=fields.get("to", ""),
        actor=fields.get("actor", ""),
        at=fields.get("at", ""),
        summary=parse_summary(fields.get("summary", "")),
    )


def coerce_event(event: Event | Mapping[str, str]) -> Event:
    return event if isinstance(event, Event) else parse_event(event)
