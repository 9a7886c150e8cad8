"""ApprovalService over gRPC: authenticate the caller, call `Approvals`, convert the answer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import Protocol

import grpc

from signoff.approvals.model import ApprovalRecord, Identity
from signoff.approvals.service import Approvals
from signoff.server.protos import approval_proto
from signoff.server.status import abort, guarded
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc


class Authenticator(Protocol):
    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity: ...


class ApprovalService(apb_grpc.ApprovalServiceServicer):
    """Every call is authenticated first; what the caller may do is decided by `Approvals`."""

    def __init__(self, approvals: Approvals, authenticator: Authenticator) -> None:
        self.approvals = approvals
        self.auth = authenticator

    def _who(self, context: grpc.ServicerContext) -> Identity:
        return self.auth.from_metadata(context.invocation_metadata())

    def ListApprovals(
        self, request: apb.ListApprovalsRequest, context: grpc.ServicerContext
    ) -> apb.ListApprovalsResponse:
        def run() -> apb.ListApprovalsResponse:
            records = self.approvals.list(self._who(context), request.page_size)
            return apb.ListApprovalsResponse(approvals=[approval_proto(r) for r in records])

        return guarded(context, run)

    def GetApproval(
        self, request: apb.GetApprovalRequest, context: grpc.ServicerContext
    ) -> apb.GetApprovalResponse:
        def run() -> apb.GetApprovalResponse:
            record = self.approvals.get(request.approval_id, self._who(context))
            return apb.GetApprovalResponse(approval=approval_proto(record))

        return guarded(context, run)

    def _vote(
        self, request: apb.ApproveRequest | apb.RejectRequest, context: grpc.ServicerContext
    ) -> apb.Approval:
        approve = isinstance(request, apb.ApproveRequest)
        who = self._who(context)
        return approval_proto(
            self.approvals.vote(request.approval_id, who, request.reason, approve=approve)
        )

    def Approve(
        self, request: apb.ApproveRequest, context: grpc.ServicerContext
    ) -> apb.ApproveResponse:
        return guarded(context, lambda: apb.ApproveResponse(approval=self._vote(request, context)))

    def Reject(
        self, request: apb.RejectRequest, context: grpc.ServicerContext
    ) -> apb.RejectResponse:
        return guarded(context, lambda: apb.RejectResponse(approval=self._vote(request, context)))

    def Cancel(
        self, request: apb.CancelRequest, context: grpc.ServicerContext
    ) -> apb.CancelResponse:
        def run() -> apb.CancelResponse:
            who = self._who(context)
            record = self.approvals.cancel(request.approval_id, who, request.reason)
            return apb.CancelResponse(approval=approval_proto(record))

        return guarded(context, run)

    def WatchApproval(
        self, request: apb.WatchApprovalRequest, context: grpc.ServicerContext
    ) -> Iterator[apb.WatchApprovalResponse]:
        try:
            # Authenticated first, so an anonymous caller cannot hold a watch slot.
            who = self._who(context)
            updates = self.approvals.watch(request.approval_id, who, active=context.is_active)
            # Closed as soon as the call ends, so the caller's watch slot is free again.
            with closing(updates):
                for record in updates:
                    yield _watched(record)
        except Exception as exc:
            abort(context, exc)


def _watched(record: ApprovalRecord) -> apb.WatchApprovalResponse:
    return apb.WatchApprovalResponse(approval=approval_proto(record))
