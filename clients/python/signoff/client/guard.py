"""Enforce a decision around a block of code or a function, optionally waiting for sign-off."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, TypeVar, assert_never, cast

from signoff.client.approvals import Approval, ApprovalState, format_duration
from signoff.client.client import SignoffClient
from signoff.client.errors import InvalidInput, MaskingError, SignoffClientError, SignoffRpcError
from signoff.client.masking import apply_mask
from signoff.client.types import CheckItem, Context, Decision, Principal, Resource, Verdict
from signoff.v1 import signoff_pb2

__all__ = [
    "ApprovalCancelled",
    "ApprovalExpired",
    "ApprovalFailed",
    "ApprovalRejected",
    "ApprovalRequired",
    "Denied",
    "Guard",
    "Permit",
    "guard",
    "guarded",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
# Watch refusals that polling Check gets around: Check needs no credential, the caller of a
# guard may hold a token for another identity than the principal it checks for, and a server
# may run without ApprovalService or turn watchers away when it has too many.
_CANNOT_WATCH = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "UNIMPLEMENTED", "RESOURCE_EXHAUSTED"}
)
# A watch stream the server ends early (it caps each one) is reopened after this pause.
_REWATCH_PAUSE = 0.5


class Denied(SignoffClientError):
    """The service denied the action."""

    def __init__(self, action: str, decision: Decision) -> None:
        self.action = action
        self.decision = decision
        self.decision_id = decision.decision_id
        self.reasons = decision.reasons
        self.matched_rules = decision.matched_rules
        because = "; ".join(decision.reasons) or "no reason given"
        if decision.errored_rules:
            because += f" (rules that failed to evaluate: {', '.join(decision.errored_rules)})"
        super().__init__(f"{action!r} denied: {because} [decision {decision.decision_id}]")


class ApprovalRequired(SignoffClientError):
    """A human must sign off before the action; `requirement` says who and within what time.

    `approval_id` names the pending approval: pass it back as `approval_id=` to resume later
    (a new check for the same action finds the same approval anyway). `waited` is how long a
    guard with `wait` waited before giving up, None when it did not wait.
    """

    def __init__(self, action: str, decision: Decision, *, waited: float | None = None) -> None:
        self.action = action
        self.decision = decision
        self.decision_id = decision.decision_id
        self.approval_id = decision.approval_id
        self.waited = waited
        self.requirement: signoff_pb2.ApprovalRequirement | None = decision.approval
        quorum = decision.approval.quorum if decision.approval is not None else 0
        message = f"{action!r} requires approval"
        if quorum:
            message += f" by {quorum} approver(s)"
        if decision.reasons:
            message += ": " + "; ".join(decision.reasons)
        if waited is not None:
            spent = f"{waited:g}s" if waited < 60 else format_duration(waited)
            message += f" (still pending after waiting {spent})"
        ids = f"decision {decision.decision_id}"
        if decision.approval_id:
            ids += f", approval {decision.approval_id}"
        super().__init__(f"{message} [{ids}]")


class ApprovalFailed(SignoffClientError):
    """The approval an action needed ended without a usable grant.

    `final_reason` is why (e.g. the rejecting approver's words) when the service said so;
    `approval` is the approval as last seen and `decision` the check that reported the end,
    each when there was one.
    """

    outcome: ClassVar[str] = "ended"

    def __init__(
        self,
        action: str,
        approval_id: str,
        final_reason: str = "",
        *,
        approval: Approval | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.action = action
        self.approval_id = approval_id
        self.final_reason = final_reason
        self.approval = approval
        self.decision = decision
        message = f"{action!r}: approval {approval_id} was {self.outcome}"
        super().__init__(f"{message}: {final_reason}" if final_reason else message)


class ApprovalRejected(ApprovalFailed):
    """An eligible approver rejected the request."""

    outcome = "rejected"


class ApprovalCancelled(ApprovalFailed):
    """The requester withdrew the request."""

    outcome = "cancelled"


class ApprovalExpired(ApprovalFailed):
    """Nobody decided within the pending window, or the grant was not used within its window."""

    outcome = "expired"


_FAILURES: dict[ApprovalState, type[ApprovalFailed]] = {
    ApprovalState.REJECTED: ApprovalRejected,
    ApprovalState.CANCELLED: ApprovalCancelled,
    ApprovalState.EXPIRED: ApprovalExpired,
}
# The DENY reasons a check gives for an approval that ended that way.
_FAILURE_REASONS: dict[str, type[ApprovalFailed]] = {
    "approval_rejected": ApprovalRejected,
    "approval_cancelled": ApprovalCancelled,
    "approval_expired": ApprovalExpired,
}


def report_to_stderr(line: str) -> None:
    """The default progress reporter of a waiting guard: one line on stderr per change."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Permit:
    """Proof that the action may go ahead, and the masking it must apply to the data."""

    decision: Decision
    # Hash keys are secrets: keep them out of reprs that end up in logs and tracebacks.
    keys: Mapping[str, bytes] | None = field(default=None, repr=False)

    @property
    def masking_plan(self) -> signoff_pb2.MaskingPlan:
        return self.decision.masking_plan

    def mask(self, record: Any, keys: Mapping[str, bytes] | None = None) -> Any:
        """Return a masked copy of `record`; `keys` defaults to the keys given to the guard."""
        return apply_mask(
            record, self.decision.masking_plan, keys=self.keys if keys is None else keys
        )


class Guard:
    """One guarded action: entering it (or calling `check`) asks the service and enforces.

    With `wait` (seconds), a REQUIRE_APPROVAL answer is waited out instead of raised: the
    approval is watched over ApprovalService when the client has a token, else the check is
    repeated every `poll_interval` seconds with the approval's id. `on_progress` hears a line
    per change (default: stderr).
    """

    def __init__(
        self,
        client: SignoffClient,
        item: CheckItem,
        *,
        keys: Mapping[str, bytes] | None = None,
        wait: float | None = None,
        on_progress: Callable[[str], None] | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        if wait is not None and not wait >= 0:
            raise InvalidInput(f"wait must be zero or more seconds, not {wait!r}")
        if not poll_interval > 0:
            raise InvalidInput(f"poll_interval must be positive, not {poll_interval!r}")
        self.client = client
        self.item = item
        self.keys = keys
        self.wait = wait
        self.on_progress = report_to_stderr if on_progress is None else on_progress
        self.poll_interval = poll_interval

    def __enter__(self) -> Permit:
        return self.check()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def check(self) -> Permit:
        """Ask for a decision and return a Permit, or raise Denied, ApprovalRequired or
        ApprovalFailed (a subclass per way the approval ended)."""
        decision = self.client.check_item(self.item)
        if (
            decision.verdict is not Verdict.REQUIRE_APPROVAL
            or self.wait is None
            or not decision.approval_id
        ):
            return self.enforce(decision)
        deadline = time.monotonic() + self.wait
        # The same action with the approval's id: a pending approval answers REQUIRE_APPROVAL
        # again and changes nothing; a granted one is used by exactly this check.
        item = dataclasses.replace(self.item, approval_id=decision.approval_id)
        if self.client.has_token:
            permit = self._watch(item, decision, deadline)
            if permit is not None:
                return permit
        return self._poll(item, decision, deadline)

    def enforce(self, decision: Decision) -> Permit:
        """Turn a decision into a Permit, or raise Denied, ApprovalRequired or ApprovalFailed."""
        match decision.verdict:
            case Verdict.ALLOW | Verdict.MASK:
                return Permit(decision, self.keys)
            case Verdict.DENY:
                raise self._refusal(decision)
            case Verdict.REQUIRE_APPROVAL:
                raise ApprovalRequired(self.item.action, decision)
            case _:
                assert_never(decision.verdict)

    def _watch(self, item: CheckItem, decision: Decision, deadline: float) -> Permit | None:
        """Follow the approval's stream; None when watching is refused and polling should do."""
        approval_id = decision.approval_id

        def report(approval: Approval) -> None:
            self.on_progress(_progress(approval))

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApprovalRequired(self.item.action, decision, waited=self.wait)
            try:
                approval = self.client.wait_for_approval(
                    approval_id, timeout=remaining, on_change=report
                )
            except SignoffRpcError as err:
                if err.code not in _CANNOT_WATCH:
                    raise
                self.on_progress(
                    f"signoff: cannot watch approval {approval_id} ({err.code}); "
                    f"checking every {_seconds(self.poll_interval)} instead"
                )
                return None
            if approval.state is ApprovalState.PENDING:
                raise ApprovalRequired(self.item.action, decision, waited=self.wait)
            failure = _FAILURES.get(approval.state)
            if failure is not None:
                raise failure(
                    self.item.action, approval_id, approval.final_reason, approval=approval
                )
            # APPROVED (or already CONSUMED): only the check itself can use the grant, and it
            # says whether this caller may go ahead.
            retried = self.client.check_item(item)
            if retried.verdict is not Verdict.REQUIRE_APPROVAL:
                return self.enforce(retried)
            decision = retried
            time.sleep(max(0.0, min(_REWATCH_PAUSE, deadline - time.monotonic())))

    def _poll(self, item: CheckItem, decision: Decision, deadline: float) -> Permit:
        quorum = decision.approval.quorum if decision.approval is not None else 0
        needs = f"needs {quorum} approval(s), " if quorum else ""
        self.on_progress(
            f"signoff: waiting for approval {decision.approval_id} "
            f"({needs}checking every {_seconds(self.poll_interval)})"
        )
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApprovalRequired(self.item.action, decision, waited=self.wait)
            time.sleep(min(self.poll_interval, remaining))
            retried = self.client.check_item(item)
            if retried.verdict is not Verdict.REQUIRE_APPROVAL:
                return self.enforce(retried)
            decision = retried

    def _refusal(self, decision: Decision) -> SignoffClientError:
        approval_id = decision.approval_id or self.item.approval_id
        failure = next(
            (kind for reason, kind in _FAILURE_REASONS.items() if reason in decision.reasons),
            None,
        )
        if failure is None or not approval_id:
            return Denied(self.item.action, decision)
        return failure(
            self.item.action, approval_id, self._final_reason(approval_id), decision=decision
        )

    def _final_reason(self, approval_id: str) -> str:
        # A check says only that the approval ended; its holder may read why. Best effort: the
        # failure is raised either way.
        if not self.client.has_token:
            return ""
        try:
            return self.client.get_approval(approval_id).final_reason
        except SignoffClientError:
            return ""


def guard(
    client: SignoffClient,
    *,
    principal: Principal,
    action: str,
    resource: Resource,
    context: Context | None = None,
    payload: Mapping[str, Any] | None = None,
    approval_id: str = "",
    keys: Mapping[str, bytes] | None = None,
    wait: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    poll_interval: float = 2.0,
) -> Guard:
    """Guard an action: `with guard(...) as permit:` runs the block only when it is allowed.

    Raises Denied or ApprovalRequired on entry, or SignoffRpcError when the service cannot be
    asked. Data leaving the block must go through `permit.mask(...)`; `keys` are the HMAC keys
    for HASH entries (see `apply_mask`). Resuming with the `approval_id=` of an approval that
    was rejected, cancelled or has expired raises the matching ApprovalFailed subclass rather
    than Denied.

    With `wait` seconds, an action held for approval waits for the humans instead: on approval
    the block runs (the approval is used up), a rejection, cancellation or expiry raises
    ApprovalRejected / ApprovalCancelled / ApprovalExpired, and running out of time raises
    ApprovalRequired whose `approval_id` resumes the wait later via `approval_id=`. Progress
    goes to `on_progress` (default: a line on stderr per change). The client's token, when it
    has one, lets the guard watch the approval; without one it repeats the check every
    `poll_interval` seconds.
    """
    item = CheckItem(principal, action, resource, context, payload, approval_id)
    return Guard(
        client, item, keys=keys, wait=wait, on_progress=on_progress, poll_interval=poll_interval
    )


def guarded(
    client: SignoffClient,
    *,
    principal: Principal,
    action: str,
    resource: Resource,
    context: Context | None = None,
    payload: Mapping[str, Any] | None = None,
    approval_id: str = "",
    keys: Mapping[str, bytes] | None = None,
    wait: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    poll_interval: float = 2.0,
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a function so every call is checked first, exactly as `guard` does (waiting
    for approval the same way when `wait` is given).

    When the decision carries a masking plan, the function's return value is masked with it
    before it is returned (a JSON-like copy: mappings become dicts, tuples lists). A return
    value the plan cannot address (anything but a mapping, list, tuple or None) raises
    MaskingError instead of leaving unmasked. When the data leaves inside the function, use
    `guard` and `permit.mask` there instead.
    """
    item = CheckItem(principal, action, resource, context, payload, approval_id)

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            permit = Guard(
                client,
                item,
                keys=keys,
                wait=wait,
                on_progress=on_progress,
                poll_interval=poll_interval,
            ).check()
            result = function(*args, **kwargs)
            if not permit.masking_plan.fields or result is None:
                return result
            if not isinstance(result, Mapping | list | tuple):
                raise MaskingError(
                    f"{action!r} must be masked, but its {type(result).__name__} result has no"
                    " fields a masking plan can address"
                )
            return cast(_R, permit.mask(result))

        return checked

    return decorate


def _progress(approval: Approval) -> str:
    counted = f"{approval.approvals}/{approval.requirement.quorum} approvals"
    match approval.state:
        case ApprovalState.PENDING:
            expires = approval.pending_expires_at
            left = ""
            if expires is not None:
                seconds = (expires - dt.datetime.now(dt.UTC)).total_seconds()
                left = f", expires in {format_duration(seconds)}"
            return f"signoff: waiting for approval {approval.id} ({counted}{left})"
        case ApprovalState.APPROVED:
            return f"signoff: approval {approval.id} approved ({counted}); checking again"
        case ApprovalState.CONSUMED:
            return f"signoff: approval {approval.id} was already used"
        case _:
            word = approval.state.name.lower()
            because = f": {approval.final_reason}" if approval.final_reason else ""
            return f"signoff: approval {approval.id} {word}{because}"


def _seconds(value: float) -> str:
    return f"{value:g}s"
