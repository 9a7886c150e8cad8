"""The canary run: every verdict, a mixed batch, approvals start to end, and every failure."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from signoff.notify.delivery import Notifier
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import DevIdP, bearer, refused
from tests.leaks.support import (
    BOT,
    REVIEWER,
    Canaries,
    Captured,
    Stack,
    allow,
    bad_requests,
    deny,
    evaluation_error,
    mask,
    needs_approval,
)
from tests.notifier.support import Webhooks
from tests.server.harness import TIMEOUT

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
# Posts per webhook: four requests created (a, b, c and the batch's), then approved a,
# rejected b and cancelled c; voted and consumed are not posted.
NOTIFIED_EVENTS = 7


def run(
    stack: Stack,
    down: Stack,
    notifier: Notifier,
    hooks: Webhooks,
    idp: DevIdP,
    c: Canaries,
    captured: Captured,
) -> None:
    """Drive both servers through everything a request can go through; record what came out."""
    reviewer = idp.token(REVIEWER, "reviewer")
    requester = idp.token(BOT, kind="agent")
    _single_checks(stack, c, captured)
    _failures(stack, c, captured)
    _batch(stack, c, captured)
    _approvals(stack, c, captured, reviewer, requester)
    _store_down(down, c, captured, reviewer)
    _notifications(notifier, hooks, captured)
    stack.drain_audit()
    for stream, text in stack.export_audit().items():
        assert text, f"nothing on the {stream} audit stream"
        for line in text.splitlines():
            captured.add("audit records", f"audit {stream}", line)
    events = stack.event_streams()
    assert events, "no event stream under the prefix"
    for key, text in events.items():
        captured.add("event streams", key, text)


def _single_checks(stack: Stack, c: Canaries, captured: Captured) -> None:
    cases = (
        ("allow", allow(c), pb.VERDICT_ALLOW),
        ("mask", mask(c), pb.VERDICT_MASK),
        ("deny", deny(c), pb.VERDICT_DENY),
        ("evaluation error", evaluation_error(c), pb.VERDICT_DENY),
    )
    for what, request, verdict in cases:
        response = stack.check(request)
        assert response.verdict == verdict, (what, response)
        captured.response(f"Check ({what})", response)
        if what == "evaluation error":
            assert list(response.reasons) == ["evaluation_error"], response
            assert list(response.errored_rules) == ["ledger-purge/deny-labelled"], response
        if what == "mask":
            assert len(response.masking_plan.fields) == 5, response


def _failures(stack: Stack, c: Canaries, captured: Captured) -> None:
    for name, request in bad_requests(c).items():
        error = refused(lambda request=request: stack.check(request))  # type: ignore[misc]
        assert isinstance(error, grpc.Call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
        captured.error(f"Check ({name})", error)


def _batch(stack: Stack, c: Canaries, captured: Captured) -> None:
    bad = bad_requests(c)
    good = [
        allow(c, "batch-allow"),
        mask(c, "batch-mask"),
        deny(c, "batch-deny"),
        evaluation_error(c, "batch-purge"),
        needs_approval(c, "batch-approval"),
    ]
    response = stack.batch([*good, *bad.values()])
    outcomes = [r.WhichOneof("outcome") for r in response.results]
    assert outcomes == ["decision"] * len(good) + ["error"] * len(bad), response
    assert response.results[4].decision.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert {r.error.code for r in response.results[len(good) :]} == {INVALID}
    captured.response("CheckBatch", response)


def _approvals(
    stack: Stack, c: Canaries, captured: Captured, reviewer: str, requester: str
) -> None:
    ids = {}
    for tag in ("a", "b", "c"):
        response = stack.check(needs_approval(c, tag))
        assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL, response
        assert response.approval_id.startswith("apr_"), response
        captured.response(f"Check (approval {tag} created)", response)
        ids[tag] = response.approval_id
    listed = stack.listed(reviewer)
    assert set(ids.values()) <= {a.id for a in listed.approvals}
    for approval in listed.approvals:
        captured.approval(f"ListApprovals ({approval.id})", approval)
    captured.approval("GetApproval (a)", stack.get(ids["a"], reviewer).approval)

    with ThreadPoolExecutor(max_workers=1) as pool:
        started = threading.Event()
        watching = pool.submit(_watch, stack, ids["a"], reviewer, started)
        # Approving only once the watch is open makes it see transitions, not one final state.
        assert started.wait(TIMEOUT), "the watch sent nothing"
        approved = stack.approve(ids["a"], reviewer).approval
        assert approved.state == apb.APPROVAL_STATE_APPROVED, approved
        captured.approval("Approve (a)", approved)
        consumed = stack.check(needs_approval(c, "a"), ids["a"])
        assert consumed.verdict == pb.VERDICT_MASK, consumed
        captured.response("Check (approval a consumed)", consumed)
        watched = watching.result(timeout=TIMEOUT)
    assert [w.approval.state for w in watched][-1] == apb.APPROVAL_STATE_CONSUMED, watched
    for index, message in enumerate(watched):
        captured.approval(f"WatchApproval (a) message {index}", message.approval)

    altered = needs_approval(c, "a")
    altered.payload["target"] = c.open("a.altered.target")
    altered.payload["vault_token"] = c.masked("a.altered.vault_token")
    replay = stack.check(altered, ids["a"])
    assert list(replay.reasons) == ["approval_mismatch"], replay
    captured.response("Check (approval a replayed, payload altered)", replay)
    again = stack.check(needs_approval(c, "a"), ids["a"])
    assert list(again.reasons) == ["approval_already_used"], again
    captured.response("Check (approval a replayed)", again)

    rejected = stack.reject(ids["b"], reviewer).approval
    assert rejected.state == apb.APPROVAL_STATE_REJECTED, rejected
    captured.approval("Reject (b)", rejected)
    cancelled = stack.cancel(ids["c"], requester).approval
    assert cancelled.state == apb.APPROVAL_STATE_CANCELLED, cancelled
    captured.approval("Cancel (c)", cancelled)


def _watch(
    stack: Stack, approval_id: str, token: str, started: threading.Event
) -> list[apb.WatchApprovalResponse]:
    stream = stack.approvals.WatchApproval(
        apb.WatchApprovalRequest(approval_id=approval_id), metadata=bearer(token), timeout=TIMEOUT
    )
    out = []
    for message in stream:
        out.append(message)
        started.set()
    return out


def _store_down(down: Stack, c: Canaries, captured: Captured, reviewer: str) -> None:
    error = refused(lambda: down.check(needs_approval(c, "down")))
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
    captured.error("Check (approval store down)", error)
    batch = down.batch([needs_approval(c, "down-batch"), allow(c, "down-allow")])
    assert batch.results[0].error.code == UNAVAILABLE, batch
    assert batch.results[1].decision.verdict == pb.VERDICT_ALLOW, batch
    captured.response("CheckBatch (approval store down)", batch)
    lookup = refused(lambda: down.get("apr_" + "x" * 24, reviewer))
    assert isinstance(lookup, grpc.Call)
    assert lookup.code() is grpc.StatusCode.UNAVAILABLE, lookup.details()
    captured.error("GetApproval (approval store down)", lookup)


def _notifications(notifier: Notifier, hooks: Webhooks, captured: Captured) -> None:
    while notifier.run_once(0):
        pass
    hooks.wait_for(2 * NOTIFIED_EVENTS)
    assert len(hooks.requests) == 2 * NOTIFIED_EVENTS, [r.body for r in hooks.requests]
    for index, received in enumerate(hooks.requests):
        captured.add(
            "notifications", f"post {index} to {received.path}", received.raw.decode("utf-8")
        )
