"""SignoffClient's approval calls against the real server, real Redis and verified dev tokens."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from signoff.client import (
    Approval,
    ApprovalState,
    ApproverSet,
    Context,
    Decision,
    Field,
    InvalidInput,
    Principal,
    Resource,
    SignoffClient,
    SignoffRpcError,
    Verdict,
)
from signoff.client.approvals import format_duration
from tests.client.conftest import DevIdentity
from tests.server.harness import bundled

IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
WES = Principal("wes@acme.io", "human", ("writer",))
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})
PROD = Context(environment="prod")
RULE = "iam-grants/prod-needs-two-security-approvers"


def connect(address: str, token: str | None = None) -> SignoffClient:
    return SignoffClient(address, timeout=10.0, token=token)


@pytest.fixture
def ivan(approvals_address: str, dev_identity: DevIdentity) -> Iterator[SignoffClient]:
    """The IAM admin who asks: the requester of every grant below."""
    with connect(approvals_address, dev_identity.token("ivan@acme.io", roles=("iam_admin",))) as c:
        yield c


@pytest.fixture
def sam(approvals_address: str, dev_identity: DevIdentity) -> Iterator[SignoffClient]:
    """A security engineer: an eligible approver of prod grants."""
    with connect(approvals_address, dev_identity.token("sam@acme.io", roles=("security",))) as c:
        yield c


@pytest.fixture
def sue(approvals_address: str, dev_identity: DevIdentity) -> Iterator[SignoffClient]:
    """Another security engineer, so two distinct people can make the quorum of two."""
    with connect(approvals_address, dev_identity.token("sue@acme.io", roles=("security",))) as c:
        yield c


def grant(client: SignoffClient) -> Decision:
    """ivan grants db-admin to a fresh grantee in prod: held for two security approvers."""
    grantee = f"bob-{uuid.uuid4().hex[:8]}@acme.io"
    decision = client.check(
        principal=IVAN,
        action="grant_role",
        resource=DB_ADMIN,
        context=PROD,
        payload={"grantee": grantee, "role": "db-admin"},
    )
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    return decision


def test_held_check_names_its_pending_approval_and_a_repeat_finds_the_same_one(
    ivan: SignoffClient,
) -> None:
    payload = {"grantee": f"bob-{uuid.uuid4().hex[:8]}@acme.io", "role": "db-admin"}

    def ask() -> Decision:
        return ivan.check(
            principal=IVAN, action="grant_role", resource=DB_ADMIN, context=PROD, payload=payload
        )

    first, again = ask(), ask()

    assert first.approval_id.startswith("apr_")
    assert again.approval_id == first.approval_id
    assert again.decision_id != first.decision_id
    assert first.to_dict()["approval_id"] == first.approval_id


def test_get_approval_returns_a_typed_approval(ivan: SignoffClient) -> None:
    decision = grant(ivan)

    approval = ivan.get_approval(decision.approval_id)

    assert isinstance(approval, Approval)
    assert approval.id == decision.approval_id
    assert approval.state is ApprovalState.PENDING
    assert approval.approvals == 0
    assert approval.votes == ()
    requirement = approval.requirement
    assert requirement.approvers == (ApproverSet(roles=("security",)),)
    assert requirement.quorum == 2
    assert requirement.pending_ttl == dt.timedelta(hours=4)
    assert requirement.grant_ttl == dt.timedelta(minutes=15)
    assert requirement.rule_ids == (RULE,)
    assert "ivan@acme.io" in requirement.requester_ids
    request = approval.request
    assert (request.requester_id, request.requester_kind) == ("ivan@acme.io", "human")
    assert request.requester_roles == ("iam_admin",)
    assert (request.action, request.resource_kind, request.resource_id) == (
        "grant_role",
        "iam_role",
        "roles/db-admin",
    )
    assert request.environment == "prod"
    assert request.payload["role"] == "db-admin"
    assert request.matched_rules == decision.matched_rules
    assert approval.decision_id == decision.decision_id
    assert approval.policy_revision == bundled().revision
    assert approval.created_at is not None
    assert approval.created_at.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - approval.created_at).total_seconds()) < 30
    assert approval.pending_expires_at == approval.created_at + dt.timedelta(hours=4)
    assert approval.expires_at == approval.pending_expires_at
    assert (approval.approved_at, approval.grant_expires_at, approval.final_at) == (None,) * 3
    assert approval.final_reason == ""


def test_reviewers_see_the_request_with_its_payload_masked(
    reports_address: str, dev_identity: DevIdentity
) -> None:
    report = Resource(
        "report", f"q-{uuid.uuid4().hex[:8]}", fields=(Field("customers.*.email", ("pii.email",)),)
    )
    payload = {"title": "Q1", "customers": [{"email": "jane@example.com", "plan": "pro"}]}
    editor = dev_identity.token("eda@acme.io", roles=("editor",))
    with connect(reports_address) as writer, connect(reports_address, editor) as reviewer:
        decision = writer.check(principal=WES, action="publish", resource=report, payload=payload)
        approval = reviewer.get_approval(decision.approval_id)

    view = approval.request
    (customer,) = view.payload["customers"]
    assert customer["email"].endswith("@example.com")
    assert "jane" not in str(view.payload)
    assert customer["plan"] == "pro"
    assert view.payload["title"] == "Q1"
    assert view.fields == (Field("customers.*.email", ("pii.email",)),)
    assert [entry.path for entry in view.masking_plan.fields] == ["customers.*.email"]
    assert approval.to_dict()["request"]["masking_plan"][0]["operator"] == "EMAIL"


def test_list_shows_pending_work_to_eligible_approvers_only(
    ivan: SignoffClient, sam: SignoffClient, approvals_address: str, dev_identity: DevIdentity
) -> None:
    decision = grant(ivan)
    intern = dev_identity.token("ian@acme.io", roles=("intern",))

    with connect(approvals_address, intern) as ian:
        assert decision.approval_id not in [a.id for a in ian.list_approvals()]
    assert decision.approval_id not in [a.id for a in ivan.list_approvals()]
    listed = {a.id: a for a in sam.list_approvals(page_size=500)}
    assert listed[decision.approval_id].state is ApprovalState.PENDING


def test_two_distinct_security_approvals_reach_the_quorum(
    ivan: SignoffClient, sam: SignoffClient, sue: SignoffClient
) -> None:
    approval_id = grant(ivan).approval_id

    first = sam.approve(approval_id, "ticket SEC-1 checked")
    second = sue.approve(approval_id, "agreed")

    assert first.state is ApprovalState.PENDING
    assert first.approvals == 1
    (vote,) = first.votes
    assert (vote.approver_id, vote.approve, vote.reason) == (
        "sam@acme.io",
        True,
        "ticket SEC-1 checked",
    )
    assert vote.at is not None
    assert second.state is ApprovalState.APPROVED
    assert second.approvals == 2
    assert second.approved_at is not None
    assert second.grant_expires_at == second.approved_at + dt.timedelta(minutes=15)
    assert second.expires_at == second.grant_expires_at
    assert approval_id not in [a.id for a in sam.list_approvals(page_size=500)]


def test_approving_twice_counts_once(ivan: SignoffClient, sam: SignoffClient) -> None:
    approval_id = grant(ivan).approval_id

    sam.approve(approval_id, "yes")
    again = sam.approve(approval_id, "yes, really")

    assert again.state is ApprovalState.PENDING
    assert again.approvals == 1


def test_one_rejection_ends_the_approval_with_its_reason(
    ivan: SignoffClient, sam: SignoffClient, sue: SignoffClient
) -> None:
    approval_id = grant(ivan).approval_id

    rejected = sam.reject(approval_id, "no ticket for this grant")

    assert rejected.state is ApprovalState.REJECTED
    assert rejected.state.final
    assert rejected.final_reason == "no ticket for this grant"
    assert rejected.final_at is not None
    assert [(v.approver_id, v.approve) for v in rejected.votes] == [("sam@acme.io", False)]
    with pytest.raises(SignoffRpcError) as caught:
        sue.approve(approval_id, "too late")
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "rejected" in caught.value.details


@pytest.mark.parametrize(
    ("reason", "final_reason"),
    [("ticket withdrawn", "ticket withdrawn"), ("", "cancelled by the requester")],
)
def test_requester_cancels_its_own_request(
    ivan: SignoffClient, reason: str, final_reason: str
) -> None:
    approval_id = grant(ivan).approval_id

    cancelled = ivan.cancel(approval_id, reason)

    assert cancelled.state is ApprovalState.CANCELLED
    assert cancelled.final_reason == final_reason


def _approve(client: SignoffClient, approval_id: str) -> object:
    return client.approve(approval_id, "let me")


def _cancel(client: SignoffClient, approval_id: str) -> object:
    return client.cancel(approval_id)


def _get(client: SignoffClient, approval_id: str) -> object:
    return client.get_approval(approval_id)


@pytest.mark.parametrize(
    ("subject", "kind", "roles", "call", "says"),
    [
        ("ivan@acme.io", "human", ("iam_admin", "security"), _approve, "self_approval"),
        ("ian@acme.io", "human", ("intern",), _approve, "not_eligible"),
        ("agent:helper", "agent", ("security",), _approve, "not_human"),
        ("sam@acme.io", "human", ("security",), _cancel, "not_requester"),
        ("ian@acme.io", "human", ("intern",), _get, "not_eligible"),
    ],
)
def test_refusals_come_back_as_permission_denied_with_the_servers_reason(
    ivan: SignoffClient,
    approvals_address: str,
    dev_identity: DevIdentity,
    subject: str,
    kind: str,
    roles: tuple[str, ...],
    call: Callable[[SignoffClient, str], object],
    says: str,
) -> None:
    approval_id = grant(ivan).approval_id
    token = dev_identity.token(subject, kind=kind, roles=roles)

    with connect(approvals_address, token) as client, pytest.raises(SignoffRpcError) as caught:
        call(client, approval_id)

    assert caught.value.code == "PERMISSION_DENIED"
    assert says in caught.value.details
    assert ivan.get_approval(approval_id).state is ApprovalState.PENDING


def test_unknown_approval_is_not_found(sam: SignoffClient) -> None:
    for missing in ("apr_doesnotexist", "nope"):
        with pytest.raises(SignoffRpcError) as caught:
            sam.get_approval(missing)
        assert caught.value.code == "NOT_FOUND"


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
def test_approval_calls_without_a_valid_token_are_unauthenticated(
    approvals_address: str, token: str | None
) -> None:
    with connect(approvals_address, token) as client, pytest.raises(SignoffRpcError) as caught:
        client.list_approvals()
    assert caught.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.approve("apr_x", "  "), "reason is required"),
        (lambda c: c.reject("apr_x", ""), "reason is required"),
        (lambda c: c.get_approval(""), "approval_id"),
        (lambda c: c.list_approvals(0), "page_size"),
        (lambda c: c.watch_approval("apr_x", timeout=0), "timeout"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(
    unreachable: str, call: Callable[[SignoffClient], object], message: str
) -> None:
    with connect(unreachable, "t") as client, pytest.raises(InvalidInput, match=message):
        call(client)


def test_watch_yields_every_change_and_ends_once_final(
    ivan: SignoffClient, sam: SignoffClient, sue: SignoffClient
) -> None:
    approval_id = grant(ivan).approval_id
    seen: list[tuple[ApprovalState, int]] = []
    started = time.monotonic()

    # Each step happens only after the previous change was seen, so no two can coalesce.
    for approval in ivan.watch_approval(approval_id, timeout=10):
        seen.append((approval.state, len(approval.votes)))
        if len(seen) == 1:
            sam.approve(approval_id, "fine by me")
        elif len(seen) == 2:
            sue.reject(approval_id, "not on a Friday")

    assert seen == [
        (ApprovalState.PENDING, 0),
        (ApprovalState.PENDING, 1),
        (ApprovalState.REJECTED, 2),
    ]
    assert time.monotonic() - started < 5


def test_watch_continues_past_approval_until_the_grant_is_used(
    ivan: SignoffClient, sam: SignoffClient, sue: SignoffClient
) -> None:
    decision = grant(ivan)
    approval_id = decision.approval_id
    sam.approve(approval_id, "yes")
    sue.approve(approval_id, "yes")
    states = []

    for approval in ivan.watch_approval(approval_id, timeout=10):
        states.append(approval.state)
        if approval.state is ApprovalState.APPROVED:
            used = ivan.check(
                principal=IVAN,
                action="grant_role",
                resource=DB_ADMIN,
                context=PROD,
                payload=ivan.get_approval(approval_id).request.payload,
                approval_id=approval_id,
            )
            assert used.verdict is Verdict.ALLOW
            assert used.approval_id == approval_id

    assert states == [ApprovalState.APPROVED, ApprovalState.CONSUMED]


def test_watch_ends_quietly_when_its_timeout_passes(ivan: SignoffClient) -> None:
    approval_id = grant(ivan).approval_id
    started = time.monotonic()

    states = [approval.state for approval in ivan.watch_approval(approval_id, timeout=0.4)]

    assert states == [ApprovalState.PENDING]
    assert 0.3 < time.monotonic() - started < 3


def test_wait_for_approval_reports_changes_and_returns_the_decided_state(
    ivan: SignoffClient, sam: SignoffClient
) -> None:
    approval_id = grant(ivan).approval_id
    changes: list[ApprovalState] = []

    def on_change(approval: Approval) -> None:
        changes.append(approval.state)
        if approval.state is ApprovalState.PENDING:
            sam.reject(approval_id, "no")

    final = ivan.wait_for_approval(approval_id, timeout=10, on_change=on_change)

    assert final.state is ApprovalState.REJECTED
    assert changes == [ApprovalState.PENDING, ApprovalState.REJECTED]


def test_wait_for_approval_returns_the_pending_state_when_time_runs_out(
    ivan: SignoffClient,
) -> None:
    approval_id = grant(ivan).approval_id

    assert ivan.wait_for_approval(approval_id, timeout=0.3).state is ApprovalState.PENDING


SECRET = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzZWNyZXQtc2VudGluZWwifQ.c2VjcmV0LXNpZ25hdHVyZQ"


def test_token_never_shows_in_repr_or_errors(approvals_address: str) -> None:
    client = connect(approvals_address, SECRET)
    texts = [repr(client)]
    for call in (
        client.list_approvals,
        lambda: client.get_approval("apr_x"),
        lambda: client.approve("apr_x", "r"),
        lambda: list(client.watch_approval("apr_x", timeout=5)),
    ):
        with pytest.raises(SignoffRpcError) as caught:
            call()
        texts += [str(caught.value), repr(caught.value), caught.value.details]
    client.close()

    assert "token=set" in texts[0]
    assert all(SECRET not in text for text in texts)
    assert all("eyJ" not in text for text in texts)


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "nön-ascii"])
def test_unusable_token_is_refused_without_quoting_it(token: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        SignoffClient("127.0.0.1:1", token=token)
    assert token not in str(caught.value) or not token
    assert "token must be" in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (14340, "3h59m"),
        (90000, "1d1h"),
        (-5, "0s"),
    ],
)
def test_durations_read_coarsely(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
