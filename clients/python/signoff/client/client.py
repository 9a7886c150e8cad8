"""A typed, synchronous client for the signoff DecisionService and ApprovalService."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from signoff.client import calls
from signoff.client.approvals import Approval, ApprovalState
from signoff.client.calls import batch_results, check_settings
from signoff.client.coalesce import (
    Coalescing,
    Entry,
    ThreadCoalescer,
    batch_outcome,
    check_outcome,
)
from signoff.client.errors import InvalidInput
from signoff.client.tls import TLS
from signoff.client.types import CheckItem, Context, Decision, ItemFailure, Principal, Resource
from signoff.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    approvals_pb2,
    approvals_pb2_grpc,
    signoff_pb2,
    signoff_pb2_grpc,
)

__all__ = ["SignoffClient"]

_Response = TypeVar("_Response")
# A stream the server ends early (it caps each watch) is reopened, but never in a tight loop.
_REWATCH_PAUSE = 0.5
# On by default: answers, errors and deadlines are those of unary calls (tests/client prove
# it), a lone caller's check is sent at once as a plain Check, and concurrent callers share
# one CheckBatch, which costs the server a fraction of the calls it replaces.
DEFAULT_COALESCING = Coalescing()


class SignoffClient:
    """Asks a signoff service for decisions.

    With no `channel`, a channel to `target` is opened (over TLS when `tls` is given) and
    closed by `close()` (or by leaving the `with` block). A `channel` passed in belongs to the
    caller and is left open, so one channel can be shared; `target` is then only used in
    messages.

    `token` is the caller's bearer credential (a JWT from the identity provider), sent with
    every ApprovalService call and never with checks. It is opaque here: never parsed, logged
    or shown in a repr or an error. A token is never sent in plaintext beyond this machine:
    with a token, a target that is not loopback needs `tls` (or a `channel` of your own).

    Checks asked from several threads at once are coalesced into CheckBatch calls as
    `coalescing` says (see `signoff.client.coalesce` and docs/client.md): a lone check is
    still sent at once as a plain Check, and every check gets the answer, error and deadline
    it would get alone. Share one client between threads; None sends every check by itself.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        channel: grpc.Channel | None = None,
        token: str | None = None,
        tls: TLS | None = None,
        coalescing: Coalescing | None = DEFAULT_COALESCING,
    ) -> None:
        check_settings(target, timeout, channel, token, tls)
        self.target = target
        self.timeout = timeout
        self._token = token
        self._owns_channel = channel is None
        if channel is not None:
            self._channel = channel
        elif tls is not None:
            self._channel = tls.channel(target)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = signoff_pb2_grpc.DecisionServiceStub(self._channel)
        self._approvals = approvals_pb2_grpc.ApprovalServiceStub(self._channel)
        self._admin = admin_pb2_grpc.PolicyAdminServiceStub(self._channel)
        self._coalescer = None if coalescing is None else ThreadCoalescer(self._channel, coalescing)

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"SignoffClient(target={self.target!r}, timeout={self.timeout!r}, token={token})"

    @property
    def has_token(self) -> bool:
        """Whether ApprovalService calls carry a credential."""
        return self._token is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel if this client opened it; checks still queued fail CANCELLED."""
        if self._coalescer is not None:
            self._coalescer.close()
        if self._owns_channel:
            self._channel.close()

    def check(
        self,
        *,
        principal: Principal,
        action: str,
        resource: Resource,
        context: Context | None = None,
        payload: Mapping[str, Any] | None = None,
        approval_id: str = "",
        timeout: float | None = None,
    ) -> Decision:
        """Decide one action; raises SignoffRpcError when the call fails."""
        item = CheckItem(principal, action, resource, context, payload, approval_id)
        return self.check_item(item, timeout=timeout)

    def check_item(self, item: CheckItem, *, timeout: float | None = None) -> Decision:
        """Decide one prepared CheckItem; raises SignoffRpcError when the call fails."""
        if self._coalescer is None:
            response = self._call("Check", self._stub.Check, item.to_proto(), timeout)
            return Decision.from_proto(response)
        entry = Entry("Check", (item.to_bytes(),), self._deadline(timeout))
        self._coalescer.run(entry)
        return check_outcome(entry)

    def check_batch(
        self, items: Sequence[CheckItem], *, timeout: float | None = None
    ) -> list[Decision | ItemFailure]:
        """Decide independent items in one call; results come back in the order of `items`.

        An item the service could not decide yields an ItemFailure in its place; the call as a
        whole fails (SignoffRpcError) only when the RPC itself fails.
        """
        if not items:
            return []
        if self._coalescer is not None:
            payloads = [item.to_bytes() for item in items]
            entry = Entry("CheckBatch", payloads, self._deadline(timeout))
            self._coalescer.run(entry)
            return batch_outcome(entry)
        request = signoff_pb2.CheckBatchRequest(items=[item.to_proto() for item in items])
        response = self._call("CheckBatch", self._stub.CheckBatch, request, timeout)
        return batch_results(response.results, len(items))

    def list_approvals(
        self, page_size: int = 50, *, timeout: float | None = None
    ) -> list[Approval]:
        """The pending approvals this token's holder may decide, oldest first."""
        request = approvals_pb2.ListApprovalsRequest(page_size=calls.page_size(page_size))
        response = self._call(
            "ListApprovals", self._approvals.ListApprovals, request, timeout, self._metadata()
        )
        return [Approval.from_proto(item) for item in response.approvals]

    def get_approval(self, approval_id: str, *, timeout: float | None = None) -> Approval:
        """One approval, as its requester or an eligible approver sees it."""
        request = approvals_pb2.GetApprovalRequest(approval_id=calls.approval_id(approval_id))
        response = self._call(
            "GetApproval", self._approvals.GetApproval, request, timeout, self._metadata()
        )
        return calls.approval_of("GetApproval", response)

    def approve(self, approval_id: str, reason: str, *, timeout: float | None = None) -> Approval:
        """Approve as the token's holder; `reason` (why you sign off) is required."""
        request = approvals_pb2.ApproveRequest(
            approval_id=calls.approval_id(approval_id), reason=calls.reason(reason, required=True)
        )
        response = self._call(
            "Approve", self._approvals.Approve, request, timeout, self._metadata()
        )
        return calls.approval_of("Approve", response)

    def reject(self, approval_id: str, reason: str, *, timeout: float | None = None) -> Approval:
        """Reject as the token's holder; one eligible rejection ends the approval."""
        request = approvals_pb2.RejectRequest(
            approval_id=calls.approval_id(approval_id), reason=calls.reason(reason, required=True)
        )
        response = self._call("Reject", self._approvals.Reject, request, timeout, self._metadata())
        return calls.approval_of("Reject", response)

    def cancel(
        self, approval_id: str, reason: str = "", *, timeout: float | None = None
    ) -> Approval:
        """Withdraw your own pending (or approved but unused) request."""
        request = approvals_pb2.CancelRequest(
            approval_id=calls.approval_id(approval_id), reason=calls.reason(reason, required=False)
        )
        response = self._call("Cancel", self._approvals.Cancel, request, timeout, self._metadata())
        return calls.approval_of("Cancel", response)

    def watch_approval(self, approval_id: str, *, timeout: float | None) -> Iterator[Approval]:
        """Yield the approval now and on every change, for at most `timeout` seconds.

        The iterator ends when the server ends the stream (once the approval is final, or when
        the server caps the watch) or when `timeout` passes; look at the last state to tell
        which. Note that APPROVED is not final: stop there yourself if that is all you need.
        Leaving the loop early closes the stream. Raises SignoffRpcError when the call fails.
        """
        request = approvals_pb2.WatchApprovalRequest(approval_id=calls.approval_id(approval_id))
        if timeout is not None and not timeout > 0:
            raise InvalidInput(f"timeout must be positive, not {timeout!r}")
        return self._watch(request, timeout)

    def wait_for_approval(
        self,
        approval_id: str,
        *,
        timeout: float | None,
        on_change: Callable[[Approval], None] | None = None,
    ) -> Approval:
        """Watch until the approval is no longer pending, or for at most `timeout` seconds
        (None: until it is decided).

        Returns the approval as last seen, which is PENDING only when the time ran out. A
        stream the server ends early is reopened. `on_change` hears every distinct state.
        """
        if timeout is not None and not timeout > 0:
            raise InvalidInput(f"timeout must be positive, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        latest: Approval | None = None
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                # Out of time before the stream said anything: one plain read gives a state.
                return latest if latest is not None else self.get_approval(approval_id)
            for approval in self.watch_approval(approval_id, timeout=left):
                # A reopened stream starts with the state already seen; report changes only.
                if approval != latest and on_change is not None:
                    on_change(approval)
                latest = approval
                if approval.state is not ApprovalState.PENDING:
                    return approval
            left = None if deadline is None else deadline - time.monotonic()
            time.sleep(_REWATCH_PAUSE if left is None else max(0.0, min(_REWATCH_PAUSE, left)))

    def _watch(
        self, request: approvals_pb2.WatchApprovalRequest, timeout: float | None
    ) -> Iterator[Approval]:
        stream = self._approvals.WatchApproval(request, timeout=timeout, metadata=self._metadata())
        try:
            for response in stream:
                yield calls.approval_of("WatchApproval", response)
        except grpc.RpcError as err:
            # Our own deadline ending the stream is the timeout the caller asked for.
            if (
                timeout is not None
                and isinstance(err, grpc.Call)
                and err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            ):
                return
            raise calls.rpc_error("WatchApproval", err) from err
        finally:
            # Closes the stream when the caller leaves the loop early; a no-op once it ended.
            stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped

    def reload_policies(self, *, timeout: float | None = None) -> admin_pb2.ReloadPoliciesResponse:
        """Have the service load its bundle now (needs a token with the signoff_admin role)."""
        request = admin_pb2.ReloadPoliciesRequest()
        call = self._admin.ReloadPolicies
        return self._call("ReloadPolicies", call, request, timeout, self._metadata())

    def policy_status(self, *, timeout: float | None = None) -> admin_pb2.PolicyStatus:
        """The bundle serving and how the latest load went (needs the signoff_admin role)."""
        request = admin_pb2.GetPolicyStatusRequest()
        call = self._admin.GetPolicyStatus
        return self._call("GetPolicyStatus", call, request, timeout, self._metadata()).status

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return calls.metadata(self._token)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _call(
        self,
        method: str,
        call: Callable[..., _Response],
        request: Any,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> _Response:
        seconds = self.timeout if timeout is None else timeout
        try:
            return call(request, timeout=seconds, metadata=metadata or None)
        except grpc.RpcError as err:
            raise calls.rpc_error(method, err) from err
