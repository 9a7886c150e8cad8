"""DecisionService: Check and CheckBatch over gRPC."""

from __future__ import annotations

from typing import Any

import grpc

from signoff.approvals.service import Approvals
from signoff.audit import AuditLog
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.errors import InvalidRequest
from signoff.observability import Telemetry
from signoff.server import convert
from signoff.server.cache import DecisionCache
from signoff.server.status import grpc_code_value, guarded, status_for
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Check and CheckBatch: parse, ask the decision core, convert back. The cache in front of
    the engine is this surface's own (it is keyed on the request's wire bytes); swapping the
    engine swaps it as a whole."""

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
    ) -> None:
        self._cache_entries = cache_entries
        # Under mutual TLS every caller holds a verified certificate: its name goes into each
        # audit record, beside the principal the caller merely states.
        self._caller_certificates = caller_certificates
        self._decisions = DecisionCache(engine, cache_entries)
        self._hash_key_id = hash_key_id
        self._limits = limits or convert.Limits()
        self._core = Decisions(approvals=approvals, telemetry=telemetry, audit=audit, views=views)

    @property
    def engine(self) -> Engine:
        return self._decisions.engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        # The cache belongs to one bundle: a new engine starts with an empty one.
        self._decisions = DecisionCache(engine, self._cache_entries)

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
            lambda: convert.to_request(msg, self._limits),
            caller=caller,
            item_index=item_index,
        )
        return convert.to_response(
            outcome.decision, outcome.decision_id, self._hash_key_id, outcome.approval_id
        )

    def _caller(self, context: grpc.ServicerContext) -> str:
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
        caller = self._caller(context)
        return guarded(context, lambda: self._decide(request, caller=caller))

    def CheckBatch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        def run() -> pb.CheckBatchResponse:
            limit = self._limits.max_batch_items
            if len(request.items) > limit:
                raise InvalidRequest("items", f"at most {limit} items per batch")
            decisions = self._decisions  # every item on the bundle the batch started with
            caller = self._caller(context)
            out = pb.CheckBatchResponse(policy_revision=decisions.engine.bundle.revision)
            for index, item in enumerate(request.items):
                result = out.results.add()
                try:
                    result.decision.CopyFrom(self._decide(item, index, decisions, caller))
                except Exception as exc:  # each item stands alone: one failure fails only itself
                    code, message = status_for(exc)
                    field = exc.field if isinstance(exc, InvalidRequest) else ""
                    result.error.CopyFrom(
                        pb.ItemError(code=grpc_code_value(code), message=message, field=field)
                    )
            return out

        return guarded(context, run)
