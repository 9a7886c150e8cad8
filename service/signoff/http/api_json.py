"""Approvals as the HTTP API's JSON: the same fields as the gRPC `Approval` message, named alike."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from signoff.approvals.model import ApprovalRecord, is_approval_id
from signoff.approvals.store import iso
from signoff.errors import InvalidRequest
from signoff.views import requirement_from_doc

# Times the record keeps in ms since the epoch, as the JSON member each one becomes.
_TIMES = (
    ("created_at", "created_ms"),
    ("pending_expires_at", "pending_expires_ms"),
    ("approved_at", "approved_ms"),
    ("grant_expires_at", "grant_expires_ms"),
    ("final_at", "final_ms"),
)


def _time(ms: int) -> str | None:
    return iso(ms) if ms else None


def approval_json(record: ApprovalRecord) -> dict[str, Any]:
    """`record` as reviewers may see it: the stored view is already masked by the plan."""
    req = requirement_from_doc(record.requirement, record.requester_ids)
    out: dict[str, Any] = {
        "id": record.id,
        "state": record.state.value,
        "requirement": {
            "approvers": [
                {"roles": list(s.roles), "groups": list(s.groups)} for s in req.approvers
            ],
            "quorum": req.quorum,
            "pending_ttl_seconds": int(req.pending_ttl.total_seconds()),
            "grant_ttl_seconds": int(req.grant_ttl.total_seconds()),
            "rule_ids": list(req.rule_ids),
            "requester_ids": list(req.requester_ids),
        },
        "request": record.view.to_doc(),
        "votes": [
            {
                "approver_id": v.approver_id,
                "decision": "approve" if v.approve else "reject",
                "reason": v.reason,
                "at": _time(v.at_ms),
            }
            for v in record.votes
        ],
        "final_reason": record.final_reason,
        "policy_revision": record.policy_revision,
        "decision_id": record.decision_id,
    }
    for name, attr in _TIMES:
        out[name] = _time(getattr(record, attr))
    return out


# --- page tokens -----------------------------------------------------------------------------
# A token is the position of a page's last entry in the store's order, (pending_expires_ms, id),
# so the next page starts right after it whatever was added or removed meanwhile. It only says
# where to continue in a list the caller may read anyway, so it needs no signature; it is
# validated like any other input.


def page_token(record: ApprovalRecord) -> str:
    raw = json.dumps([record.pending_expires_ms, record.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def page_position(token: str) -> tuple[int, str]:
    """The position `token` names; InvalidRequest("page_token") for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ms, approval_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidRequest("page_token", "is not a token this API returned") from None
    if type(ms) is not int or not isinstance(approval_id, str) or not is_approval_id(approval_id):
        raise InvalidRequest("page_token", "is not a token this API returned")
    return ms, approval_id
