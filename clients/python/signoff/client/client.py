"""A typed, synchronous client for the signoff DecisionService."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.client.types import CheckItem, Context, Decision, ItemFailure, Principal, Resource
from signoff.v1 import signoff_pb2, signoff_pb2_grpc

__all__ = ["SignoffClient"]

_Response = TypeVar("_Response")


class SignoffClient:
    """Asks a signoff service for decisions.

    With no `channel`, an insecure channel to `target` is opened and closed by `close()` (or by
    leaving the `with` block). A `channel` passed in belongs to the caller and is left open, so
    one channel can be shared; `target` is then only used in messages.
    """

    def __init__(
        self, target: str, *, timeout: float = 5.0, channel: grpc.Channel | None = None
    ) -> None:
        if not timeout > 0:
            raise InvalidInput(f"timeout must be positive, not {timeout!r}")
        if channel is None and not target:
            raise InvalidInput("target must name the service, e.g. '127.0.0.1:50051'")
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self._channel = grpc.insecure_channel(target) if channel is None else channel
        self._stub = signoff_pb2_grpc.DecisionServiceStub(self._channel)

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
        """Close the channel if this client opened it."""
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
        response = self._call("Check", self._stub.Check, item.to_proto(), timeout)
        return Decision.from_proto(response)

    def check_batch(
        self, items: Sequence[CheckItem], *, timeout: float | None = None
    ) -> list[Decision | ItemFailure]:
        """Decide independent items in one call; results come back in the order of `items`.

        An item the service could not decide yields an ItemFailure in its place; the call as a
        whole fails (SignoffRpcError) only when the RPC itself fails.
        """
        if not items:
            return []
        request = signoff_pb2.CheckBatchRequest(items=[item.to_proto() for item in items])
        response = self._call("CheckBatch", self._stub.CheckBatch, request, timeout)
        if len(response.results) != len(items):
            raise ProtocolError(
                f"CheckBatch returned {len(response.results)} results for {len(items)} items"
            )
        results: list[Decision | ItemFailure] = []
        for index, result in enumerate(response.results):
            outcome = result.WhichOneof("outcome")
            if outcome == "decision":
                results.append(Decision.from_proto(result.decision))
            elif outcome == "error":
                results.append(ItemFailure.from_proto(result.error))
            else:
                raise ProtocolError(f"CheckBatch result {index} has neither decision nor error")
        return results

    def _call(
        self,
        method: str,
        call: Callable[..., _Response],
        request: Any,
        timeout: float | None,
    ) -> _Response:
        try:
            return call(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            # Only a grpc.Call carries a status; a bare RpcError has nothing more to say.
            if isinstance(err, grpc.Call):
                raise SignoffRpcError(method, err.code().name, err.details() or "") from err
            raise SignoffRpcError(method, "UNKNOWN", str(err)) from err
