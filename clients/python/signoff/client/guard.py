"""Enforce a decision around a block of code or a function: denials and pending approvals raise."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, assert_never, cast

from signoff.client.client import SignoffClient
from signoff.client.errors import MaskingError, SignoffClientError
from signoff.client.masking import apply_mask
from signoff.client.types import CheckItem, Context, Decision, Principal, Resource, Verdict
from signoff.v1 import signoff_pb2

__all__ = ["ApprovalRequired", "Denied", "Guard", "Permit", "guard", "guarded"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


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
    """A human must sign off before the action; `requirement` says who and within what time."""

    def __init__(self, action: str, decision: Decision) -> None:
        self.action = action
        self.decision = decision
        self.decision_id = decision.decision_id
        self.requirement: signoff_pb2.ApprovalRequirement | None = decision.approval
        quorum = decision.approval.quorum if decision.approval is not None else 0
        message = f"{action!r} requires approval"
        if quorum:
            message += f" by {quorum} approver(s)"
        if decision.reasons:
            message += ": " + "; ".join(decision.reasons)
        super().__init__(f"{message} [decision {decision.decision_id}]")


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
    """One guarded action: entering it (or calling `check`) asks the service and enforces."""

    def __init__(
        self,
        client: SignoffClient,
        item: CheckItem,
        *,
        keys: Mapping[str, bytes] | None = None,
    ) -> None:
        self.client = client
        self.item = item
        self.keys = keys

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
        """Ask for a decision and return a Permit, or raise Denied or ApprovalRequired."""
        # Kept as decide-then-enforce so waiting for an approval can later loop here: catch
        # ApprovalRequired, wait for the grant, and decide again with its approval_id.
        return self.enforce(self.client.check_item(self.item))

    def enforce(self, decision: Decision) -> Permit:
        """Turn a decision into a Permit, or raise Denied or ApprovalRequired."""
        match decision.verdict:
            case Verdict.ALLOW | Verdict.MASK:
                return Permit(decision, self.keys)
            case Verdict.DENY:
                raise Denied(self.item.action, decision)
            case Verdict.REQUIRE_APPROVAL:
                raise ApprovalRequired(self.item.action, decision)
            case _:
                assert_never(decision.verdict)


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
) -> Guard:
    """Guard an action: `with guard(...) as permit:` runs the block only when it is allowed.

    Raises Denied or ApprovalRequired on entry, or SignoffRpcError when the service cannot be
    asked. Data leaving the block must go through `permit.mask(...)`; `keys` are the HMAC keys
    for HASH entries (see `apply_mask`).
    """
    item = CheckItem(principal, action, resource, context, payload, approval_id)
    return Guard(client, item, keys=keys)


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
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a function so every call is checked first, exactly as `guard` does.

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
            permit = Guard(client, item, keys=keys).check()
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
