"""DecisionService: Check and CheckBatch over gRPC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from signoff.approvals.service import Approvals
from signoff.audit import AuditLog
from signoff.decisions import Decisions, Outcome
from signoff.engine.evaluator import Engine
from signoff.engine.model import Request
from signoff.errors import InvalidRequest
from signoff.observability import Telemetry
from signoff.server import convert, wire
from signoff.server.cache import DecisionCache
from signoff.server.status import abort, grpc_code_value, status_for
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views

SERVICE = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
CHECK = f"{SERVICE}/Check"
CHECK_BATCH = f"{SERVICE}/CheckBatch"
# Field numbers the handlers write by hand (see signoff.proto).
_DECISION_ID, _APPROVAL_ID = 2, 9  # CheckResponse
_RESULTS, _BATCH_REVISION = 1, 2  # CheckBatchResponse
_RESULT_DECISION, _RESULT_ERROR = 1, 2  # CheckBatchResult
_ITEMS = 1  # CheckBatchRequest
_NOT_VALID = "not a valid {0.DESCRIPTOR.full_name} message"  # as RequestParsing says it
_RESPONSE = "response"  # Outcome.derived: the response without its per-call ids


def _uncounted(method: str) -> None:
    pass


class _Malformed(Exception):
    """Request bytes that are no valid message of their type."""


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Check and CheckBatch: parse, ask the decision core, convert back. The cache in front of
    the engine is this surface's own (it is keyed on the request's wire bytes); swapping the
    engine swaps it as a whole.

    Served from the request's bytes (`method_handlers`): a repeated request is looked up by
    the bytes it came in, without parsing it, and its response is encoded once and reused with
    this call's ids appended; only a new request is parsed. Bytes that are no valid message are
    INVALID_ARGUMENT, counted by `on_malformed(method)`, as RequestParsing does for the other
    services."""

    def __init__(
        self,
        engine: Engine,
        *,
        hash_key_id: str,
        limits: convert.Limits | None = None,
        approvals: Approvals | None = None,
        telemetry: Telemetry | None = None,
        audit: AuditLog | None = None,
        views: Views | None = None,
        cache_entries: int = 4096,
        caller_certificates: bool = False,
        on_malformed: Callable[[str], None] = _uncounted,
    ) -> None:
        self._cache_entries = cache_entries
        # Under mutual TLS every caller holds a verified certificate: its name goes into each
        # audit record, beside the principal the caller merely states.
        self._caller_certificates = caller_certificates
        self._decisions = DecisionCache(engine, cache_entries)
        self._hash_key_id = hash_key_id
        self._limits = limits or convert.Limits()
        self._principals = convert.Principals(self._limits)
        self._core = Decisions(approvals=approvals, telemetry=telemetry, audit=audit, views=views)
        self._on_malformed = on_malformed
        # Nothing exports spans: the calls run without an RPC span (see `traced`), and the
        # audit record gets the trace id that span would have had.
        self._telemetry = telemetry
        self.traced = telemetry is not None and telemetry.exports_spans

    @property
    def engine(self) -> Engine:
        return self._decisions.engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        # The cache belongs to one bundle: a new engine starts with an empty one.
        self._decisions = DecisionCache(engine, self._cache_entries)

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """Check and CheckBatch with bytes in and out, for add_registered_method_handlers."""
        return {
            "Check": grpc.unary_unary_rpc_method_handler(self._check_bytes, None, None),
            "CheckBatch": grpc.unary_unary_rpc_method_handler(self._batch_bytes, None, None),
        }

    # --- the bytes path: what the server runs ------------------------------------------

    def _check_bytes(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            caller, trace_id = self.caller_name(context), self._trace_id(CHECK, context)
            decisions = self._decisions
            msg = None if decisions.lookup(raw) is not None else self._parse_check(raw)
            return self._decide_bytes(raw, msg, None, decisions, caller, trace_id)
        except _Malformed:
            self._on_malformed(CHECK)
            abort(context, InvalidRequest("request", _NOT_VALID.format(pb.CheckRequest)))
        except Exception as exc:
            abort(context, exc)

    def _batch_bytes(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            items = wire.repeated_messages(raw, _ITEMS)
            parsed: Any = None
            if items is None:  # not plainly laid out: protobuf says whether it is valid at all
                parsed = self._parse_batch(raw)
                items = [item.SerializeToString() for item in parsed.items]
            decisions = self._decisions  # every item on the bundle the batch started with
            if parsed is None and any(decisions.lookup(item) is None for item in items):
                # Parsed whole, as one message, so validity is exactly protobuf's (nesting
                # limits count from the batch), and a batch with any bad item decides nothing.
                parsed = self._parse_batch(raw)
            limit = self._limits.max_batch_items
            if len(items) > limit:  # after parsing: malformed bytes are refused as such first
                raise InvalidRequest("items", f"at most {limit} items per batch")
            messages: list[Any] = list(parsed.items) if parsed is not None else []
            caller, trace_id = self.caller_name(context), self._trace_id(CHECK_BATCH, context)
            out = bytearray()
            for index, item in enumerate(items):
                try:
                    msg = messages[index] if messages else None
                    result = wire.field(
                        _RESULT_DECISION,
                        self._decide_bytes(item, msg, index, decisions, caller, trace_id),
                    )
                except Exception as exc:  # each item stands alone: one failure fails only itself
                    code, message = status_for(exc)
                    field = exc.field if isinstance(exc, InvalidRequest) else ""
                    error = pb.ItemError(code=grpc_code_value(code), message=message, field=field)
                    result = wire.field(_RESULT_ERROR, error.SerializeToString())
                out += wire.field(_RESULTS, result)
            out += wire.string_field(_BATCH_REVISION, decisions.engine.bundle.revision)
            return bytes(out)
        except _Malformed:
            self._on_malformed(CHECK_BATCH)
            abort(context, InvalidRequest("request", _NOT_VALID.format(pb.CheckBatchRequest)))
        except Exception as exc:
            abort(context, exc)

    def _decide_bytes(
        self,
        raw: bytes,
        msg: pb.CheckRequest | None,
        item_index: int | None,
        decisions: DecisionCache,
        caller: str,
        trace_id: str | None,
    ) -> bytes:
        """The encoded CheckResponse to the request encoded as `raw` (`msg` when parsed)."""

        def parse() -> Request:
            # Only a request the cache does not hold is parsed; one it held was valid.
            return convert.to_request(
                msg if msg is not None else pb.CheckRequest.FromString(raw),
                self._limits,
                self._principals,
            )

        outcome = self._core.check(
            decisions,
            raw if decisions.keeps else b"",
            parse,
            caller=caller,
            item_index=item_index,
            trace_id=trace_id,
        )
        return self._encode(outcome)

    def _encode(self, outcome: Outcome) -> bytes:
        derived = outcome.derived
        shared = derived.get(_RESPONSE) if derived is not None else None
        if shared is None:
            # Everything but the per-call ids, which are appended: parsing concatenated
            # encodings sets each field, so the result reads as the whole message.
            shared = convert.to_response(
                outcome.decision, "", self._hash_key_id
            ).SerializeToString()
            if derived is not None:
                derived[_RESPONSE] = shared
        return (
            shared
            + wire.string_field(_DECISION_ID, outcome.decision_id)
            + wire.string_field(_APPROVAL_ID, outcome.approval_id)
        )

    @staticmethod
    def _parse_check(raw: bytes) -> pb.CheckRequest:
        try:
            return pb.CheckRequest.FromString(raw)
        except DecodeError:
            raise _Malformed from None

    @staticmethod
    def _parse_batch(raw: bytes) -> pb.CheckBatchRequest:
        try:
            return pb.CheckBatchRequest.FromString(raw)
        except DecodeError:
            raise _Malformed from None

    def _trace_id(self, method: str, context: grpc.ServicerContext) -> str | None:
        if self.traced or self._telemetry is None:
            return None  # the RPC span is current, or there is no telemetry at all
        return self._telemetry.untraced_trace_id(method, context.invocation_metadata())

    # --- the message path: for callers holding messages (and the servicer interface) ----

    def _decide(
        self,
        msg: pb.CheckRequest,
        item_index: int | None = None,
        decisions: DecisionCache | None = None,
        caller: str = "",
    ) -> pb.CheckResponse:
        # One bundle for the whole decision (and batch), even if a reload swaps it meanwhile.
        decisions = decisions if decisions is not None else self._decisions
        outcome = self._core.check(
            decisions,
            msg.SerializeToString() if decisions.keeps else b"",
            lambda: convert.to_request(msg, self._limits, self._principals),
            caller=caller,
            item_index=item_index,
        )
        return pb.CheckResponse.FromString(self._encode(outcome))

    def caller_name(self, context: grpc.ServicerContext) -> str:
        """The verified mTLS certificate name of the caller ("" without mutual TLS): what the
        audit records of this server's decisions, and of embedded ones it ingests, name."""
        if not self._caller_certificates:
            return ""
        auth = context.auth_context()
        # The first subject alternative name (a SPIFFE ID or DNS name), else the common name.
        for key in ("x509_subject_alternative_name", "x509_common_name"):
            # A list of bytes at run time, whatever grpc-stubs says.
            names: Any = auth.get(key)
            if names:
                return bytes(names[0]).decode("utf-8", "replace")
        return ""

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        return pb.CheckResponse.FromString(self._check_bytes(request.SerializeToString(), context))

    def CheckBatch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        raw = request.SerializeToString()
        return pb.CheckBatchResponse.FromString(self._batch_bytes(raw, context))
