"""guard(wait=...) against the real server: waiting out approvals by watch or by polling Check."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from signoff.client import (
    ApprovalCancelled,
    ApprovalExpired,
    ApprovalFailed,
    ApprovalRejected,
    ApprovalRequired,
    ApprovalState,
    Context,
    Denied,
    Field,
    InvalidInput,
    Principal,
    Resource,
    SignoffClient,
    SignoffClientError,
    Verdict,
    guard,
    guarded,
)
from tests.client.conftest import DevIdentity

IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})
EXPORT_BOT = Principal(
    "agent:export-bot",
    "agent",
    ("analyst",),
    {"tenant": "acme", "owner": "alice@acme.io", "owner_mfa": True},
)
CUSTOMERS = Resource(
    "customer_table",
    "crm.customers",
    {"tenant": "acme"},
    (Field("customers.*.email", ("pii.email",)), Field("customers.*.country")),
)
WES = Principal("wes@acme.io", "human", ("writer",))
PROD = Context(environment="prod")
WAITING = re.compile(
    r"^signoff: waiting for approval (apr_\S+) \((\d)/(\d) approvals, expires in \S+\)$"
)


@pytest.fixture
def tokens(dev_identity: DevIdentity) -> dict[str, str]:
    return {
        "ivan": dev_identity.token("ivan@acme.io", roles=("iam_admin",)),
        "sam": dev_identity.token("sam@acme.io", roles=("security",)),
        "sue": dev_identity.token("sue@acme.io", roles=("security",)),
        "ian": dev_identity.token("ian@acme.io", roles=("intern",)),
        "dana": dev_identity.token("dana@acme.io", roles=("data_steward",)),
        "bot": dev_identity.token("agent:export-bot", kind="agent", roles=("analyst",)),
        "wes": dev_identity.token("wes@acme.io", roles=("writer",)),
        "eda": dev_identity.token("eda@acme.io", roles=("editor",)),
    }


@pytest.fixture
def people(approvals_address: str, tokens: dict[str, str]) -> Iterator[dict[str, SignoffClient]]:
    """A client per person on the bundled-rules server, plus `anonymous` with no token."""
    clients = {
        name: SignoffClient(approvals_address, timeout=10.0, token=token)
        for name, token in tokens.items()
    }
    clients["anonymous"] = SignoffClient(approvals_address, timeout=10.0)
    yield clients
    for client in clients.values():
        client.close()


def grant_payload() -> dict[str, str]:
    """A grant nobody has asked for yet, so it gets an approval of its own."""
    return {"grantee": f"bob-{uuid.uuid4().hex[:8]}@acme.io", "role": "db-admin"}


def guard_grant(client: SignoffClient, payload: dict[str, str], **options: Any) -> Any:
    return guard(
        client,
        principal=IVAN,
        action="grant_role",
        resource=DB_ADMIN,
        context=PROD,
        payload=payload,
        **options,
    )


def held_grant(client: SignoffClient, payload: dict[str, str]) -> str:
    """Ask once without waiting and return the pending approval's id."""
    with pytest.raises(ApprovalRequired) as caught, guard_grant(client, payload):
        pytest.fail("the block must not run")
    assert caught.value.approval_id.startswith("apr_")
    return caught.value.approval_id


@contextmanager
def later(delay: float, *steps: Callable[[], object]) -> Iterator[None]:
    """Run `steps` on another thread after `delay` seconds, like a human answering."""

    def run() -> None:
        time.sleep(delay)
        for step in steps:
            step()

    worker = threading.Thread(target=run, name="approver")
    worker.start()
    try:
        yield
    finally:
        worker.join(10)


def test_without_wait_approval_required_carries_the_approval_id_and_requirement(
    people: dict[str, SignoffClient],
) -> None:
    with pytest.raises(ApprovalRequired) as caught, guard_grant(people["ivan"], grant_payload()):
        pytest.fail("the block must not run")

    error = caught.value
    assert error.approval_id.startswith("apr_")
    assert error.requirement is not None
    assert error.requirement.quorum == 2
    assert error.waited is None
    assert f"approval {error.approval_id}]" in str(error)


def test_guard_waits_for_concurrent_approvers_and_runs_the_block(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["ivan"], payload)
    progress: list[str] = []
    ran = False

    with (
        later(
            0.3,
            lambda: people["sam"].approve(approval_id, "ticket SEC-7"),
            lambda: time.sleep(0.2),
            lambda: people["sue"].approve(approval_id, "agreed"),
        ),
        guard_grant(people["ivan"], payload, wait=10, on_progress=progress.append) as permit,
    ):
        ran = True

    assert ran
    assert permit.decision.verdict is Verdict.ALLOW
    assert permit.decision.approval_id == approval_id
    assert permit.decision.reasons == (f"approved: {approval_id}",)
    counts = [WAITING.match(line) for line in progress[:-1]]
    assert [(m.group(1), m.group(2), m.group(3)) for m in counts if m] == [
        (approval_id, "0", "2"),
        (approval_id, "1", "2"),
    ]
    assert (
        progress[-1] == f"signoff: approval {approval_id} approved (2/2 approvals); checking again"
    )
    assert people["ivan"].get_approval(approval_id).state is ApprovalState.CONSUMED


def test_agents_export_proceeds_masked_once_a_steward_approves(
    people: dict[str, SignoffClient],
) -> None:
    target = f"s3://acme-exports/{uuid.uuid4().hex[:8]}.parquet"
    progress: list[str] = []

    def approve_the_pending_export() -> None:
        (pending,) = [
            a
            for a in people["dana"].list_approvals(page_size=500)
            if a.request.payload.get("target") == target
        ]
        people["dana"].approve(pending.id, "export ticket DATA-12")

    with (
        later(0.3, approve_the_pending_export),
        guard(
            people["bot"],
            principal=EXPORT_BOT,
            action="export",
            resource=CUSTOMERS,
            context=PROD,
            payload={"target": target},
            wait=10,
            on_progress=progress.append,
        ) as permit,
    ):
        rows = permit.mask({"customers": [{"email": "jane@example.com", "country": "DE"}]})

    assert permit.decision.verdict is Verdict.MASK
    assert permit.decision.approval_id.startswith("apr_")
    assert rows["customers"][0]["email"].endswith("@example.com")
    assert "jane" not in rows["customers"][0]["email"]
    assert rows["customers"][0]["country"] == "DE"
    assert WAITING.match(progress[0])


def test_rejection_raises_approval_rejected_with_the_reason(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["ivan"], payload)
    progress: list[str] = []

    with (
        later(0.2, lambda: people["sam"].reject(approval_id, "no ticket")),
        pytest.raises(ApprovalRejected) as caught,
        guard_grant(people["ivan"], payload, wait=10, on_progress=progress.append),
    ):
        pytest.fail("the block must not run")

    error = caught.value
    assert isinstance(error, ApprovalFailed)
    assert isinstance(error, SignoffClientError)
    assert (error.approval_id, error.final_reason) == (approval_id, "no ticket")
    assert error.approval is not None
    assert error.approval.state is ApprovalState.REJECTED
    assert str(error) == f"'grant_role': approval {approval_id} was rejected: no ticket"
    assert progress[-1] == f"signoff: approval {approval_id} rejected: no ticket"


def test_cancellation_raises_approval_cancelled(people: dict[str, SignoffClient]) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["ivan"], payload)

    with (
        later(0.2, lambda: people["ivan"].cancel(approval_id, "wrong grantee")),
        pytest.raises(ApprovalCancelled) as caught,
        guard_grant(people["ivan"], payload, wait=10, on_progress=lambda line: None),
    ):
        pytest.fail("the block must not run")

    assert (caught.value.approval_id, caught.value.final_reason) == (approval_id, "wrong grantee")


@pytest.mark.parametrize("watching", [True, False], ids=["watching", "polling"])
def test_expiry_raises_approval_expired(
    reports_address: str, tokens: dict[str, str], watching: bool
) -> None:
    report = Resource("report", f"r-{uuid.uuid4().hex[:8]}")
    token = tokens["wes"] if watching else None
    started = time.monotonic()

    with (
        SignoffClient(reports_address, timeout=10.0, token=token) as client,
        pytest.raises(ApprovalExpired) as caught,
        guard(
            client,
            principal=WES,
            action="rush",
            resource=report,
            wait=10,
            poll_interval=0.2,
            on_progress=lambda line: None,
        ),
    ):
        pytest.fail("the block must not run")

    assert caught.value.approval_id.startswith("apr_")
    # Watching sees the approval itself; a poll only sees the check's DENY reason.
    assert caught.value.final_reason == ("pending window ended" if watching else "")
    assert time.monotonic() - started < 5


def test_timeout_raises_approval_required_and_a_later_guard_resumes_with_the_id(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    started = time.monotonic()

    with (
        pytest.raises(ApprovalRequired) as caught,
        guard_grant(people["ivan"], payload, wait=0.5, on_progress=lambda line: None),
    ):
        pytest.fail("the block must not run")

    waited = time.monotonic() - started
    error = caught.value
    assert 0.4 < waited < 3
    assert error.approval_id.startswith("apr_")
    assert error.waited == 0.5
    assert "still pending after waiting 0.5s" in str(error)
    people["sam"].approve(error.approval_id, "ok")
    people["sue"].approve(error.approval_id, "ok")

    with guard_grant(people["anonymous"], payload, approval_id=error.approval_id) as permit:
        pass

    assert permit.decision.verdict is Verdict.ALLOW
    assert permit.decision.approval_id == error.approval_id
    with (
        pytest.raises(Denied, match="approval_already_used"),
        guard_grant(people["anonymous"], payload, approval_id=error.approval_id),
    ):
        pytest.fail("an approval is used once")


def test_resuming_after_a_rejection_raises_approval_rejected_with_the_reason(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["ivan"], payload)
    people["sam"].reject(approval_id, "not this quarter")

    with (
        pytest.raises(ApprovalRejected) as caught,
        guard_grant(people["ivan"], payload, approval_id=approval_id),
    ):
        pytest.fail("the block must not run")

    assert caught.value.final_reason == "not this quarter"
    assert caught.value.decision is not None
    assert caught.value.decision.reasons == ("approval_rejected",)


def test_without_a_token_the_guard_waits_by_polling_check(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["anonymous"], payload)
    progress: list[str] = []

    with (
        later(
            0.3,
            lambda: people["sam"].approve(approval_id, "ok"),
            lambda: people["sue"].approve(approval_id, "ok"),
        ),
        guard_grant(
            people["anonymous"], payload, wait=10, poll_interval=0.2, on_progress=progress.append
        ) as permit,
    ):
        pass

    assert permit.decision.verdict is Verdict.ALLOW
    assert permit.decision.approval_id == approval_id
    assert progress == [
        f"signoff: waiting for approval {approval_id} (needs 2 approval(s), checking every 0.2s)"
    ]


def test_a_token_that_may_not_watch_falls_back_to_polling(
    people: dict[str, SignoffClient],
) -> None:
    payload = grant_payload()
    approval_id = held_grant(people["ivan"], payload)
    progress: list[str] = []

    with (
        later(
            0.3,
            lambda: people["sam"].approve(approval_id, "ok"),
            lambda: people["sue"].approve(approval_id, "ok"),
        ),
        guard_grant(
            people["ian"], payload, wait=10, poll_interval=0.2, on_progress=progress.append
        ) as permit,
    ):
        pass

    assert permit.decision.approval_id == approval_id
    assert progress[0].startswith(
        f"signoff: cannot watch approval {approval_id} (PERMISSION_DENIED); checking every 0.2s"
    )


def test_guarded_function_waits_and_its_result_is_masked(
    people: dict[str, SignoffClient],
) -> None:
    target = f"s3://acme-exports/{uuid.uuid4().hex[:8]}.parquet"

    def approve_the_pending_export() -> None:
        (pending,) = [
            a
            for a in people["dana"].list_approvals(page_size=500)
            if a.request.payload.get("target") == target
        ]
        people["dana"].approve(pending.id, "ok")

    @guarded(
        people["bot"],
        principal=EXPORT_BOT,
        action="export",
        resource=CUSTOMERS,
        context=PROD,
        payload={"target": target},
        wait=10,
        on_progress=lambda line: None,
    )
    def export() -> dict[str, Any]:
        return {"customers": [{"email": "omar@example.org", "country": "FR"}]}

    with later(0.3, approve_the_pending_export):
        rows = export()

    assert rows["customers"][0]["email"].endswith("@example.org")
    assert "omar" not in rows["customers"][0]["email"]


def test_default_progress_goes_to_stderr_and_never_shows_the_token(
    people: dict[str, SignoffClient], tokens: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    payload = grant_payload()

    with (
        pytest.raises(ApprovalRequired) as caught,
        guard_grant(people["ivan"], payload, wait=0.3),
    ):
        pytest.fail("the block must not run")

    captured = capsys.readouterr()
    assert captured.out == ""
    match = WAITING.match(captured.err.splitlines()[0])
    assert match is not None
    assert match.group(1) == caught.value.approval_id
    assert "expires in 3h59m" in captured.err
    for text in (captured.err, str(caught.value), repr(caught.value)):
        assert all(token not in text for token in tokens.values())


@pytest.mark.parametrize(("wait", "poll"), [(-1.0, 2.0), (float("nan"), 2.0), (5.0, 0.0)])
def test_bad_wait_or_poll_interval_is_refused(
    people: dict[str, SignoffClient], wait: float, poll: float
) -> None:
    with pytest.raises(InvalidInput):
        guard_grant(people["ivan"], grant_payload(), wait=wait, poll_interval=poll)
