"""An asyncio client (grpc.aio) for agent frameworks: checks coalesced across tasks, approvals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from signoff.client import calls
from signoff.client.approvals import Approval
from signoff.client.client import DEFAULT_COALESCING
from signoff.client.coalesce import (
    ABANDONED,
    CHECK,
    CHECK_BATCH,
    DONE,
    QUEUED,
    SENT,
    Coalescing,
    Entry,
    Flight,
    Queue,
    batch_outcome,
    check_outcome,
    closed_error,
    refused_shape,
)
from signoff.client.tls import TLS
from signoff.client.types import CheckItem, Context, Decision, ItemFailure, Principal, Resource
from signoff.v1 import approvals_pb2, approvals_pb2_grpc, signoff_pb2

__all__ = ["AsyncSignoffClient"]


class AsyncSignoffClient:
    """Asks a signoff service for decisions from asyncio code; see `SignoffClient`, which it
    mirrors for checks and approvals (answers, errors and timeouts are the same).

    Create it inside the event loop that uses it (grpc.aio channels belong to one loop), e.g.
    `async with AsyncSignoffClient("127.0.0.1:50051") as client:`. Concurrent checks from
    many tasks are coalesced into CheckBatch calls as `coalescing` says (None: every check is
    its own call); cancelling a task whose check has not been sent yet means it is never sent.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        channel: grpc.aio.Channel | None = None,
        token: str | None = None,
        tls: TLS | None = None,
        coalescing: Coalescing | None = DEFAULT_COALESCING,
    ) -> None:
        calls.check_settings(target, timeout, channel, token, tls)
        self.target = target
        self.timeout = timeout
        self._token = token
        self._owns_channel = channel is None
        if channel is not None:
            self._channel = channel
        elif tls is not None:
            # The same options TLS.channel gives a sync channel.
            options = []
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target)
        self._check = self._channel.unary_unary(CHECK, None, signoff_pb2.CheckResponse.FromString)
        self._batch = self._channel.unary_unary(
            CHECK_BATCH, None, signoff_pb2.CheckBatchResponse.FromString
        )
        self._approvals = approvals_pb2_grpc.ApprovalServiceStub(self._channel)
        self._coalescer = None if coalescing is None else _TaskCoalescer(self, coalescing)

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return (
            f"AsyncSignoffClient(target={self.target!r}, timeout={self.timeout!r}, token={token})"
        )

    @property
    def has_token(self) -> bool:
        """Whether ApprovalService calls carry a credential."""
        return self._token is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel if this client opened it; checks still queued fail CANCELLED."""
        if self._coalescer is not None:
            self._coalescer.close()
        if self._owns_channel:
            await self._channel.close(None)

    async def check(
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
        return await self.check_item(item, timeout=timeout)

    async def check_item(self, item: CheckItem, *, timeout: float | None = None) -> Decision:
        """Decide one prepared CheckItem; raises SignoffRpcError when the call fails."""
        entry = Entry("Check", (item.to_bytes(),), self._deadline(timeout))
        await self._run(entry)
        return check_outcome(entry)

    async def check_batch(
        self, items: Sequence[CheckItem], *, timeout: float | None = None
    ) -> list[Decision | ItemFailure]:
        """Decide independent items in one call, as `SignoffClient.check_batch`."""
        if not items:
            return []
        payloads = [item.to_bytes() for item in items]
        entry = Entry("CheckBatch", payloads, self._deadline(timeout))
        await self._run(entry)
        return batch_outcome(entry)

    async def list_approvals(
        self, page_size: int = 50, *, timeout: float | None = None
    ) -> list[Approval]:
        """The pending approvals this token's holder may decide, oldest first."""
        request = approvals_pb2.ListApprovalsRequest(page_size=calls.page_size(page_size))
        response = await self._call(
            "ListApprovals", self._approvals.ListApprovals, request, timeout
        )
        return [Approval.from_proto(item) for item in response.approvals]

    async def get_approval(self, approval_id: str, *, timeout: float | None = None) -> Approval:
        """One approval, as its requester or an eligible approver sees it."""
        request = approvals_pb2.GetApprovalRequest(approval_id=calls.approval_id(approval_id))
        response = await self._call("GetApproval", self._approvals.GetApproval, request, timeout)
        return calls.approval_of("GetApproval", response)

    async def approve(
        self, approval_id: str, reason: str, *, timeout: float | None = None
    ) -> Approval:
        """Approve as the token's holder; `reason` (why you sign off) is required."""
        request = approvals_pb2.ApproveRequest(
            approval_id=calls.approval_id(approval_id),
            reason=calls.reason(reason, required=True),
        )
        response = await self._call("Approve", self._approvals.Approve, request, timeout)
        return calls.approval_of("Approve", response)

    async def reject(
        self, approval_id: str, reason: str, *, timeout: float | None = None
    ) -> Approval:
        """Reject as the token's holder; one eligible rejection ends the approval."""
        request = approvals_pb2.RejectRequest(
            approval_id=calls.approval_id(approval_id),
            reason=calls.reason(reason, required=True),
        )
        response = await self._call("Reject", self._approvals.Reject, request, timeout)
        return calls.approval_of("Reject", response)

    async def cancel(
        self, approval_id: str, reason: str = "", *, timeout: float | None = None
    ) -> Approval:
        """Withdraw your own pending (or approved but unused) request."""
        request = approvals_pb2.CancelRequest(
            approval_id=calls.approval_id(approval_id),
            reason=calls.reason(reason, required=False),
        )
        response = await self._call("Cancel", self._approvals.Cancel, request, timeout)
        return calls.approval_of("Cancel", response)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    async def _run(self, entry: Entry) -> None:
        if self._coalescer is None:
            await self._alone(entry)
        else:
            await self._coalescer.run(entry)

    async def _alone(self, entry: Entry) -> None:
        """Send `entry` as its own call, as asked."""
        call = self._check if entry.method == "Check" else self._batch
        try:
            response = await call(entry.request(), timeout=entry.deadline - time.monotonic())
        except grpc.aio.AioRpcError as err:
            entry.error = calls.rpc_error(entry.method, err)
            return
        entry.answer = response if entry.method == "Check" else response.results

    async def _call(
        self, method: str, call: Callable[..., Any], request: Any, timeout: float | None
    ) -> Any:
        seconds = self.timeout if timeout is None else timeout
        metadata = calls.metadata(self._token)
        try:
            return await call(request, timeout=seconds, metadata=metadata or None)
        except grpc.aio.AioRpcError as err:
            raise calls.rpc_error(method, err) from err


class _TaskCoalescer:
    """The asyncio twin of coalesce.ThreadCoalescer, on the same Queue: no locks (one loop),
    futures instead of locks, a loop timer instead of a thread."""

    def __init__(self, client: AsyncSignoffClient, policy: Coalescing) -> None:
        self._client = client
        self._queue = Queue(policy)
        self._timer: asyncio.TimerHandle | None = None
        self._flying: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(self, entry: Entry) -> None:
        now = time.monotonic()
        if entry.deadline <= now:
            entry.error = calls.deadline_error(entry.method)
            return
        alone = self._closed or not self._queue.fits(entry)
        if alone or self._queue.idle:
            if alone:
                await self._client._alone(entry)
                return
            self._queue.in_flight += 1
            try:
                await self._client._alone(entry)
            finally:
                self._queue.in_flight -= 1
                self._flush()
            return
        loop = asyncio.get_running_loop()
        signal: asyncio.Future[None] = loop.create_future()
        entry.signal = signal
        self._queue.add(entry, now)
        self._flush()
        expiry = loop.call_later(entry.deadline - now, self._expire, entry)
        try:
            await signal
        except asyncio.CancelledError:
            # The task was cancelled: a check not sent yet never will be.
            self._give_up(entry)
            raise
        finally:
            expiry.cancel()

    def _expire(self, entry: Entry) -> None:
        if entry.state != DONE:
            self._give_up(entry)
            signal: asyncio.Future[None] = entry.signal
            if not signal.done():
                signal.set_result(None)

    def _give_up(self, entry: Entry) -> None:
        if entry.state == DONE:
            return
        cancel = self._queue.abandon(entry)
        entry.error = calls.deadline_error(entry.method)
        if cancel is not None:
            cancel()

    def _flush(self) -> None:
        now = time.monotonic()
        while (flight := self._queue.take(now)) is not None:
            task = asyncio.get_running_loop().create_task(self._fly(flight))
            flight.cancel = task.cancel
            self._flying.add(task)
            task.add_done_callback(self._flying.discard)
        due = self._queue.due()
        if due is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    async def _fly(self, flight: Flight) -> None:
        refused = False
        try:
            call = self._client._batch
            response = await call(flight.request(), timeout=flight.timeout(time.monotonic()))
            flight.settle(response)
        except grpc.aio.AioRpcError as err:
            # Resent in smaller batches, unless this batch was one caller's own.
            refused = len(flight.entries) > 1 and refused_shape(err)
            if refused:
                self._queue.shrink(err, flight)
            else:
                flight.fail(err)
        except asyncio.CancelledError:
            pass  # every caller in it gave up
        except Exception as err:  # refused before any call, e.g. the channel is closed
            flight.fail(err)
        finally:
            self._queue.in_flight -= 1
            if refused:
                for entry in flight.entries:
                    if entry.state == SENT:
                        entry.state = QUEUED
                        self._queue.add(entry, entry.queued_at)
            else:
                _finish(flight.entries)
            self._flush()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        left = self._queue.drain()
        for entry in left:
            entry.error = closed_error(entry.method)
        _finish(left)


def _finish(entries: list[Entry]) -> None:
    for entry in entries:
        if entry.state not in (DONE, ABANDONED):
            entry.state = DONE
            signal: asyncio.Future[None] = entry.signal
            if not signal.done():
                signal.set_result(None)
