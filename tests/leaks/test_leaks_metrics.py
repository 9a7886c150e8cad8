"""Decision and approval metrics from real traffic, read with the in-memory metric reader."""

from __future__ import annotations

import grpc

from tests.approvals.support import DevIdP, refused
from tests.leaks.conftest import MakeStack
from tests.leaks.support import (
    BOT,
    REVIEWER,
    Canaries,
    allow,
    bad_requests,
    deny,
    evaluation_error,
    mask,
    needs_approval,
)
from tests.observability.harness import Recorded, by_label


def _counts(recorded: Recorded, metric: str, label: str) -> dict[str, int]:
    return {k: int(p.value) for k, p in by_label(recorded.points(metric), label).items()}


def _pending(recorded: Recorded) -> int:
    [point] = recorded.points("signoff.approvals.pending")
    return int(point.value)


def test_decisions_are_counted_and_timed_by_verdict(
    make_stack: MakeStack, recorded: Recorded
) -> None:
    stack = make_stack(recorded)
    c = Canaries()
    for request in (
        allow(c),
        allow(c, "allow-again"),
        mask(c),
        deny(c),
        evaluation_error(c),
        needs_approval(c, "a"),
    ):
        stack.check(request)
    # A request refused as invalid was never decided, so it is not counted.
    error = refused(lambda: stack.check(bad_requests(c)["mistyped-int"]))
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    expected = {"allow": 2, "mask": 1, "deny": 2, "require_approval": 1}
    assert _counts(recorded, "signoff.decisions", "verdict") == expected
    durations = by_label(recorded.points("signoff.decision.duration"), "verdict")
    assert {k: p.count for k, p in durations.items()} == expected


def test_approval_outcomes_are_counted(
    make_stack: MakeStack, recorded: Recorded, leak_idp: DevIdP
) -> None:
    stack = make_stack(recorded)
    c = Canaries()
    reviewer = leak_idp.token(REVIEWER, "reviewer")
    ids = {tag: stack.check(needs_approval(c, tag)).approval_id for tag in ("a", "b", "c")}
    assert recorded.points("signoff.approvals.outcomes") == []

    stack.approve(ids["a"], reviewer)
    stack.check(needs_approval(c, "a"), ids["a"])
    stack.reject(ids["b"], reviewer)
    stack.cancel(ids["c"], leak_idp.token(BOT, kind="agent"))
    # A replay is refused, and no outcome of its own.
    stack.check(needs_approval(c, "a"), ids["a"])

    assert _counts(recorded, "signoff.approvals.outcomes", "outcome") == {
        "approved": 1,
        "consumed": 1,
        "rejected": 1,
        "cancelled": 1,
    }


def test_the_pending_gauge_follows_the_pending_approvals(
    make_stack: MakeStack, recorded: Recorded, leak_idp: DevIdP
) -> None:
    stack = make_stack(recorded)
    c = Canaries()
    reviewer = leak_idp.token(REVIEWER, "reviewer")
    assert _pending(recorded) == 0

    ids = {tag: stack.check(needs_approval(c, tag)).approval_id for tag in ("a", "b", "c")}
    assert _pending(recorded) == 3
    # Asking again for the same action reuses its approval: still three.
    stack.check(needs_approval(c, "a"))
    assert _pending(recorded) == 3

    stack.approve(ids["a"], reviewer)
    assert _pending(recorded) == 2
    stack.reject(ids["b"], reviewer)
    assert _pending(recorded) == 1
    stack.cancel(ids["c"], leak_idp.token(BOT, kind="agent"))
    assert _pending(recorded) == 0
