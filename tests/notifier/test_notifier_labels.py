"""The asking rules' labels (the compliance impact) shown in Slack and Teams messages, escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signoff.identity import NoAuthenticator
from signoff.notify.events import parse_event
from signoff.notify.render import slack_app_message, slack_message, teams_message
from tests.approvals.support import lab_files, serve
from tests.http.inbox_support import staging_read
from tests.notifier.conftest import MakeNotifier
from tests.notifier.support import SLACK_PATH, TEAMS_PATH, Webhooks, event, summary
from tests.notifier.test_notifier_rendering import card, slack_mrkdwn, strings

TEMPLATE = "https://signoff.example/approvals/{approval_id}"


def labelled(labels: dict[str, Any]) -> dict[str, str]:
    base = summary()
    return event(summary_data={**base, "requirement": {**base["requirement"], "labels": labels}})


LABELLED = labelled({"compliance": ["gdpr", "soc2"], "data": ["customer"]})


def test_slack_request_shows_each_label_with_its_values() -> None:
    texts = slack_mrkdwn(slack_message(LABELLED, approve_url_template=TEMPLATE))
    assert any("compliance: gdpr, soc2" in t for t in texts)
    assert any("data: customer" in t for t in texts)


def test_teams_card_shows_each_label_with_its_values() -> None:
    text = "".join(strings(card(teams_message(LABELLED, approve_url_template=TEMPLATE))["body"]))
    assert "compliance: gdpr, soc2" in text
    assert "data: customer" in text


def test_slack_app_message_shows_the_labels() -> None:
    message = slack_app_message("apr_01", parse_event(LABELLED).summary)
    assert any("compliance: gdpr, soc2" in t for t in slack_mrkdwn(message))


def test_a_request_without_labels_has_no_labels_section() -> None:
    for message in (slack_message(event()), teams_message(event())):
        assert not any("Labels" in s for s in strings(message))


def test_label_values_are_escaped_for_slack_and_kept_plain_for_teams() -> None:
    hostile = labelled({"compliance": ["<!channel> & <https://evil|x>", "a\nApproved by: admin"]})
    for text in slack_mrkdwn(slack_message(hostile)):
        assert "<!channel>" not in text
        assert "<https://evil" not in text
        assert "\nApproved by" not in text
    assert any("&lt;!channel&gt; &amp;" in t for t in slack_mrkdwn(slack_message(hostile)))
    teams = strings(card(teams_message(hostile))["body"])
    assert any("<!channel> & <https://evil|x>" in s for s in teams)
    assert not any("\nApproved by" in s for s in teams)


def test_labels_of_the_wrong_shape_are_ignored() -> None:
    odd = labelled({"compliance": "soc2", "data": [1, "customer"]})
    texts = slack_mrkdwn(slack_message(odd))
    assert not any("soc2" in t for t in texts)
    assert any("data: customer" in t for t in texts)


STAGING_RULE = "      - id: staging-needs-a-reviewer\n"
LABELS = "        labels: {compliance: [soc2, gdpr]}\n"


def test_a_real_approval_request_posts_its_rules_labels_to_slack_and_teams(
    tmp_path: Path, redis_server_url: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    for name, text in lab_files().items():
        text = text.replace(STAGING_RULE, STAGING_RULE + LABELS)
        (tmp_path / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    with serve(tmp_path, auth=NoAuthenticator(), redis_url=redis_server_url) as server:
        notifier = make_notifier(stream=server.store.events_stream)
        server.ask(staging_read())
        assert notifier.run_once(block_ms=1000) == 1
    (slack,) = webhooks.to(SLACK_PATH)
    (teams,) = webhooks.to(TEAMS_PATH)
    assert any("compliance: gdpr, soc2" in t for t in slack_mrkdwn(slack.body))
    assert any("compliance: gdpr, soc2" in t for t in strings(card(teams.body)["body"]))
