"""The Teams card of a real approval: masked context, and a button that opens its web inbox page."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from signoff.notify.config import NotifierConfig
from signoff.notify.delivery import Notifier
from tests.http.slack_support import SlackStandIn, gateway, slack_api
from tests.http.test_http_slack_interactions import pending
from tests.notifier.support import TEAMS_PATH, Webhooks
from tests.server.harness import REDIS_URL


@pytest.fixture
def teams() -> Iterator[Webhooks]:
    with Webhooks() as hooks:
        yield hooks


def test_the_teams_card_shows_the_masked_request_and_opens_the_inbox_page_of_that_approval(
    teams: Webhooks,
) -> None:
    with slack_api(SlackStandIn()) as slack, gateway(slack) as gw:
        inbox = gw.url + "/inbox/{approval_id}"
        config = NotifierConfig(
            redis_url=REDIS_URL,
            stream=gw.store.events_stream,
            teams_webhook_url=teams.url(TEAMS_PATH),
            approve_url_template=inbox,
        )
        with Notifier(config) as notifier:
            notifier.ensure_group()
            approval_id = pending(gw)
            notifier.run_once(block_ms=1000)
    [posted] = teams.to(TEAMS_PATH)
    card = posted.body["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Review, approve or reject",
            "url": f"{gw.url}/inbox/{approval_id}",
        }
    ]
    text = json.dumps(card)
    assert "grant_role" in text
    assert "ivan@acme.io" in text
    assert "two security approvers" in text
    assert "bob@acme.io" not in text  # the payload's value: reviewers see it masked, in signoff
