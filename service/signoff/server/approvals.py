"""ApprovalService: list, inspect, approve, reject, cancel and watch approvals over gRPC."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from signoff.approvals.eligibility import check_approver, is_requester, may_view, voter_key
from signoff.approvals.model import ApprovalRecord, Identity, State, is_approval_id
from signoff.approvals.store import ApprovalStore
from signoff.errors import Conflict, InvalidRequest, NotFound, Overloaded, PermissionDenied
from signoff.observability import Telemetry
from signoff.server.status import abort, guarded
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.views import mask_op_proto, requirement_from_doc, requirement_proto

log = logging.getLogger("signoff.approvals")
T = TypeVar("T")
MAX_REASON = 2000
# Stored reviewer payloads are capped at 16 KiB, so a full page stays under gRPC's default
# 4 MiB client receive limit.
MAX_PAGE = 200
WATCHES_PER_CALLER = 2
_STATES = {
    State.PENDING: apb.APPROVAL_STATE_PENDING,
    State.APPROVED: apb.APPROVAL_STATE_APPROVED,
    State.REJECTED: apb.APPROVAL_STATE_REJECTED,
    State.CANCELLED: apb.APPROVAL_STATE_CANCELLED,
    State.EXPIRED: apb.APPROVAL_STATE_EXPIRED,
    State.CONSUMED: apb.APPROVAL_STATE_CONSUMED,
}
_KINDS = {
    "human": pb.PRINCIPAL_KIND_HUMAN,
    "agent": pb.PRINCIPAL_KIND_AGENT,
    "service": pb.PRINCIPAL_KIND_SERVICE,
}


class Authenticator(Protocol):
    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity: ...


def _ts(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def to_proto(record: ApprovalRecord) -> apb.Approval:
    requirement = requirement_proto(requirement_from_doc(record.requirement, record.requester_ids))
    v = record.view
    payload = struct_pb2.Struct()
    payload.update(v.get("payload") or {})
    view = apb.ApprovalRequestView(
        requester_id=v["requester_id"],
        requester_kind=_KINDS.get(v["requester_kind"], pb.PRINCIPAL_KIND_UNSPECIFIED),
        requester_roles=v.get("requester_roles", []),
        action=v["action"],
        resource_kind=v["resource_kind"],
        resource_id=v.get("resource_id", ""),
        fields=[pb.Field(path=f["path"], tags=f.get("tags", [])) for f in v.get("fields", [])],
        payload=payload,
        environment=v.get("environment", ""),
        reasons=v.get("reasons", []),
        matched_rules=v.get("matched_rules", []),
    )
    for m in v.get("masking_plan", []):
        view.masking_plan.fields.add(
            path=m["path"],
            operator=mask_op_proto(m["operator"]),
            keep_first=m.get("keep_first", 0),
            keep_last=m.get("keep_last", 0),
        )
    out = apb.Approval(
        id=record.id,
        state=_STATES[record.state],
        requirement=requirement,
        request=view,
        final_reason=record.final_reason,
        policy_revision=record.policy_revision,
        decision_id=record.decision_id,
    )
    for vote in record.votes:
        decision = apb.VOTE_DECISION_APPROVE if vote.approve else apb.VOTE_DECISION_REJECT
        out.votes.add(
            approver_id=vote.approver_id, decision=decision, reason=vote.reason, at=_ts(vote.at_ms)
        )
    for name, ms in (
        ("created_at", record.created_ms),
        ("pending_expires_at", record.pending_expires_ms),
        ("approved_at", record.approved_ms),
        ("grant_expires_at", record.grant_expires_ms),
        ("final_at", record.final_ms),
    ):
        ts = _ts(ms)
        if ts is not None:
            getattr(out, name).CopyFrom(ts)
    return out


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


class ApprovalService(apb_grpc.ApprovalServiceServicer):
    """Every call is authenticated first; who may do what is decided by eligibility.py."""

    def __init__(
        self,
        store: ApprovalStore,
        authenticator: Authenticator,
        *,
        watch_poll_ms: int = 250,
        watch_max_seconds: float = 900.0,
        max_watchers: int = 4,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.auth = authenticator
        self._telemetry = telemetry or Telemetry.disabled()
        self._poll_ms = watch_poll_ms
        self._watch_max = watch_max_seconds
        # Each open watch holds a worker thread; bounded so watchers can never starve Check.
        self._watch_slots = threading.BoundedSemaphore(max(1, max_watchers))
        self._watch_lock = threading.Lock()
        self._watching: dict[str, int] = {}

    def _who(self, context: grpc.ServicerContext) -> Identity:
        return self.auth.from_metadata(context.invocation_metadata())

    def _visible(self, approval_id: str, who: Identity) -> ApprovalRecord:
        record = self.store.get(_approval_id(approval_id))
        if record is None:
            raise NotFound("no such approval")
        if not may_view(record, who):
            raise PermissionDenied(
                "not_eligible", "only the requester and eligible approvers see it"
            )
        return record

    def ListApprovals(
        self, request: apb.ListApprovalsRequest, context: grpc.ServicerContext
    ) -> apb.ListApprovalsResponse:
        def run() -> apb.ListApprovalsResponse:
            who = self._who(context)
            size = min(request.page_size or 50, MAX_PAGE)
            out = apb.ListApprovalsResponse()
            for record in self.store.pending(limit=10_000):
                try:
                    check_approver(record, who)
                except PermissionDenied:
                    continue
                out.approvals.append(to_proto(record))
                if len(out.approvals) >= size:
                    break
            return out

        return guarded(context, run)

    def GetApproval(
        self, request: apb.GetApprovalRequest, context: grpc.ServicerContext
    ) -> apb.GetApprovalResponse:
        def run() -> apb.GetApprovalResponse:
            who = self._who(context)
            return apb.GetApprovalResponse(
                approval=to_proto(self._visible(request.approval_id, who))
            )

        return guarded(context, run)

    def _vote(
        self, approval_id: str, reason_text: str, context: grpc.ServicerContext, approve: bool
    ) -> apb.Approval:
        who = self._who(context)
        reason = _reason(reason_text, required=True)
        record = self.store.get(_approval_id(approval_id))
        if record is None:
            raise NotFound("no such approval")
        # Eligibility depends only on the immutable requirement and the verified caller, so
        # checking before the atomic transition leaves no window to exploit.
        check_approver(record, who)
        if approve:
            outcome = self.store.approve(record.id, voter_key(who), reason, record.quorum)
        else:
            outcome = self.store.reject(record.id, voter_key(who), reason)
        if outcome.status == "not_found":
            raise NotFound("no such approval")
        if outcome.status == "conflict":
            raise Conflict(f"approval is {outcome.detail}, not pending")
        log.info(
            "approval %s %s by %s: %s",
            record.id,
            "approve" if approve else "reject",
            who.subject,
            outcome.status,
        )
        if outcome.status in ("approved", "rejected"):
            self._telemetry.approval_event(record.id, "pending", outcome.status, who.subject)
            self._telemetry.record_approval_outcome(outcome.status)
        elif outcome.status == "voted":
            self._telemetry.approval_event(record.id, "pending", "pending", who.subject)
        fresh = self.store.get(record.id)
        if fresh is None:
            raise NotFound("no such approval")
        return to_proto(fresh)

    def Approve(
        self, request: apb.ApproveRequest, context: grpc.ServicerContext
    ) -> apb.ApproveResponse:
        return guarded(
            context,
            lambda: apb.ApproveResponse(
                approval=self._vote(request.approval_id, request.reason, context, True)
            ),
        )

    def Reject(
        self, request: apb.RejectRequest, context: grpc.ServicerContext
    ) -> apb.RejectResponse:
        return guarded(
            context,
            lambda: apb.RejectResponse(
                approval=self._vote(request.approval_id, request.reason, context, False)
            ),
        )

    def Cancel(
        self, request: apb.CancelRequest, context: grpc.ServicerContext
    ) -> apb.CancelResponse:
        def run() -> apb.CancelResponse:
            who = self._who(context)
            reason = _reason(request.reason, required=False) or "cancelled by the requester"
            record = self.store.get(_approval_id(request.approval_id))
            if record is None:
                raise NotFound("no such approval")
            if not is_requester(record, who):
                raise PermissionDenied("not_requester", "only the requester can cancel")
            outcome = self.store.cancel(record.id, who.subject, reason)
            if outcome.status == "cancelled":
                self._telemetry.approval_event(
                    record.id, record.state.value, "cancelled", who.subject
                )
                self._telemetry.record_approval_outcome("cancelled")
            if outcome.status == "not_found":
                raise NotFound("no such approval")
            if outcome.status == "conflict":
                raise Conflict(
                    f"approval is {outcome.detail}; only pending or approved can be cancelled"
                )
            fresh = self.store.get(record.id)
            if fresh is None:
                raise NotFound("no such approval")
            return apb.CancelResponse(approval=to_proto(fresh))

        return guarded(context, run)

    def WatchApproval(
        self, request: apb.WatchApprovalRequest, context: grpc.ServicerContext
    ) -> Iterator[apb.WatchApprovalResponse]:
        try:
            # Authenticated first, so an anonymous caller cannot hold a slot.
            who = self._who(context)
        except Exception as exc:
            abort(context, exc)
        key = voter_key(who)
        with self._watch_lock:
            # A few open watches per identity, so no caller can take every slot.
            mine = self._watching.get(key, 0)
            busy = mine >= WATCHES_PER_CALLER or not self._watch_slots.acquire(blocking=False)
            if not busy:
                self._watching[key] = mine + 1
        if busy:
            abort(context, Overloaded("too many open watches; poll Check or GetApproval"))
        try:
            yield from self._watch(request, context, who)
        finally:
            with self._watch_lock:
                left = self._watching.pop(key, 1) - 1
                if left:
                    self._watching[key] = left
            self._watch_slots.release()

    def _watch(
        self, request: apb.WatchApprovalRequest, context: grpc.ServicerContext, who: Identity
    ) -> Iterator[apb.WatchApprovalResponse]:
        try:
            approval_id = _approval_id(request.approval_id)
            stream = self.store.approval_events_stream(approval_id)
            last = self.store.last_event_id(stream)
            record = self._visible(approval_id, who)
        except Exception as exc:
            abort(context, exc)
        yield apb.WatchApprovalResponse(approval=to_proto(record))
        deadline = time.monotonic() + self._watch_max
        while not record.state.final and context.is_active() and time.monotonic() < deadline:
            try:
                last = self._wait(stream, last, record)
                fresh = self.store.get(approval_id)
            except Exception as exc:
                abort(context, exc)
            if fresh is None:
                return
            if fresh != record:
                record = fresh
                yield apb.WatchApprovalResponse(approval=to_proto(record))

    def _wait(self, stream: str, last: str, record: ApprovalRecord) -> str:
        # Wake on the next transition, or when a window ends (expiry writes no event until
        # the sweeper runs, but the record already reads as expired).
        now = self.store.clock()
        due = (
            record.pending_expires_ms if record.state is State.PENDING else record.grant_expires_ms
        )
        block = max(1, min(self._poll_ms, due - now + 1)) if due else self._poll_ms
        return self.store.wait_for_event(stream, last, block)
