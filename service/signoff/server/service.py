"""DecisionService: Check and CheckBatch over gRPC."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc

from signoff.approvals.flow import ApprovalFlow
from signoff.engine.evaluator import Engine
from signoff.engine.model import Verdict
from signoff.errors import InvalidRequest, StoreUnavailable
from signoff.server import convert
from signoff.server.status import grpc_code_value, status_for
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc

log = logging.getLogger("signoff.decisions")
T = TypeVar("T")


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Answers checks from the engine currently installed (swappable as a whole)."""

    def __init__(
        self,
        engine: Engine,
        *,
        hash_key_id: str,
        limits: convert.Limits | None = None,
        approvals: ApprovalFlow | None = None,
    ) -> None:
        self.engine = engine
        self._hash_key_id = hash_key_id
        self._limits = limits or convert.Limits()
        self._approvals = approvals

    def _decide(self, msg: pb.CheckRequest) -> pb.CheckResponse:
        engine = self.engine  # one bundle for the whole decision, even if swapped meanwhile
        request = convert.to_request(msg, self._limits)
        decision = engine.decide(request)
        decision_id = str(uuid.uuid4())
        approval_id = ""
        if decision.verdict is Verdict.REQUIRE_APPROVAL:
            if self._approvals is None:
                raise StoreUnavailable("approvals are not configured on this service")
            held = self._approvals.apply(request, decision, decision_id)
            decision, approval_id = held.decision, held.approval_id
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "decision %s verdict=%s rules=%s revision=%s",
                decision_id,
                decision.verdict.name,
                ",".join(decision.matched_rules) or "-",
                decision.policy_revision[:12],
            )
        return convert.to_response(decision, decision_id, self._hash_key_id, approval_id)

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        return _guarded(context, lambda: self._decide(request))

    def CheckBatch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        def run() -> pb.CheckBatchResponse:
            limit = self._limits.max_batch_items
            if len(request.items) > limit:
                raise InvalidRequest("items", f"at most {limit} items per batch")
            out = pb.CheckBatchResponse(policy_revision=self.engine.bundle.revision)
            for item in request.items:
                result = out.results.add()
                try:
                    result.decision.CopyFrom(self._decide(item))
                except Exception as exc:  # each item stands alone: one failure fails only itself
                    code, message = status_for(exc)
                    field = exc.field if isinstance(exc, InvalidRequest) else ""
                    result.error.CopyFrom(
                        pb.ItemError(code=grpc_code_value(code), message=message, field=field)
                    )
            return out

        return _guarded(context, run)


def _guarded(context: grpc.ServicerContext, run: Callable[[], T]) -> T:
    try:
        return run()
    except Exception as exc:
        code, message = status_for(exc)
        context.abort(code, message)
        raise  # unreachable: abort raises
