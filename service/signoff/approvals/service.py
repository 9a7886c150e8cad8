"""The approval lifecycle in one object: every surface (gRPC, HTTP, chat, web) calls `Approvals`.

Decisions come in through `apply` (hold a REQUIRE_APPROVAL decision as pending, or use a granted
approval once); reviewers and requesters through `list`, `get`, `vote`, `cancel` and `watch`,
always as a verified `Identity`. Who may do what is eligibility.py's rule; the transitions are
the store's atomic scripts (which also write the events the audit trail and notifiers read);
their results become signoff.errors here, and telemetry is reported here, once per transition.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from signoff.approvals.digest import request_digest
from signoff.approvals.eligibility import check_approver, is_requester, may_view, voter_key
from signoff.approvals.model import ApprovalRecord, ApprovalRequest, Identity, State, is_approval_id
from signoff.approvals.store import ApprovalStore, Outcome, PendingLimit, Result, iso
from signoff.engine.model import Decision, Request, Verdict
from signoff.errors import Conflict, InvalidRequest, NotFound, Overloaded, PermissionDenied
from signoff.observability import Telemetry
from signoff.views import Views, requirement_doc

log = logging.getLogger("signoff.approvals")
MAX_REASON = 2000
DEFAULT_PAGE = 50
# Stored reviewer payloads are capped at 16 KiB, so a full page stays under gRPC's default
# 4 MiB client receive limit.
MAX_PAGE = 200
WATCHES_PER_CALLER = 2
# Consume results other than success, as the DENY reason the caller sees.
_REFUSALS = {
    Result.MISMATCH: "approval_mismatch",
    Result.CONSUMED: "approval_already_used",
    Result.EXPIRED: "approval_expired",
    Result.REJECTED: "approval_rejected",
    Result.CANCELLED: "approval_cancelled",
    Result.NOT_FOUND: "approval_not_found",
}


@dataclass(frozen=True)
class Held:
    """A decision after the approval step, and the approval it concerns (if any)."""

    decision: Decision
    approval_id: str = ""
    # The approval transition this decision caused: Result.CREATED, Result.CONSUMED or None.
    transition: Result | None = None


class Approvals:
    """The approval lifecycle over one store; safe to share between threads."""

    def __init__(
        self,
        store: ApprovalStore,
        *,
        digest_key: bytes,
        views: Views,
        telemetry: Telemetry | None = None,
        watch_poll_ms: int = 250,
        watch_max_seconds: float = 900.0,
        max_watchers: int = 4,
    ) -> None:
        self.store = store
        self.views = views
        self._digest_key = digest_key
        # None reports nothing at all (even a disabled Telemetry adds events to the span
        # in progress): for callers that record no telemetry at all.
        self._telemetry = telemetry
        self._poll_ms = watch_poll_ms
        self._watch_max = watch_max_seconds
        # Each open watch holds a caller's worker (a gRPC thread, a connection): bounded so
        # watchers can never starve checks.
        self._watch_slots = threading.BoundedSemaphore(max(1, max_watchers))
        self._watch_lock = threading.Lock()
        self._watching: dict[str, int] = {}

    # --- decisions --------------------------------------------------------------------

    def apply(self, request: Request, decision: Decision, decision_id: str) -> Held:
        """Hold a REQUIRE_APPROVAL decision, or consume the approval `request` names; other
        verdicts pass. Raises StoreUnavailable when the store is needed but unreachable."""
        if decision.verdict is not Verdict.REQUIRE_APPROVAL:
            return Held(decision)
        if request.approval_id:
            return self.consume(request, decision)
        return self.hold(request, decision, decision_id)

    def consume(self, request: Request, decision: Decision) -> Held:
        """Use the approval `request` names, once, for exactly the action it was granted for."""
        if is_approval_id(request.approval_id):
            outcome = self.store.consume(
                request.approval_id, self._digest(request, decision), request.principal.id
            )
        else:
            outcome = Outcome(Result.NOT_FOUND)
        if outcome.status is Result.OK:
            self._report(request.approval_id, "approved", "consumed", request.principal.id)
            # What the action would have been without the sign-off: MASK keeps its plan, so a
            # caller that only looks at the verdict still knows it must mask.
            verdict = Verdict.MASK if decision.masking_plan else Verdict.ALLOW
            granted = dataclasses.replace(
                decision,
                verdict=verdict,
                reasons=(f"approved: {request.approval_id}",),
                approval=None,
            )
            return Held(granted, request.approval_id, Result.CONSUMED)
        if outcome.status in (Result.PENDING, Result.APPROVED):
            return Held(decision, request.approval_id)
        reason = _REFUSALS.get(outcome.status, "approval_invalid")
        return Held(_denied(decision, reason), request.approval_id)

    def hold(self, request: Request, decision: Decision, decision_id: str) -> Held:
        """Store `decision` as a pending approval (or find the live one for the same action)."""
        req = decision.approval
        assert req is not None  # the engine always sets it with REQUIRE_APPROVAL
        pending_ttl_ms = int(req.pending_ttl.total_seconds() * 1000)
        summary = self.views.summary(request, decision, iso(self.store.clock() + pending_ttl_ms))
        asked = ApprovalRequest(
            requester_id=request.principal.id,
            requester_kind=request.principal.kind.value,
            requester_ids=req.requester_ids,
            requirement=requirement_doc(req),
            view=self.views.reviewer_view(request, decision),
            policy_revision=decision.policy_revision,
            decision_id=decision_id,
        )
        try:
            approval_id, created = self.store.create(
                digest=self._digest(request, decision),
                requester=request.principal.id,
                pending_ttl_ms=pending_ttl_ms,
                grant_ttl_ms=int(req.grant_ttl.total_seconds() * 1000),
                doc=asked.to_doc(),
                summary=summary.to_doc(),
            )
        except PendingLimit:
            # Fails closed: no approval to wait for, so the action is denied, with a reason the
            # caller can act on (wait for or cancel the approvals it has asked for).
            return Held(_denied(decision, "approval_pending_limit"))
        if not created:
            return Held(decision, approval_id)
        self._report(approval_id, "", "pending", request.principal.id)
        return Held(decision, approval_id, Result.CREATED)

    def _digest(self, request: Request, decision: Decision) -> str:
        return request_digest(request, self._digest_key, decision.approval)

    # --- reviewers and requesters -----------------------------------------------------

    def list(
        self, who: Identity, page_size: int = 0, *, after: tuple[int, str] | None = None
    ) -> list[ApprovalRecord]:
        """Pending approvals `who` may vote on, soonest to expire first (ties by id), only
        those past `after` = (pending_expires_ms, id) when given: the store's own order, so
        pages that continue from their last entry never repeat or skip one."""
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        out: list[ApprovalRecord] = []
        for record in self.store.pending(limit=10_000):
            if after is not None and (record.pending_expires_ms, record.id) <= after:
                continue
            try:
                check_approver(record, who)
            except PermissionDenied:
                continue
            out.append(record)
            if len(out) >= size:
                break
        return out

    def get(self, approval_id: str, who: Identity) -> ApprovalRecord:
        """The approval, for its requester side and eligible approvers only."""
        record = self._existing(approval_id)
        if not may_view(record, who):
            raise PermissionDenied(
                "not_eligible", "only the requester and eligible approvers see it"
            )
        return record

    def vote(
        self, approval_id: str, who: Identity, reason: str, *, approve: bool
    ) -> ApprovalRecord:
        """Approve or reject as `who`; the approval as it stands afterwards."""
        reason = _reason(reason, required=True)
        record = self._existing(approval_id)
        # Eligibility depends only on the immutable requirement and the verified caller, so
        # checking before the atomic transition leaves no window to exploit.
        check_approver(record, who)
        if approve:
            outcome = self.store.approve(record.id, voter_key(who), reason, record.quorum)
        else:
            outcome = self.store.reject(record.id, voter_key(who), reason)
        if outcome.status is Result.NOT_FOUND:
            raise NotFound("no such approval")
        if outcome.status is Result.CONFLICT:
            raise Conflict(f"approval is {outcome.detail}, not pending")
        log.info(
            "approval %s %s by %s: %s",
            record.id,
            "approve" if approve else "reject",
            who.subject,
            outcome.status,
        )
        if outcome.status in (Result.APPROVED, Result.REJECTED):
            self._report(record.id, "pending", outcome.status.value, who.subject)
        elif outcome.status is Result.VOTED:
            self._report(record.id, "pending", "pending", who.subject)
        return self._as_left(record, outcome)

    def cancel(self, approval_id: str, who: Identity, reason: str = "") -> ApprovalRecord:
        """Withdraw a pending or approved approval; only its requester side may."""
        reason = _reason(reason, required=False) or "cancelled by the requester"
        record = self._existing(approval_id)
        if not is_requester(record, who):
            raise PermissionDenied("not_requester", "only the requester can cancel")
        outcome = self.store.cancel(record.id, who.subject, reason)
        if outcome.status is Result.NOT_FOUND:
            raise NotFound("no such approval")
        if outcome.status is Result.CONFLICT:
            raise Conflict(
                f"approval is {outcome.detail}; only pending or approved can be cancelled"
            )
        self._report(record.id, record.state.value, "cancelled", who.subject)
        return self._as_left(record, outcome)

    def watch(
        self, approval_id: str, who: Identity, *, active: Callable[[], bool] = lambda: True
    ) -> Generator[ApprovalRecord, None, None]:
        """The approval now, then again on each change, until it is final, `active()` turns
        false or the watch time is up. Raises Overloaded first when `who` (or everyone
        together) already holds as many watches as allowed; close the iterator when done."""
        key = voter_key(who)
        with self._watch_lock:
            # A few open watches per identity, so no caller can take every slot.
            mine = self._watching.get(key, 0)
            busy = mine >= WATCHES_PER_CALLER or not self._watch_slots.acquire(blocking=False)
            if not busy:
                self._watching[key] = mine + 1
        if busy:
            raise Overloaded("too many open watches; poll Check or GetApproval")
        try:
            yield from self._watch(approval_id, who, active)
        finally:
            with self._watch_lock:
                left = self._watching.pop(key, 1) - 1
                if left:
                    self._watching[key] = left
            self._watch_slots.release()

    def _watch(
        self, approval_id: str, who: Identity, active: Callable[[], bool]
    ) -> Iterator[ApprovalRecord]:
        approval_id = _approval_id(approval_id)
        stream = self.store.approval_events_stream(approval_id)
        last = self.store.last_event_id(stream)
        record = self.get(approval_id, who)
        yield record
        deadline = time.monotonic() + self._watch_max
        while not record.state.final and active() and time.monotonic() < deadline:
            last = self._wait(stream, last, record)
            fresh = self.store.get(approval_id)
            if fresh is None:
                return
            if fresh != record:
                record = fresh
                yield record

    def _wait(self, stream: str, last: str, record: ApprovalRecord) -> str:
        # Wake on the next transition, or when a window ends (expiry writes no event until
        # the sweeper runs, but the record already reads as expired).
        now = self.store.clock()
        due = (
            record.pending_expires_ms if record.state is State.PENDING else record.grant_expires_ms
        )
        block = max(1, min(self._poll_ms, due - now + 1)) if due else self._poll_ms
        return self.store.wait_for_event(stream, last, block)

    def _report(self, approval_id: str, from_state: str, to_state: str, actor: str) -> None:
        """One transition: an event on the span in progress, and the outcome counted when the
        approval leaves pending for good."""
        if self._telemetry is None:
            return
        self._telemetry.approval_event(approval_id, from_state, to_state, actor)
        if to_state not in ("", State.PENDING.value):
            self._telemetry.record_approval_outcome(to_state)

    def _as_left(self, before: ApprovalRecord, outcome: Outcome) -> ApprovalRecord:
        """The approval as this transition left it: handed back by the transition's own script
        (no second read, and no later change mixed in)."""
        after = self.store.as_left(before, outcome)
        return after if after is not None else self._existing(before.id)

    def _existing(self, approval_id: str) -> ApprovalRecord:
        record = self.store.get(_approval_id(approval_id))
        if record is None:
            raise NotFound("no such approval")
        return record


def _reason(value: str, *, required: bool) -> str:
    reason = value.strip()
    if required and not reason:
        raise InvalidRequest("reason", "is required: say why")
    if len(reason) > MAX_REASON:
        raise InvalidRequest("reason", f"longer than {MAX_REASON} characters")
    return reason


def _approval_id(value: str) -> str:
    if not value:
        raise InvalidRequest("approval_id", "is required")
    if not is_approval_id(value):
        raise NotFound("no such approval")
    return value


def _denied(decision: Decision, reason: str) -> Decision:
    """The policy asked for an approval that cannot be had: denied, for `reason`."""
    return Decision(
        Verdict.DENY,
        decision.policy_revision,
        matched_rules=decision.matched_rules,
        reasons=(reason,),
    )
