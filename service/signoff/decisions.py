"""The decision core: a request to its answer, with approval, telemetry and audit."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from signoff.approvals.service import Approvals
from signoff.audit import AuditLog
from signoff.audit.chain import Canonical
from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, Request, Verdict
from signoff.errors import InvalidRequest, StoreUnavailable
from signoff.observability import Telemetry
from signoff.views import Views

log = logging.getLogger("signoff.decisions")


# uuid4's version and variant bits: 0100 in the time_hi nibble, 10 at the top of clock_seq.
_V4_CLEAR = ~((0xF000 << 64) | (0xC << 60))
_V4_SET = (0x4000 << 64) | (0x8 << 60)


class _Randomness(threading.local):
    """os.urandom's bytes, drawn 4 KiB at a time per thread: each draw is a system call that
    costs (on a busy machine) more than the rest of a cached decision."""

    def __init__(self) -> None:
        self.pool = b""
        self.used = 0

    def take16(self) -> bytes:
        if self.used + 16 > len(self.pool):
            self.pool, self.used = os.urandom(4096), 0
        start = self.used
        self.used = start + 16
        return self.pool[start : start + 16]


_RANDOM = _Randomness()


def new_decision_id() -> str:
    """`str(uuid.uuid4())` without making the UUID object: the same randomness and text."""
    h = (int.from_bytes(_RANDOM.take16()) & _V4_CLEAR | _V4_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Decided:
    """A request, its decision, and what the caller derived from both (e.g. its audit view)."""

    request: Request
    decision: Decision
    derived: dict[str, Any] = field(default_factory=dict)
    steady_for: float = 0.0  # seconds: see Engine.steady_for
    period: int = 0  # which `steady_for`-long step of time since the epoch it was made in


class Source(Protocol):
    """Where a surface's decisions come from: its engine, perhaps behind an edge cache keyed
    on the request as that surface received it (see signoff.server.cache)."""

    @property
    def engine(self) -> Engine: ...

    def decide(self, key: bytes, parse: Callable[[], Request]) -> Decided: ...


class Outcome(NamedTuple):
    """What a surface tells its caller: the enforced decision and the ids that name it."""

    decision: Decision  # after the approval step; what the caller must do
    decision_id: str
    approval_id: str = ""
    # Where a surface may keep what it derives from the decision for the request's repeats
    # (e.g. its encoded response); None when the approval step made this call's own decision.
    derived: dict[str, Any] | None = None


class Fresh:
    """A Source without a cache: every request decided anew by `engine`."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def decide(self, key: bytes, parse: Callable[[], Request]) -> Decided:
        request = parse()
        return Decided(request, self.engine.decide(request, self.engine.now()))


class Decisions:
    """Decides requests: engine, then the approval step (hold or consume), then the span's
    attributes, the metrics and the audit record, all here, so every surface (gRPC today;
    HTTP, MCP, Envoy next) behaves alike. Surfaces parse their input into a `Request`,
    name their authenticated caller (the mTLS certificate name, or ""), and convert the
    `Outcome` back; none needs grpc for it."""

    def __init__(
        self,
        *,
        approvals: Approvals | None = None,
        telemetry: Telemetry | None = None,
        audit: AuditLog | None = None,
        views: Views | None = None,
    ) -> None:
        self._approvals = approvals
        self._telemetry = telemetry or Telemetry.disabled()
        # The record keeps the request only as its audit view: no views, no records.
        self._audit = audit if views is not None else None
        self._views = views

    def decide(
        self, engine: Engine, request: Request, *, caller: str = "", item_index: int | None = None
    ) -> Outcome:
        """The answer to `request` from `engine`; raises StoreUnavailable when an approval is
        needed and its store cannot be reached (the caller fails closed)."""
        return self.check(Fresh(engine), b"", lambda: request, caller=caller, item_index=item_index)

    def check(
        self,
        source: Source,
        key: bytes,
        parse: Callable[[], Request],
        *,
        caller: str = "",
        item_index: int | None = None,
        trace_id: str | None = None,
    ) -> Outcome:
        """The answer to the request `parse` yields (`key` its encoding, for `source`'s cache).
        InvalidRequest from `parse` marks the span and propagates. `trace_id` is the trace the
        call belongs to when the surface knows it without a current span (see
        Telemetry.untraced_trace_id); by default it is read from the current span."""
        started = time.perf_counter()
        with self._telemetry.decision_span(item_index=item_index) as span:
            try:
                decided = source.decide(key, parse)
            except InvalidRequest:
                span.set_error("INVALID_ARGUMENT")
                raise
            request, decision = decided.request, decided.decision
            decision_id = new_decision_id()
            approval_id = ""
            if decision.verdict is Verdict.REQUIRE_APPROVAL:
                if self._approvals is None:
                    raise StoreUnavailable("approvals are not configured on this service")
                held = self._approvals.apply(request, decision, decision_id)
                decision, approval_id = held.decision, held.approval_id
            shadow = decided.decision.shadow  # the policy's own, before any approval step
            if span.records:
                span.set_decision(
                    decision_id=decision_id,
                    verdict=decision.verdict.name,
                    policy_revision=decision.policy_revision,
                    matched_rules=decision.matched_rules,
                    resource_kind=request.resource.kind,
                    action=request.action,
                    principal_id=request.principal.id,
                    principal_kind=request.principal.kind.value,
                    approval_id=approval_id,
                    errored_rules=decision.errored_rules,
                    shadow=None if shadow is None else (shadow.verdict.name, shadow.matched_rules),
                )
            if self._telemetry.exports_metrics:
                self._telemetry.record_decision(
                    decision.verdict.name, time.perf_counter() - started
                )
            if self._audit is not None:
                self._record(
                    decided,
                    decision,
                    decision_id,
                    approval_id,
                    span.trace_id_hex() if trace_id is None else trace_id,
                    caller,
                )
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "decision %s verdict=%s rules=%s revision=%s",
                    decision_id,
                    decision.verdict.name,
                    ",".join(decision.matched_rules) or "-",
                    decision.policy_revision[:12],
                )
            kept = decided.derived if decision is decided.decision else None
            return Outcome(decision, decision_id, approval_id, kept)

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
        assert self._audit is not None
        try:
            # What DecisionRecord.of takes; the writer thread makes the record.
            self._audit.submit_decision(
                decision_id,
                decision,
                decided.decision,
                approval_id,
                trace_id,
                caller,
                self._audit_view(decided, decision),
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
                # Not JSON: only a Request built in-process (the surfaces refuse NaN and the
                # like) can hold such a value; the writer then records a placeholder, so the
                # chain still shows a decision was made.
                return plain
            decided.derived["audit"] = view
        return view
