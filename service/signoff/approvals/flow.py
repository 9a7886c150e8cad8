"""Where a decision meets its approval: hold it as pending, or use a granted approval once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from signoff.approvals.digest import request_digest
from signoff.approvals.model import is_approval_id
from signoff.approvals.store import ApprovalStore, Outcome, iso
from signoff.client.masking import apply_mask
from signoff.engine.model import ApprovalRequirement, Decision, MaskOp, Request, Verdict
from signoff.v1 import signoff_pb2 as pb

# Consume outcomes other than success, as the DENY reason the caller sees.
_REFUSALS = {
    "mismatch": "approval_mismatch",
    "consumed": "approval_already_used",
    "expired": "approval_expired",
    "rejected": "approval_rejected",
    "cancelled": "approval_cancelled",
    "not_found": "approval_not_found",
}
_PB_OPS = {
    MaskOp.NULLIFY: pb.MASK_OPERATOR_NULLIFY,
    MaskOp.REDACT: pb.MASK_OPERATOR_REDACT,
    MaskOp.HASH: pb.MASK_OPERATOR_HASH,
    MaskOp.EMAIL: pb.MASK_OPERATOR_EMAIL,
    MaskOp.PARTIAL: pb.MASK_OPERATOR_PARTIAL,
}


@dataclass(frozen=True)
class Held:
    """A decision after the approval step, and the approval it concerns (if any)."""

    decision: Decision
    approval_id: str = ""


def requirement_doc(req: ApprovalRequirement) -> dict[str, Any]:
    return {
        "approvers": [{"roles": list(s.roles), "groups": list(s.groups)} for s in req.approvers],
        "quorum": req.quorum,
        "pending_ttl_seconds": int(req.pending_ttl.total_seconds()),
        "grant_ttl_seconds": int(req.grant_ttl.total_seconds()),
        "rule_ids": list(req.rule_ids),
    }


class ApprovalFlow:
    """Applies the approval rules to REQUIRE_APPROVAL decisions; everything else passes."""

    def __init__(
        self, store: ApprovalStore, *, digest_key: bytes, hash_key: bytes, hash_key_id: str
    ) -> None:
        self.store = store
        self._digest_key = digest_key
        self._keys = {hash_key_id: hash_key}
        self._hash_key_id = hash_key_id

    def apply(self, request: Request, decision: Decision, decision_id: str) -> Held:
        """Raises StoreUnavailable when the approval store is needed but unreachable."""
        if decision.verdict is not Verdict.REQUIRE_APPROVAL:
            return Held(decision)
        digest = request_digest(request, self._digest_key, decision.approval)
        if request.approval_id:
            return self._use(request, decision, digest)
        return self._hold(request, decision, decision_id, digest)

    def _use(self, request: Request, decision: Decision, digest: str) -> Held:
        if is_approval_id(request.approval_id):
            outcome = self.store.consume(request.approval_id, digest, request.principal.id)
        else:
            outcome = Outcome("not_found")
        if outcome.status == "ok":
            # What the action would have been without the sign-off: MASK keeps its plan, so a
            # caller that only looks at the verdict still knows it must mask.
            verdict = Verdict.MASK if decision.masking_plan else Verdict.ALLOW
            granted = dataclasses.replace(
                decision,
                verdict=verdict,
                reasons=(f"approved: {request.approval_id}",),
                approval=None,
            )
            return Held(granted, request.approval_id)
        if outcome.status in ("pending", "approved"):
            return Held(decision, request.approval_id)
        reason = _REFUSALS.get(outcome.status, "approval_invalid")
        denied = Decision(
            Verdict.DENY,
            decision.policy_revision,
            matched_rules=decision.matched_rules,
            reasons=(reason,),
        )
        return Held(denied, request.approval_id)

    def _hold(self, request: Request, decision: Decision, decision_id: str, digest: str) -> Held:
        req = decision.approval
        assert req is not None  # the engine always sets it with REQUIRE_APPROVAL
        summary = self.summary(request, decision)
        doc = {
            "requester_id": request.principal.id,
            "requester_kind": request.principal.kind.value,
            "requester_ids": list(req.requester_ids),
            "requirement": requirement_doc(req),
            "view": self.view(request, decision),
            "policy_revision": decision.policy_revision,
            "decision_id": decision_id,
        }
        approval_id, _created = self.store.create(
            digest=digest,
            requester=request.principal.id,
            pending_ttl_ms=int(req.pending_ttl.total_seconds() * 1000),
            grant_ttl_ms=int(req.grant_ttl.total_seconds() * 1000),
            doc=doc,
            summary=summary,
        )
        return Held(decision, approval_id)

    def plan_proto(self, decision: Decision) -> pb.MaskingPlan:
        plan = pb.MaskingPlan()
        for m in decision.masking_plan:
            plan.fields.add(
                path=m.path,
                operator=_PB_OPS[m.op],
                keep_first=m.keep_first,
                keep_last=m.keep_last,
                key_id=self._hash_key_id if m.op is MaskOp.HASH else "",
                rule_ids=m.rule_ids,
            )
        return plan

    def view(self, request: Request, decision: Decision) -> dict[str, Any]:
        """The request as reviewers see it: ids, names and the masked payload, no attributes."""
        plan = self.plan_proto(decision)
        return {
            "requester_id": request.principal.id,
            "requester_kind": request.principal.kind.value,
            "requester_roles": sorted(set(request.principal.roles)),
            "action": request.action,
            "resource_kind": request.resource.kind,
            "resource_id": request.resource.id,
            "fields": [{"path": f.path, "tags": list(f.tags)} for f in request.resource.fields],
            "payload": apply_mask(request.payload, plan, keys=self._keys),
            "environment": request.context.environment,
            "reasons": list(decision.reasons),
            "matched_rules": list(decision.matched_rules),
            "masking_plan": [
                {
                    "path": m.path,
                    "operator": m.op.name.lower(),
                    "keep_first": m.keep_first,
                    "keep_last": m.keep_last,
                }
                for m in decision.masking_plan
            ],
        }

    def summary(self, request: Request, decision: Decision) -> dict[str, Any]:
        """What events and notifications carry: never payload or attribute values."""
        req = decision.approval
        assert req is not None
        return {
            "requester_id": request.principal.id,
            "requester_kind": request.principal.kind.value,
            "action": request.action,
            "resource_kind": request.resource.kind,
            "resource_id": request.resource.id,
            "environment": request.context.environment,
            "fields": [{"path": f.path, "tags": list(f.tags)} for f in request.resource.fields],
            "reasons": list(decision.reasons),
            "matched_rules": list(decision.matched_rules),
            "requirement": requirement_doc(req),
            "pending_expires_at": iso(
                self.store.clock() + int(req.pending_ttl.total_seconds() * 1000)
            ),
        }
