"""What each audience may see of a request: reviewers, events and notifications, audit records.

Every view masks with the decision's own masking plan through the client package's
`apply_mask`, so a field a policy masks for the caller is masked for everyone else too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from signoff.approvals.model import ApprovalSummary, MaskedField, ReviewerView

# masking_doc is re-exported: the plan's stored form has its one home with the audit record.
from signoff.audit.record import masking_doc, request_doc
from signoff.client.masking import apply_mask
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan
from signoff.engine.model import (
    ApprovalRequirement,
    ApproverSet,
    Decision,
    FieldMask,
    MaskOp,
    Request,
)


def masking_plan(plan: Sequence[FieldMask], hash_key_id: str) -> MaskPlan:
    """The engine's plan as the client applies it (HASH entries name the server's key)."""
    return MaskPlan(
        tuple(
            MaskEntry(
                path=m.path,
                operator=MaskOperator[m.op.name],
                keep_first=m.keep_first,
                keep_last=m.keep_last,
                key_id=hash_key_id if m.op is MaskOp.HASH else "",
                rule_ids=m.rule_ids,
            )
            for m in plan
        )
    )


def masked_fields(plan: Sequence[FieldMask]) -> tuple[MaskedField, ...]:
    """A masking plan as reviewers and audit records keep it: each path with its operator and
    options, so a later replay can tell `redact` from `partial` on the same path."""
    return tuple(MaskedField(**entry) for entry in masking_doc(plan))


def requirement_from_doc(
    doc: Mapping[str, Any], requester_ids: Sequence[str]
) -> ApprovalRequirement:
    """The inverse of requirement_doc, for requirements read back from the approval store."""
    return ApprovalRequirement(
        approvers=tuple(
            ApproverSet(tuple(s.get("roles", ())), tuple(s.get("groups", ())))
            for s in doc["approvers"]
        ),
        quorum=int(doc["quorum"]),
        pending_ttl=dt.timedelta(seconds=int(doc.get("pending_ttl_seconds", 0))),
        grant_ttl=dt.timedelta(seconds=int(doc.get("grant_ttl_seconds", 0))),
        rule_ids=tuple(doc.get("rule_ids", ())),
        requester_ids=tuple(requester_ids),
        labels=tuple(
            (name, tuple(values)) for name, values in sorted(doc.get("labels", {}).items())
        ),
    )


def requirement_doc(req: ApprovalRequirement) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "approvers": [{"roles": list(s.roles), "groups": list(s.groups)} for s in req.approvers],
        "quorum": req.quorum,
        "pending_ttl_seconds": int(req.pending_ttl.total_seconds()),
        "grant_ttl_seconds": int(req.grant_ttl.total_seconds()),
        "rule_ids": list(req.rule_ids),
    }
    # Only when a rule declares labels, so requirements written without them read the same.
    if req.labels:
        doc["labels"] = {name: list(values) for name, values in req.labels}
    return doc


MAX_REVIEW_PAYLOAD_BYTES = 16 * 1024


def _bounded(payload: Any) -> Any:
    """The stored reviewer payload, or a marker when it is too large to keep per approval."""
    size = len(json.dumps(payload, separators=(",", ":"), default=str))
    if size <= MAX_REVIEW_PAYLOAD_BYTES:
        return payload
    return {"_truncated": f"payload of {size} bytes is not kept for review"}


def _fields(request: Request) -> list[dict[str, Any]]:
    return [{"path": f.path, "tags": list(f.tags)} for f in request.resource.fields]


@dataclass(frozen=True)
class AuditSelection:
    """What audit records keep beyond ids: allowlisted attributes and payload keys only.

    Attribute names are `principal.<name>`, `resource.<name>` or `context.<name>`.
    """

    attributes: frozenset[str] = field(default_factory=frozenset)
    payload_keys: frozenset[str] = field(default_factory=frozenset)

    @staticmethod
    def parse(attributes: Iterable[str], payload_keys: Iterable[str]) -> AuditSelection:
        return AuditSelection(
            frozenset(a.strip() for a in attributes if a.strip()),
            frozenset(k.strip() for k in payload_keys if k.strip()),
        )

    def pick(self, section: str, values: Mapping[str, Any]) -> dict[str, Any]:
        if not self.attributes or not values:  # the default keeps none: nothing to look at
            return {}
        return {k: v for k, v in sorted(values.items()) if f"{section}.{k}" in self.attributes}


class Views:
    """Builds the masked views; holds the hash key so HASH masks can be applied server-side."""

    def __init__(
        self, *, hash_key: bytes, hash_key_id: str, audit: AuditSelection | None = None
    ) -> None:
        self.hash_key_id = hash_key_id
        self._keys = {hash_key_id: hash_key}
        self.audit_selection = audit or AuditSelection()

    def plan(self, decision: Decision) -> MaskPlan:
        return masking_plan(decision.masking_plan, self.hash_key_id)

    def masked_payload(self, request: Request, decision: Decision) -> Any:
        # Lenient: the plan addresses the resource's data; the payload may hold some of it.
        return apply_mask(request.payload, self.plan(decision), keys=self._keys, lenient=True)

    def reviewer_view(self, request: Request, decision: Decision) -> ReviewerView:
        """The request as approvers see it: ids, names and the masked payload, no attributes."""
        return ReviewerView(
            requester_id=request.principal.id,
            requester_kind=request.principal.kind.value,
            requester_roles=tuple(sorted(set(request.principal.roles))),
            action=request.action,
            resource_kind=request.resource.kind,
            resource_id=request.resource.id,
            fields=request.resource.fields,
            payload=_bounded(self.masked_payload(request, decision)),
            environment=request.context.environment,
            reasons=decision.reasons,
            matched_rules=decision.matched_rules,
            masking_plan=masked_fields(decision.masking_plan),
        )

    def summary(
        self, request: Request, decision: Decision, pending_expires_at: str
    ) -> ApprovalSummary:
        """What events and notifications carry: never payload or attribute values."""
        req = decision.approval
        assert req is not None
        return ApprovalSummary(
            requester_id=request.principal.id,
            requester_kind=request.principal.kind.value,
            action=request.action,
            resource_kind=request.resource.kind,
            resource_id=request.resource.id,
            environment=request.context.environment,
            fields=request.resource.fields,
            reasons=decision.reasons,
            matched_rules=decision.matched_rules,
            requirement=requirement_doc(req),
            pending_expires_at=pending_expires_at,
        )

    def audit_view(self, request: Request, decision: Decision) -> dict[str, Any]:
        """The request as an audit record keeps it: allowlisted attributes, and of the payload
        only allowlisted keys, after the decision's masking plan; other keys by name only."""
        sel = self.audit_selection
        # Plan paths start at a top-level key, so masking just the kept keys gives the same
        # values as masking everything first, without copying what is then thrown away.
        kept = (
            {k: v for k, v in sorted(request.payload.items()) if k in sel.payload_keys}
            if sel.payload_keys
            else {}
        )
        payload = (
            apply_mask(kept, self.plan(decision), keys=self._keys, lenient=True) if kept else {}
        )
        return request_doc(request, sel.pick, payload)
