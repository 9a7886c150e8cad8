"""Slack buttons and the reason modal: verified as Slack signs, voted as the Slack user who clicked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from signoff.approvals.model import ApprovalRecord, Identity, State
from signoff.decisions import Decisions
from signoff.engine.model import Verdict
from signoff.notify.render import APPROVE_ACTION, REJECT_ACTION
from signoff.server import convert
from tests.http.slack_support import (
    SECURITY_GROUP,
    Gateway,
    SlackStandIn,
    SlackUser,
    click,
    gateway,
    signed_headers,
    slack_api,
    submission,
)
from tests.server.harness import prod_grant

RITA, SEC2, IVAN, ZOE, GHOST, BOT, UNCONFIRMED = (
    "U0RITA",
    "U0SEC2",
    "U0IVAN",
    "U0ZOE",
    "U0GHOST",
    "U0BOT",
    "U0UNCONF",
)


def stand_in() -> SlackStandIn:
    return SlackStandIn(
        users={
            RITA: SlackUser(RITA, "rita@acme.io"),
            SEC2: SlackUser(SEC2, "sec2@acme.io"),
            # The requester himself, in the security group: still may not approve his own.
            IVAN: SlackUser(IVAN, "Ivan@Acme.io"),
            ZOE: SlackUser(ZOE, "zoe@acme.io"),
            BOT: SlackUser(BOT, "bot@acme.io", is_bot=True),
            UNCONFIRMED: SlackUser(UNCONFIRMED, "mallory@acme.io", confirmed=False),
        },
        usergroups={SECURITY_GROUP: [RITA, SEC2, IVAN, BOT, UNCONFIRMED]},
    )


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with slack_api(stand_in()) as api:
        yield api


@pytest.fixture
def gw(slack: SlackStandIn) -> Iterator[Gateway]:
    with gateway(slack) as running:
        yield running


def pending(gw: Gateway) -> str:
    """A real decision that asks for two security approvers: the approval it holds."""
    request = convert.to_request(prod_grant(), convert.Limits())
    outcome = Decisions(approvals=gw.approvals).decide(gw.engine, request)
    assert outcome.decision.verdict is Verdict.REQUIRE_APPROVAL
    assert outcome.approval_id
    return outcome.approval_id


def stored(gw: Gateway, approval_id: str) -> ApprovalRecord:
    record = gw.store.get(approval_id)
    assert record is not None
    return record


def voters(gw: Gateway, approval_id: str) -> set[str]:
    return {v.approver_id for v in stored(gw, approval_id).votes}


def send(gw: Gateway, body: bytes, *, at: int | None = None) -> int:
    return gw.post(body, signed_headers(body, at=at)).status_code


def test_two_security_engineers_approve_from_slack_and_the_approval_is_granted(
    gw: Gateway, slack: SlackStandIn
) -> None:
    approval_id = pending(gw)
    assert send(gw, click(RITA, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).state is State.PENDING
    assert voters(gw, approval_id) == {"rita@acme.io"}
    assert send(gw, click(SEC2, APPROVE_ACTION, approval_id)) == 200
    record = stored(gw, approval_id)
    assert record.state is State.APPROVED
    assert voters(gw, approval_id) == {"rita@acme.io", "sec2@acme.io"}
    # Who clicked was asked of Slack, and the roles came from the user group, not the message.
    assert [c.args["user"] for c in slack.calls_to("users.info")] == [RITA, SEC2]
    assert slack.calls_to("usergroups.users.list")
    assert slack.calls_to("chat.postEphemeral") == []


def test_one_person_clicking_twice_counts_once_toward_the_quorum(gw: Gateway) -> None:
    approval_id = pending(gw)
    assert send(gw, click(RITA, APPROVE_ACTION, approval_id)) == 200
    assert send(gw, click(RITA, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).state is State.PENDING
    assert voters(gw, approval_id) == {"rita@acme.io"}


def test_a_tampered_body_is_refused_and_nothing_is_recorded(
    gw: Gateway, slack: SlackStandIn
) -> None:
    approval_id = pending(gw)
    honest = click(ZOE, APPROVE_ACTION, approval_id)
    headers = signed_headers(honest)
    # The signature of zoe's click, on a body that says rita clicked.
    forged = honest.replace(ZOE.encode(), RITA.encode())
    response = gw.post(forged, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert stored(gw, approval_id).votes == ()
    assert slack.calls == []  # refused before anyone was looked up


def test_a_request_signed_with_another_secret_is_refused(gw: Gateway) -> None:
    approval_id = pending(gw)
    body = click(RITA, APPROVE_ACTION, approval_id)
    assert gw.post(body, signed_headers(body, secret="not-the-secret")).status_code == 401
    assert stored(gw, approval_id).votes == ()


def test_a_correctly_signed_request_older_than_five_minutes_is_refused(gw: Gateway) -> None:
    approval_id = pending(gw)
    old = int(time.time()) - 6 * 60
    assert send(gw, click(RITA, APPROVE_ACTION, approval_id), at=old) == 401
    assert stored(gw, approval_id).votes == ()


def test_a_replayed_request_is_refused_even_inside_the_window(gw: Gateway) -> None:
    approval_id = pending(gw)
    # A reject opens the modal; replaying the click must not open (or do) anything again.
    body = click(RITA, REJECT_ACTION, approval_id)
    headers = signed_headers(body)
    assert gw.post(body, headers).status_code == 200
    replay = gw.post(body, headers)
    assert replay.status_code == 401
    assert "already received" in replay.json()["error"]["message"]
    assert stored(gw, approval_id).state is State.PENDING


def test_replays_are_refused_by_every_replica_sharing_redis(slack: SlackStandIn) -> None:
    with gateway(slack) as one, gateway(slack, prefix=one.store.prefix) as two:
        approval_id = pending(one)
        body = click(RITA, REJECT_ACTION, approval_id)
        headers = signed_headers(body)
        assert one.post(body, headers).status_code == 200
        assert two.post(body, headers).status_code == 401
        assert len(slack.calls_to("views.open")) == 1


def test_an_unknown_slack_user_is_refused_and_told_why(gw: Gateway, slack: SlackStandIn) -> None:
    approval_id = pending(gw)
    assert send(gw, click(GHOST, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).votes == ()
    [told] = slack.calls_to("chat.postEphemeral")
    assert told.args["user"] == GHOST
    assert "not linked" in told.args["text"]


def test_a_user_without_the_role_is_refused_and_told_why(gw: Gateway, slack: SlackStandIn) -> None:
    approval_id = pending(gw)
    assert send(gw, click(ZOE, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).votes == ()
    [told] = slack.calls_to("chat.postEphemeral")
    assert "role security" in told.args["text"]


@pytest.mark.parametrize(
    ("user", "why"),
    [(IVAN, "own request"), (BOT, "only humans"), (UNCONFIRMED, "confirmed")],
)
def test_the_requester_a_bot_and_an_unconfirmed_email_cannot_approve(
    gw: Gateway, slack: SlackStandIn, user: str, why: str
) -> None:
    approval_id = pending(gw)
    assert send(gw, click(user, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).votes == ()
    [told] = slack.calls_to("chat.postEphemeral")
    assert why in told.args["text"]


def test_reject_opens_a_modal_and_its_reason_rejects_the_approval(
    gw: Gateway, slack: SlackStandIn
) -> None:
    approval_id = pending(gw)
    assert send(gw, click(RITA, REJECT_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).state is State.PENDING  # nothing until the reason is given
    [opened] = slack.calls_to("views.open")
    view = opened.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "modal"
    assert view["blocks"][-1]["type"] == "input"
    body = submission(RITA, view["private_metadata"], "no change ticket for this grant")
    assert send(gw, body) == 200
    record = stored(gw, approval_id)
    assert record.state is State.REJECTED
    assert [(v.approver_id, v.approve, v.reason) for v in record.votes] == [
        ("rita@acme.io", False, "no change ticket for this grant")
    ]


def test_a_modal_submission_is_voted_as_its_own_verified_user_not_the_clicker(
    gw: Gateway,
) -> None:
    approval_id = pending(gw)
    metadata = json.dumps({"approval_id": approval_id, "approve": False})
    response = gw.post(body := submission(ZOE, metadata, "nope"), signed_headers(body))
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert "role security" in answer["errors"]["reason"]
    assert stored(gw, approval_id).state is State.PENDING


def test_an_empty_reason_keeps_the_modal_open(gw: Gateway) -> None:
    approval_id = pending(gw)
    metadata = json.dumps({"approval_id": approval_id, "approve": False})
    response = gw.post(body := submission(RITA, metadata, "   "), signed_headers(body))
    assert response.json()["response_action"] == "errors"
    assert stored(gw, approval_id).state is State.PENDING


def test_approve_opens_the_modal_where_a_reason_is_asked_for(slack: SlackStandIn) -> None:
    with gateway(slack, reason_on_approve=True) as gw:
        approval_id = pending(gw)
        assert send(gw, click(RITA, APPROVE_ACTION, approval_id)) == 200
        assert stored(gw, approval_id).votes == ()
        [opened] = slack.calls_to("views.open")
        view = opened.args["view"]
        view = json.loads(view) if isinstance(view, str) else view
        assert json.loads(view["private_metadata"])["approve"] is True


def test_a_signed_body_that_is_no_slack_payload_is_a_400_naming_the_field(gw: Gateway) -> None:
    body = b"payload=%7Bnot+json"
    response = gw.post(body, signed_headers(body))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "payload"


def test_a_click_for_an_approval_that_does_not_exist_changes_nothing(
    gw: Gateway, slack: SlackStandIn
) -> None:
    assert send(gw, click(RITA, APPROVE_ACTION, "apr_" + "x" * 24)) == 200
    [told] = slack.calls_to("chat.postEphemeral")
    assert "no such approval" in told.args["text"]


def test_a_decided_approval_cannot_be_voted_again_from_an_old_message(
    gw: Gateway, slack: SlackStandIn
) -> None:
    approval_id = pending(gw)
    rita = Identity("rita@acme.io", "human", frozenset({"security"}))
    gw.approvals.vote(approval_id, rita, "no", approve=False)
    assert send(gw, click(SEC2, APPROVE_ACTION, approval_id)) == 200
    assert stored(gw, approval_id).state is State.REJECTED
    [told] = slack.calls_to("chat.postEphemeral")
    assert "rejected" in told.args["text"]


def test_when_redis_cannot_remember_a_signature_the_click_is_refused_with_503(
    slack: SlackStandIn,
) -> None:
    with gateway(slack) as gw:
        approval_id = pending(gw)
        pool = gw.store.redis.connection_pool
        port = pool.connection_kwargs["port"]
        pool.connection_kwargs["port"] = 1  # nothing listens there: Redis is gone
        pool.reset()
        response = gw.post(body := click(RITA, APPROVE_ACTION, approval_id), signed_headers(body))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        pool.connection_kwargs["port"] = port
        pool.reset()
        assert stored(gw, approval_id).votes == ()
