"""DecisionService: Check and CheckBatch over gRPC."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import grpc

from signoff.approvals.flow import ApprovalFlow, Held
from signoff.audit import AuditLog
from signoff.audit.chain import Canonical
from signoff.engine.cache import Decided, DecisionCache
from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, Verdict
from signoff.errors import InvalidRequest, StoreUnavailable
from signoff.observability import Telemetry
from signoff.server import convert
from signoff.server.status import grpc_code_value, guarded, status_for
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views, masking_doc

log = logging.getLogger("signoff.decisions")


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Answers checks from the engine currently installed (swappable as a whole)."""

    def __init__(
        self,
        engine: Engine,
        *,
        hash_key_id: str,
        limits: convert.Limits | None = None,
        approvals: ApprovalFlow | None = None,
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
        self._approvals = approvals
        self._telemetry = telemetry or Telemetry.disabled()
        self._audit = audit
        self._views = views

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
        started = time.perf_counter()
        with self._telemetry.decision_span(item_index=item_index) as span:
            try:
                decided = decisions.decide(
                    msg.SerializeToString() if decisions.keeps else b"",
                    lambda: convert.to_request(msg, self._limits),
                )
            except InvalidRequest:
                span.set_error("INVALID_ARGUMENT")
                raise
            request, decision = decided.request, decided.decision
            decision_id = str(uuid.uuid4())
            held = Held(decision)
            if decision.verdict is Verdict.REQUIRE_APPROVAL:
                if self._approvals is None:
                    raise StoreUnavailable("approvals are not configured on this service")
                held = self._approvals.apply(request, decision, decision_id)
                decision = held.decision
                self._note_transition(held, request.principal.id)
            span.set_decision(
                decision_id=decision_id,
                verdict=decision.verdict.name,
                policy_revision=decision.policy_revision,
                matched_rules=decision.matched_rules,
                resource_kind=request.resource.kind,
                action=request.action,
                principal_id=request.principal.id,
                principal_kind=request.principal.kind.value,
                approval_id=held.approval_id,
                errored_rules=decision.errored_rules,
                shadow=_shadow_of(decided.decision),
            )
            self._telemetry.record_decision(decision.verdict.name, time.perf_counter() - started)
            self._record(
                decided, decision, decision_id, held.approval_id, span.trace_id_hex(), caller
            )
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "decision %s verdict=%s rules=%s revision=%s",
                    decision_id,
                    decision.verdict.name,
                    ",".join(decision.matched_rules) or "-",
                    decision.policy_revision[:12],
                )
            return convert.to_response(decision, decision_id, self._hash_key_id, held.approval_id)

    def _record(
        self,
        decided: Decided,
        decision: Decision,
        decision_id: str,
        approval_id: str,
        trace_id: str,
        caller: str,
    ) -> None:
        """Queue the decision's audit record; the request goes in only as its audit view."""
        if self._audit is None or self._views is None:
            return
        try:
            self._audit.submit(
                {
                    "type": "decision",
                    "decision_id": decision_id,
                    "verdict": decision.verdict.name,
                    # The policy's own verdict: differs when an approval was consumed.
                    "policy_verdict": decided.decision.verdict.name,
                    "policy_revision": decision.policy_revision,
                    "matched_rules": list(decision.matched_rules),
                    "errored_rules": list(decision.errored_rules),
                    "reasons": list(decision.reasons),
                    "approval_id": approval_id,
                    "masked_fields": [m.path for m in decision.masking_plan],
                    "masking": masking_doc(decision.masking_plan),
                    "trace_id": trace_id,
                    **({"caller": caller} if caller else {}),
                    "request": self._audit_view(decided, decision),
                    **_shadow_record(decided.decision),
                }
            )
        except Exception as exc:  # the record is lost, the decision must not be
            log.error("audit record for %s not queued: %s", decision_id, type(exc).__name__)

    def _audit_view(self, decided: Decided, decision: Decision) -> dict[str, Any] | Canonical:
        assert self._views is not None
        if decision is not decided.decision:  # the approval flow changed it: this call's own
            return self._views.audit_view(decided.request, decision)
        view = decided.derived.get("audit")
        if view is None:
            plain = self._views.audit_view(decided.request, decision)
            try:
                # Encoded once for every repeat of the request, instead of once per record.
                view = Canonical.of(plain)
            except (TypeError, ValueError):
                # Not JSON (e.g. a NaN kept for audit): the writer records a placeholder in
                # its place, so the chain still shows a decision was made.
                return plain
            decided.derived["audit"] = view
        return view

    def _note_transition(self, held: Held, actor: str) -> None:
        if held.transition == "created":
            self._telemetry.approval_event(held.approval_id, "", "pending", actor)
        elif held.transition == "consumed":
            self._telemetry.approval_event(held.approval_id, "approved", "consumed", actor)
            self._telemetry.record_approval_outcome("consumed")

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


def _shadow_of(decision: Decision) -> tuple[str, tuple[str, ...]] | None:
    shadow = decision.shadow
    return None if shadow is None else (shadow.verdict.name, shadow.matched_rules)


def _shadow_record(decision: Decision) -> dict[str, Any]:
    """What audit-only rules would have decided, for rolling a stricter rule out safely."""
    if decision.shadow is None:
        return {}
    return {
        "shadow": {
            "verdict": decision.shadow.verdict.name,
            "matched_rules": list(decision.shadow.matched_rules),
            "errored_rules": list(decision.shadow.errored_rules),
            "reasons": list(decision.shadow.reasons),
            "changes_verdict": decision.shadow.verdict is not decision.verdict,
        }
    }
