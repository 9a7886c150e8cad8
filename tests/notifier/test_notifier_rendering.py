"""Slack and Teams messages: their shape, escaping, and that only allowlisted summary data shows."""

from __future__ import annotations

import json
import re
from typing import Any

from signoff.notify.events import parse_event
from signoff.notify.render import slack_message, teams_message
from tests.notifier.support import event, summary

TEMPLATE = "https://signoff.example/approvals/{approval_id}"


def strings(node: Any) -> list[str]:
    """Every string leaf of a JSON document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def card(message: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = message["attachments"][0]["content"]
    return content


def slack_mrkdwn(message: dict[str, Any]) -> list[str]:
    """The texts Slack parses as mrkdwn: the fallback and every mrkdwn object."""
    texts = [message["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return texts


def test_slack_request_has_fallback_text_header_facts_and_review_link() -> None:
    message = slack_message(event(), approve_url_template=TEMPLATE)
    assert message["text"] == (
        "Approval requested: agent-7 (agent) wants payments.refund on payment/pay_123 in prod"
    )
    header, facts, *rest = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval requested: payments.refund"},
    }
    assert [f["text"].split("\n")[0] for f in facts["fields"]] == [
        "*Requester*",
        "*Action*",
        "*Resource*",
        "*Environment*",
        "*Approvals needed*",
        "*Expires*",
    ]
    assert "*Approvals needed*\n2" in [f["text"] for f in facts["fields"]]
    expires = facts["fields"][-1]["text"]
    assert expires.endswith("|2025-03-03 15:00 UTC>")
    assert expires.startswith("*Expires*\n<!date^1741014000^")
    body = json.dumps(message)
    assert "roles finance-lead; groups finance" in body
    assert "refunds over 500 EUR need a finance lead" in body
    assert "`refund-large`" in body
    assert "`card.number` (pci)" in body
    assert "<https://signoff.example/approvals/apr_01|Review, approve or reject in signoff>" in body
    assert "signoff approvals approve" not in body
    assert rest[-1]["type"] == "context"
    assert "grant valid for 15 min once approved" in rest[-1]["elements"][0]["text"]


def test_without_a_url_template_both_messages_show_the_approve_and_reject_commands() -> None:
    approve = 'signoff approvals approve apr_01 --reason "..."'
    reject = 'signoff approvals reject apr_01 --reason "..."'
    (decide,) = [s for s in strings(slack_message(event())) if s.startswith("*To decide*")]
    assert decide == f"*To decide*, run one of:\n`{approve}`\n`{reject}`"
    teams = teams_message(event())
    assert approve in strings(teams)
    assert reject in strings(teams)
    assert "actions" not in card(teams)


def test_teams_request_is_an_adaptive_card_with_an_open_url_action() -> None:
    message = teams_message(event(), approve_url_template=TEMPLATE)
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = attachment["content"]
    assert content["type"] == "AdaptiveCard"
    assert content["version"] == "1.4"
    assert content["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Review, approve or reject",
            "url": "https://signoff.example/approvals/apr_01",
        }
    ]
    lines = ["".join(run["text"] for run in block["inlines"]) for block in content["body"]]
    assert lines[0] == "Approval requested: payments.refund"
    for line in (
        "Requester: agent-7 (agent)",
        "Action: payments.refund",
        "Resource: payment/pay_123",
        "Environment: prod",
        "Approvals needed: 2",
        "Expires: 2025-03-03 15:00 UTC",
        "• roles finance-lead; groups finance",
        "• refunds over 500 EUR need a finance lead",
        "Rules: refund-large",
        "• card.number (pci)",
    ):
        assert line in lines
    assert "signoff approvals approve" not in json.dumps(message)


def test_approval_ids_are_percent_encoded_in_links_and_shell_quoted_in_commands() -> None:
    ev = event(approval_id="apr/1 x;rm")
    teams = teams_message(ev, approve_url_template=TEMPLATE)
    assert card(teams)["actions"][0]["url"] == "https://signoff.example/approvals/apr%2F1%20x%3Brm"
    slack = json.dumps(slack_message(ev))
    assert "signoff approvals approve 'apr/1 x;rm' --reason" in slack


def test_rendered_messages_contain_every_summary_value_and_nothing_else() -> None:
    # Every value in the entry is a distinct "tok..." token: the ones the notifier may show
    # are in the allowlisted summary keys; the LEAK ones sit in keys it must ignore.
    data = {
        "requester_id": "tokrequester",
        "requester_kind": "tokkind",
        "action": "tokaction",
        "resource_kind": "tokreskind",
        "resource_id": "tokresid",
        "environment": "tokenv",
        "fields": [
            {"path": "tokpath.one", "tags": ["toktag1"], "value": "tokLEAKfieldvalue"},
            {"path": "tokpath.two", "tags": [], "hash": "tokLEAKhash"},
        ],
        "reasons": ["tokreason"],
        "matched_rules": ["tokrule"],
        "requirement": {
            "approvers": [{"roles": ["tokrole"], "groups": ["tokgroup"], "ids": ["tokLEAKid"]}],
            "quorum": 1,
            "pending_ttl_seconds": 600,
            "grant_ttl_seconds": 300,
            "secret": "tokLEAKrequirement",
        },
        "pending_expires_at": "2025-03-03T15:00:00Z",
        "payload": {"card": "tokLEAKpayload"},
        "attributes": {"salary": "tokLEAKattribute"},
    }
    ev = event(
        approval_id="tokapproval",
        summary_data=data,
        actor="tokLEAKactor",
        reason="tokLEAKreason",
        payload="tokLEAKstreamfield",
    )
    allowed = {
        "tokrequester",
        "tokkind",
        "tokaction",
        "tokreskind",
        "tokresid",
        "tokenv",
        "tokpath.one",
        "toktag1",
        "tokpath.two",
        "tokreason",
        "tokrule",
        "tokrole",
        "tokgroup",
        "tokapproval",
    }
    for message in (
        slack_message(ev),
        slack_message(ev, approve_url_template=TEMPLATE),
        teams_message(ev),
        teams_message(ev, approve_url_template=TEMPLATE),
    ):
        found = set(re.findall(r"tok[A-Za-z0-9_.]+", json.dumps(message)))
        assert found == allowed


def test_unexpected_summary_keys_are_not_rendered() -> None:
    data = summary(payload={"card": "4111-CANARY"}, values=["CANARY-2"], note="CANARY-3")
    ev = event(summary_data=data)
    for message in (slack_message(ev), teams_message(ev)):
        assert "CANARY" not in json.dumps(message)


def test_summary_values_of_the_wrong_type_are_ignored_not_stringified() -> None:
    data = summary(requester_id={"card": "4111-CANARY"}, reasons=[{"card": "CANARY"}, "ok"])
    data["requirement"]["quorum"] = "CANARY"
    for message in (
        slack_message(event(summary_data=data)),
        teams_message(event(summary_data=data)),
    ):
        assert "CANARY" not in json.dumps(message)


def test_slack_escapes_angle_brackets_and_ampersands_in_user_text() -> None:
    hostile = "<!channel> & <https://evil.example|click>"
    ev = event(
        summary_data=summary(
            requester_id=hostile,
            resource_id=hostile,
            environment="a&b",
            reasons=[hostile],
            matched_rules=["<rule>"],
            fields=[{"path": "x<y>&z", "tags": ["<t>"]}],
        )
    )
    message = slack_message(ev, approve_url_template=TEMPLATE)
    escaped = "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    assert escaped in message["text"]
    texts = slack_mrkdwn(message)
    joined = "\n".join(texts)
    assert "<!channel>" not in joined
    assert "<https://evil" not in joined
    assert f"*Requester*\n{escaped} (agent)" in joined
    assert "*Environment*\na&amp;b" in joined
    assert "`x&lt;y&gt;&amp;z` (&lt;t&gt;)" in joined
    assert "`&lt;rule&gt;`" in joined
    # What is left after removing entities and the notifier's own links holds no < > &.
    for text in texts:
        own = re.sub(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[^<>]*>", "", text)
        own = own.replace("<https://signoff.example/approvals/apr_01|", "").replace("signoff>", "")
        bare = re.sub(r"&(amp|lt|gt);", "", own)
        assert not set("<>&") & set(bare), text


def test_slack_escapes_the_fallback_text_of_follow_ups() -> None:
    message = slack_message(event("approval.rejected", actor="<@U123> & co"))
    assert message["text"].startswith("Approval apr_01 rejected by &lt;@U123&gt; &amp; co:")


def test_teams_keeps_user_text_plain_in_text_runs() -> None:
    hostile = "**bold** [link](https://evil.example) <b>&amp;"
    message = teams_message(event(summary_data=summary(requester_id=hostile, reasons=[hostile])))
    body = card(message)["body"]
    # TextBlock and FactSet parse markdown; TextRuns do not, so the text is shown as written.
    assert {block["type"] for block in body} == {"RichTextBlock"}
    assert {run["type"] for block in body for run in block["inlines"]} == {"TextRun"}
    runs = [run["text"] for block in body for run in block["inlines"]]
    assert f"{hostile} (agent)" in runs
    assert f"• {hostile}" in runs


def test_line_breaks_and_direction_overrides_cannot_forge_message_lines() -> None:
    forged = "agent-7\n*Approved by*: admin\u202e"
    ev = event(summary_data=summary(requester_id=forged))
    slack = slack_message(ev)
    assert "*Requester*\nagent-7 *Approved by*: admin\ufffd (agent)" in json.dumps(
        slack, ensure_ascii=False
    ).replace("\\n", "\n")
    runs = [run["text"] for block in card(teams_message(ev))["body"] for run in block["inlines"]]
    assert "agent-7 *Approved by*: admin\ufffd (agent)" in runs


def test_long_field_lists_are_capped_within_slack_limits() -> None:
    fields = [
        {"path": f"items[{i}].secret_field_name" + "x" * 150, "tags": ["pii"]} for i in range(60)
    ]
    message = slack_message(event(summary_data=summary(fields=fields)))
    (section,) = [
        b for b in message["blocks"] if "Fields touched" in b.get("text", {}).get("text", "")
    ]
    assert len(section["text"]["text"]) <= 3000
    assert re.search(r"…and \d+ more$", section["text"]["text"])
    teams = card(teams_message(event(summary_data=summary(fields=fields))))
    assert len(json.dumps(teams)) < 28_000


def test_an_unreadable_summary_still_renders_a_request_with_its_id_and_commands() -> None:
    ev = event(summary="not json {")
    for message in (slack_message(ev), teams_message(ev)):
        body = json.dumps(message)
        assert "signoff approvals approve apr_01" in body
        assert "Approval requested" in body


def test_follow_ups_are_one_line_outcomes() -> None:
    cases = {
        "approval.approved": "Approval apr_01 approved by bob: payments.refund on payment/pay_123",
        "approval.rejected": "Approval apr_01 rejected by bob: payments.refund on payment/pay_123",
        "approval.cancelled": "Approval apr_01 cancelled by bob: payments.refund on payment/pay_123",
        "approval.expired": (
            "Approval apr_01 expired without a decision: payments.refund on payment/pay_123"
        ),
    }
    for kind, line in cases.items():
        actor = "signoff" if kind == "approval.expired" else "bob"
        ev = parse_event(event(kind, actor=actor))
        assert slack_message(ev)["text"] == line
        teams = card(teams_message(ev))
        assert teams["fallbackText"] == line
        assert [r["text"] for b in teams["body"] for r in b["inlines"]] == [line]
