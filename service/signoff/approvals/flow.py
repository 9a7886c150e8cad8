"""The decision service's former entry into approvals, kept while it moves to `Approvals`."""

from __future__ import annotations

from signoff.approvals.service import Approvals, Held
from signoff.approvals.store import ApprovalStore
from signoff.engine.model import Decision, Request
from signoff.views import Views

__all__ = ["ApprovalFlow", "Held"]


class ApprovalFlow:
    """`Approvals.apply` without telemetry: server/service.py still reports the transitions a
    decision causes itself (`_note_transition`); once it calls `Approvals.apply`, which reports
    them, this class goes."""

    def __init__(self, store: ApprovalStore, *, digest_key: bytes, views: Views) -> None:
        self.store = store
        self.views = views
        self._approvals = Approvals(store, digest_key=digest_key, views=views)

    def apply(self, request: Request, decision: Decision, decision_id: str) -> Held:
        """Raises StoreUnavailable when the approval store is needed but unreachable."""
        return self._approvals.apply(request, decision, decision_id)
