"""What the sync and asyncio clients share: argument checks, error mapping, result conversion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from signoff.client.approvals import Approval
from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.client.tls import TLS, is_loopback
from signoff.client.types import Decision, ItemFailure
from signoff.v1 import signoff_pb2

# What grpc itself says when a call's deadline passes; a check that timed out while waiting
# for its batch says the same, so callers cannot tell the two apart.
DEADLINE_DETAILS = "Deadline Exceeded"


def check_settings(
    target: str,
    timeout: float,
    channel: object | None,
    token: str | None,
    tls: TLS | None,
) -> None:
    """Refuse a client configuration that cannot work or would leak the token."""
    if not timeout > 0:
        raise InvalidInput(f"timeout must be positive, not {timeout!r}")
    if channel is None and not target:
        raise InvalidInput("target must name the service, e.g. '127.0.0.1:50051'")
    # The message never quotes the value: a malformed token is still somebody's secret.
    if token is not None and (
        not isinstance(token, str)
        or not token
        or not token.isascii()
        or not token.isprintable()
        or any(char.isspace() for char in token)
    ):
        raise InvalidInput("token must be a non-empty ASCII string without whitespace")
    if channel is not None and tls is not None:
        raise InvalidInput("give tls or a channel of your own, not both")
    if channel is None and tls is None and token is not None and not is_loopback(target):
        raise InvalidInput(
            f"refusing to send a bearer token in plaintext to {target}; connect with TLS"
        )


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is None:
        return ()
    return (("authorization", f"Bearer {token}"),)


def rpc_error(method: str, err: grpc.RpcError) -> SignoffRpcError:
    """The client's error for a failed call, the same from the sync and the asyncio stack."""
    # Only a call carries a status; a bare RpcError has nothing more to say.
    if isinstance(err, grpc.Call | grpc.aio.AioRpcError):
        return SignoffRpcError(method, err.code().name, err.details() or "")
    return SignoffRpcError(method, "UNKNOWN", str(err))


def deadline_error(method: str) -> SignoffRpcError:
    return SignoffRpcError(method, grpc.StatusCode.DEADLINE_EXCEEDED.name, DEADLINE_DETAILS)


def item_error(error: signoff_pb2.ItemError) -> SignoffRpcError:
    """What unary Check raises for the failure a CheckBatch reported for the same item: the
    server builds both from one status mapping, so code and message are the same."""
    return SignoffRpcError("Check", ItemFailure.from_proto(error).code_name, error.message)


def batch_results(
    results: Sequence[signoff_pb2.CheckBatchResult], expected: int
) -> list[Decision | ItemFailure]:
    """Convert CheckBatch results; raises ProtocolError when they do not match the items."""
    if len(results) != expected:
        raise ProtocolError(f"CheckBatch returned {len(results)} results for {expected} items")
    out: list[Decision | ItemFailure] = []
    for index, result in enumerate(results):
        outcome = result.WhichOneof("outcome")
        if outcome == "decision":
            out.append(Decision.from_proto(result.decision))
        elif outcome == "error":
            out.append(ItemFailure.from_proto(result.error))
        else:
            raise ProtocolError(f"CheckBatch result {index} has neither decision nor error")
    return out


def single_result(result: signoff_pb2.CheckBatchResult) -> Decision:
    """One coalesced check's answer, raised or returned exactly as unary Check would."""
    outcome = result.WhichOneof("outcome")
    if outcome == "decision":
        return Decision.from_proto(result.decision)
    if outcome == "error":
        raise item_error(result.error)
    raise ProtocolError("CheckBatch result has neither decision nor error")


def approval_id(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("approval_id must name an approval, e.g. 'apr_...'")
    return value.strip()


def reason(value: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInput("reason must be a string")
    if required and not value.strip():
        raise InvalidInput("reason is required: say why")
    return value


def page_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"page_size must be a positive integer, not {value!r}")
    return value


def approval_of(method: str, response: Any) -> Approval:
    if not response.HasField("approval"):
        raise ProtocolError(f"{method} answered without an approval")
    return Approval.from_proto(response.approval)
