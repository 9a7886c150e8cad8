"""The Slack app message: posted with buttons, updated in place with each vote, outcome in its thread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from signoff.approvals.model import Identity, State
from signoff.notify.config import NotifierConfig
from signoff.notify.delivery import Notifier
from signoff.notify.render import APPROVE_ACTION, REJECT_ACTION
from tests.http.slack_support import (
    BOT_TOKEN,
    SECURITY_GROUP,
    Gateway,
    SlackStandIn,
    SlackUser,
    click,
    gateway,
    signed_headers,
    slack_api,
)
from tests.http.test_http_slack_interactions import pending
from tests.server.harness import REDIS_URL

CHANNEL = "C0APPROVALS"
RITA, SEC2 = "U0RITA", "U0SEC2"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    users = {RITA: SlackUser(RITA, "rita@acme.io"), SEC2: SlackUser(SEC2, "sec2@acme.io")}
    with slack_api(SlackStandIn(users=users, usergroups={SECURITY_GROUP: [RITA, SEC2]})) as api:
        yield api


@pytest.fixture
def gw(slack: SlackStandIn) -> Iterator[Gateway]:
    with gateway(slack) as running:
        yield running


@pytest.fixture
def notifier(gw: Gateway, slack: SlackStandIn) -> Iterator[Notifier]:
    config = NotifierConfig(
        redis_url=REDIS_URL,
        stream=gw.store.events_stream,
        slack_bot_token=BOT_TOKEN,
        slack_channel=CHANNEL,
        slack_api_url=slack.url,
        approve_url_template="https://signoff.example/inbox/{approval_id}",
    )
    with Notifier(config) as running:
        running.ensure_group()
        yield running


def deliver(notifier: Notifier) -> None:
    while notifier.run_once(block_ms=200):
        pass


def blocks_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []))


def buttons(message: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for block in message.get("blocks", []):
        if block["type"] == "actions":
            found |= {e["action_id"]: e.get("value", e.get("url")) for e in block["elements"]}
    return found


def press(gw: Gateway, user: str, action_id: str, value: str) -> None:
    body = click(user, action_id, value, channel=CHANNEL)
    assert gw.post(body, signed_headers(body)).status_code == 200


def test_the_message_has_buttons_that_vote_and_is_updated_with_each_vote_and_the_outcome(
    gw: Gateway, slack: SlackStandIn, notifier: Notifier
) -> None:
    approval_id = pending(gw)
    deliver(notifier)
    [posted] = slack.calls_to("chat.postMessage")
    assert posted.args["channel"] == CHANNEL
    assert buttons(posted.args) == {
        APPROVE_ACTION: approval_id,
        REJECT_ACTION: approval_id,
        "signoff_open": f"https://signoff.example/inbox/{approval_id}",
    }
    assert "Waiting for approval" in blocks_text(posted.args)

    # The first security engineer presses the button the message carries.
    press(gw, RITA, APPROVE_ACTION, buttons(posted.args)[APPROVE_ACTION])
    deliver(notifier)
    [first] = slack.calls_to("chat.update")
    assert first.args["channel"] == CHANNEL
    assert first.args["ts"].endswith(".000100")
    assert "approved by rita@acme.io" in blocks_text(first.args)
    assert "1 of 2 approvals" in blocks_text(first.args)
    assert APPROVE_ACTION in buttons(first.args)  # still pending: still decidable

    press(gw, SEC2, APPROVE_ACTION, approval_id)
    deliver(notifier)
    assert gw.store.get(approval_id).state is State.APPROVED  # type: ignore[union-attr]
    final = slack.calls_to("chat.update")[-1]
    assert final.args["ts"] == first.args["ts"]  # the same message, updated in place
    assert "2 of 2 approvals" in blocks_text(final.args)
    assert ":white_check_mark: Approved" in blocks_text(final.args)
    assert set(buttons(final.args)) == {"signoff_open"}  # no more votes to cast
    [thread] = [c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]
    assert thread.args["thread_ts"] == first.args["ts"]
    assert f"Approval {approval_id} approved by sec2@acme.io" in thread.args["text"]


def test_a_vote_from_another_surface_updates_the_message_too(
    gw: Gateway, slack: SlackStandIn, notifier: Notifier
) -> None:
    approval_id = pending(gw)
    deliver(notifier)
    # As the web inbox or the gRPC API would: the same Approvals, no Slack involved.
    rita = Identity("rita@acme.io", "human", frozenset({"security"}))
    gw.approvals.vote(approval_id, rita, "not in a change window", approve=False)
    deliver(notifier)
    [update] = slack.calls_to("chat.update")
    assert "rejected by rita@acme.io" in blocks_text(update.args)
    assert ":no_entry: Rejected" in blocks_text(update.args)
    assert buttons(update.args) == {"signoff_open": f"https://signoff.example/inbox/{approval_id}"}
    # A vote's reason is the reviewer's free text: kept for the audit trail, never posted.
    assert all("change window" not in json.dumps(c.args) for c in slack.calls)


def test_no_payload_value_reaches_slack(
    gw: Gateway, slack: SlackStandIn, notifier: Notifier
) -> None:
    approval_id = pending(gw)
    deliver(notifier)
    press(gw, RITA, APPROVE_ACTION, approval_id)
    deliver(notifier)
    sent = json.dumps([c.args for c in slack.calls])
    # prod_grant's payload names who gets the role; reviewers see it only masked, in signoff.
    assert "bob@acme.io" not in sent
