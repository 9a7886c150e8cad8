"""Where a decision meets its approval: hold it as pending, or use a granted approval once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from signoff.approvals.digest import request_digest
from signoff.approvals.model import is_approval_id
from signoff.approvals.store import ApprovalStore, Outcome, PendingLimit, iso
from signoff.engine.model import Decision, Request, Verdict
from signoff.views import Views, requirement_doc

# Consume outcomes other than success, as the DENY reason the caller sees.
_REFUSALS = {
    "mismatch": "approval_mismatch",
    "consumed": "approval_already_used",
    "expired": "approval_expired",
    "rejected": "approval_rejected",
    "cancelled": "approval_cancelled",
    "not_found": "approval_not_found",
}


@dataclass(frozen=True)
class Held:
    """A decision after the approval step, and the approval it concerns (if any)."""

    decision: Decision
    approval_id: str = ""
    # The approval transition this decision caused: "created", "consumed", or "".
    transition: str = ""


class ApprovalFlow:
    """Applies the approval rules to REQUIRE_APPROVAL decisions; everything else passes."""

    def __init__(self, store: ApprovalStore, *, digest_key: bytes, views: Views) -> None:
        self.store = store
        self._digest_key = digest_key
        self.views = views

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
            return Held(granted, request.approval_id, "consumed")
        if outcome.status in ("pending", "approved"):
            return Held(decision, request.approval_id)
        reason = _REFUSALS.get(outcome.status, "approval_invalid")
        return Held(_denied(decision, reason), request.approval_id)

    def _hold(self, request: Request, decision: Decision, decision_id: str, digest: str) -> Held:
        req = decision.approval
        assert req is not None  # the engine always sets it with REQUIRE_APPROVAL
        pending_expires = iso(self.store.clock() + int(req.pending_ttl.total_seconds() * 1000))
        summary = self.views.summary(request, decision, pending_expires)
        doc = {
            "requester_id": request.principal.id,
            "requester_kind": request.principal.kind.value,
            "requester_ids": list(req.requester_ids),
            "requirement": requirement_doc(req),
            "view": self.views.reviewer_view(request, decision),
            "policy_revision": decision.policy_revision,
            "decision_id": decision_id,
        }
        try:
            approval_id, created = self.store.create(
                digest=digest,
                requester=request.principal.id,
                pending_ttl_ms=int(req.pending_ttl.total_seconds() * 1000),
                grant_ttl_ms=int(req.grant_ttl.total_seconds() * 1000),
                doc=doc,
                summary=summary,
            )
        except PendingLimit:
            # Fails closed: no approval to wait for, so the action is denied, with a reason the
            # caller can act on (wait for or cancel the approvals it has asked for).
            return Held(_denied(decision, "approval_pending_limit"))
        return Held(decision, approval_id, "created" if created else "")


def _denied(decision: Decision, reason: str) -> Decision:
    """The policy asked for an approval that cannot be had: denied, for `reason`."""
    return Decision(
        Verdict.DENY,
        decision.policy_revision,
        matched_rules=decision.matched_rules,
        reasons=(reason,),
    )
