"""The notifier against real Redis and a real HTTP server: posting, acking, retries, takeover."""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from typing import Any, cast

import pytest
import redis

from signoff.cmd.notify import add_notify_arguments, config_from_args, run_notify
from signoff.errors import ConfigError
from signoff.notify.config import NotifierConfig
from tests.notifier.conftest import MakeNotifier
from tests.notifier.support import (
    SLACK_PATH,
    TEAMS_PATH,
    Webhooks,
    event,
    pending_count,
    publish,
    summary,
)

TEMPLATE = "https://signoff.example/approvals/{approval_id}"


def test_created_event_is_posted_once_to_each_webhook_and_acknowledged(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(approve_url_template=TEMPLATE)
    publish(r, stream, event())

    assert notifier.run_once(block_ms=100) == 1
    assert notifier.run_once() == 0

    (slack,) = webhooks.to(SLACK_PATH)
    (teams,) = webhooks.to(TEAMS_PATH)
    for request in (slack, teams):
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert slack.body["text"].startswith("Approval requested: agent-7 (agent)")
    assert slack.body["blocks"][0]["type"] == "header"
    assert "<https://signoff.example/approvals/apr_01|" in slack.raw.decode()
    card = teams.body["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["version"] == "1.4"
    assert card["content"]["actions"][0]["url"] == "https://signoff.example/approvals/apr_01"
    assert pending_count(r, stream) == 0


def test_posted_bodies_carry_only_summary_data(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    data = summary(
        requester_id="req-9c1",
        resource_id="res-77e",
        fields=[
            {"path": "customer.iban", "tags": ["pii"], "value": "DE-CANARY-IBAN"},
            {"path": "customer.name", "tags": ["pii"], "masked": "CANARY-MASKED"},
        ],
        payload={"card": "4111-CANARY"},
    )
    publish(
        r,
        stream,
        event(approval_id="apr-5f0", summary_data=data, reason="CANARY-REASON", extra="CANARY-X"),
    )

    assert notifier.run_once(block_ms=100) == 1

    assert len(webhooks.requests) == 2
    for request in webhooks.requests:
        raw = request.raw.decode()
        for value in ("req-9c1", "res-77e", "customer.iban", "customer.name", "apr-5f0"):
            assert value in raw
        assert "CANARY" not in raw


def test_non_created_events_are_acknowledged_without_posting_a_request(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    for kind in ("approval.voted", "approval.consumed", "approval.unknown"):
        publish(r, stream, event(kind, actor="bob"))

    assert notifier.run_once(block_ms=100) == 3

    assert webhooks.requests == []
    assert pending_count(r, stream) == 0


def test_final_outcomes_are_posted_as_short_follow_ups(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    for kind in (
        "approval.approved",
        "approval.rejected",
        "approval.expired",
        "approval.cancelled",
    ):
        publish(r, stream, event(kind, actor="bob"))

    assert notifier.run_once(block_ms=100) == 4

    texts = [request.body["text"] for request in webhooks.to(SLACK_PATH)]
    assert [t.split(":")[0] for t in texts] == [
        "Approval apr_01 approved by bob",
        "Approval apr_01 rejected by bob",
        "Approval apr_01 expired without a decision",
        "Approval apr_01 cancelled by bob",
    ]
    assert not any("Approval requested" in request.raw.decode() for request in webhooks.requests)
    assert len(webhooks.to(TEAMS_PATH)) == 4


def test_follow_ups_can_be_switched_off(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(follow_ups=False)
    publish(r, stream, event("approval.approved", actor="bob"))
    publish(r, stream, event(approval_id="apr_02"))

    assert notifier.run_once(block_ms=100) == 2

    assert [request.body["text"][:19] for request in webhooks.to(SLACK_PATH)] == [
        "Approval requested:"
    ]


def test_a_500_then_200_is_retried_and_delivered_once(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    webhooks.respond(SLACK_PATH, 500)
    publish(r, stream, event())

    assert notifier.run_once(block_ms=100) == 1

    first, second = webhooks.to(SLACK_PATH)
    assert first.raw == second.raw
    # Teams accepted the first time, so only Slack is asked again.
    assert len(webhooks.to(TEAMS_PATH)) == 1
    assert pending_count(r, stream) == 0


def test_a_webhook_that_keeps_failing_is_dropped_after_max_attempts_and_acknowledged(
    r: redis.Redis,
    stream: str,
    webhooks: Webhooks,
    make_notifier: MakeNotifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = make_notifier(max_attempts=3)
    webhooks.respond(SLACK_PATH, *[500] * 10)
    publish(r, stream, event())

    with caplog.at_level(logging.DEBUG, logger="signoff.notifier"):
        assert notifier.run_once(block_ms=100) == 1

    assert len(webhooks.to(SLACK_PATH)) == 3
    assert len(webhooks.to(TEAMS_PATH)) == 1
    assert pending_count(r, stream) == 0
    assert "dropped event" in caplog.text
    assert "after 3 attempts" in caplog.text


def test_rate_limits_and_timeouts_are_retried_but_other_client_errors_are_not(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    webhooks.respond(SLACK_PATH, 429, 408, headers={"Retry-After": "0"})
    webhooks.respond(TEAMS_PATH, 404)
    publish(r, stream, event())

    assert notifier.run_once(block_ms=100) == 1

    assert len(webhooks.to(SLACK_PATH)) == 3
    assert len(webhooks.to(TEAMS_PATH)) == 1
    assert pending_count(r, stream) == 0


def test_redirects_are_not_followed(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    webhooks.respond(SLACK_PATH, 307, headers={"Location": webhooks.url("/elsewhere")})
    publish(r, stream, event())

    assert notifier.run_once(block_ms=100) == 1

    assert [request.path for request in webhooks.requests].count("/elsewhere") == 0
    assert len(webhooks.to(SLACK_PATH)) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_post_is_dropped_not_followed_as_a_get_and_counted_delivered(
    status: int,
    r: redis.Redis,
    stream: str,
    webhooks: Webhooks,
    make_notifier: MakeNotifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = make_notifier(teams_webhook_url=None)
    webhooks.respond(SLACK_PATH, status, headers={"Location": webhooks.url("/elsewhere")})
    publish(r, stream, event())

    with caplog.at_level(logging.ERROR, logger="signoff.notifier"):
        assert notifier.run_once(block_ms=100) == 1

    assert [(request.method, request.path) for request in webhooks.requests] == [
        ("POST", SLACK_PATH)
    ]
    assert f"HTTP {status} is not retryable" in caplog.text


def test_logs_name_webhook_hosts_but_never_their_secrets_or_the_message(
    r: redis.Redis,
    stream: str,
    webhooks: Webhooks,
    make_notifier: MakeNotifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = make_notifier(max_attempts=2)
    webhooks.respond(SLACK_PATH, 500, 500)
    publish(r, stream, event(summary_data=summary(requester_id="req-LOGCANARY")))

    with caplog.at_level(logging.DEBUG):
        assert notifier.run_once(block_ms=100) == 1

    assert "127.0.0.1" in caplog.text
    for secret in ("SLACKSECRET", "TEAMSSECRET", "TEAMSSIG", "/services/", "/workflows/"):
        assert secret not in caplog.text
    for content in ("LOGCANARY", "payments.refund", "card.number"):
        assert content not in caplog.text
    assert "SLACKSECRET" not in repr(notifier.config)


def test_an_entry_left_pending_by_a_crashed_consumer_is_taken_over(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    survivor = make_notifier(claim_min_idle_ms=200)
    publish(r, stream, event())
    # The crashed consumer read the entry and died before acknowledging it.
    read = cast(list[Any], r.xreadgroup("signoff-notifier", "crashed", {stream: ">"}, count=10))
    assert len(read[0][1]) == 1

    assert survivor.run_once() == 0  # not idle long enough: its owner may still be working
    assert webhooks.requests == []
    time.sleep(0.25)
    assert survivor.run_once() == 1

    assert len(webhooks.to(SLACK_PATH)) == 1
    assert len(webhooks.to(TEAMS_PATH)) == 1
    assert pending_count(r, stream) == 0
    time.sleep(0.25)
    assert survivor.run_once() == 0
    assert len(webhooks.requests) == 2


def test_a_peer_does_not_take_over_entries_that_are_still_being_retried(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    owner = make_notifier(claim_min_idle_ms=200, backoff_base=0.6, backoff_max=0.6)
    peer = make_notifier(claim_min_idle_ms=200)
    webhooks.respond(SLACK_PATH, 500)
    publish(r, stream, event())
    worker = threading.Thread(target=owner.run_once, kwargs={"block_ms": 100})
    worker.start()
    webhooks.wait_for(2)  # Slack failed; the owner now backs off for longer than 200 ms
    time.sleep(0.4)

    assert peer.run_once() == 0
    worker.join(timeout=5)

    assert len(webhooks.to(SLACK_PATH)) == 2
    assert len(webhooks.to(TEAMS_PATH)) == 1
    assert pending_count(r, stream) == 0


def test_a_stop_during_backoff_leaves_the_entry_pending_for_redelivery(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(backoff_base=5.0, backoff_max=5.0)
    webhooks.respond(SLACK_PATH, 500)
    publish(r, stream, event())
    stop = threading.Event()
    worker = threading.Thread(target=notifier.run_forever, args=(stop,), kwargs={"block_ms": 50})
    worker.start()
    webhooks.wait_for(2)  # Slack failed, Teams accepted; the notifier is now backing off
    stop.set()
    worker.join(timeout=5)

    assert not worker.is_alive()
    assert pending_count(r, stream) == 1

    successor = make_notifier(claim_min_idle_ms=0)
    assert successor.run_once() == 1
    assert len(webhooks.to(SLACK_PATH)) == 2
    assert pending_count(r, stream) == 0


def test_the_group_starts_at_new_entries_and_creating_it_twice_is_harmless(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    publish(r, stream, event(approval_id="apr_before"))
    notifier = make_notifier()
    notifier.ensure_group()
    publish(r, stream, event(approval_id="apr_after"))

    assert notifier.run_once(block_ms=100) == 1

    bodies = [request.raw.decode() for request in webhooks.requests]
    assert len(bodies) == 2
    assert all("apr_after" in body and "apr_before" not in body for body in bodies)


def test_a_deleted_stream_is_recreated_and_consumption_resumes(
    r: redis.Redis, stream: str, webhooks: Webhooks, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier()
    r.delete(stream)

    assert notifier.run_once() == 0
    publish(r, stream, event())
    assert notifier.run_once(block_ms=100) == 1
    assert len(webhooks.requests) == 2


def test_config_reads_the_environment_and_keeps_webhook_urls_out_of_its_repr() -> None:
    config = NotifierConfig.from_env(
        {
            "REDIS_URL": "redis://redis.internal:6380/2",
            "SIGNOFF_EVENTS_STREAM": "custom:events",
            "SIGNOFF_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/SECRET",
            "SIGNOFF_TEAMS_WEBHOOK_URL": "",
            "SIGNOFF_APPROVAL_URL_TEMPLATE": TEMPLATE,
        }
    )
    assert config.redis_url == "redis://redis.internal:6380/2"
    assert config.stream == "custom:events"
    assert config.group == "signoff-notifier"
    assert config.slack_webhook_url == "https://hooks.slack.com/services/T/B/SECRET"
    assert config.teams_webhook_url is None
    assert config.approve_url_template == TEMPLATE
    assert "SECRET" not in repr(config)
    defaults = NotifierConfig.from_env({})
    assert defaults.redis_url == "redis://127.0.0.1:6379/0"
    assert defaults.stream == "signoff:events"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"slack_webhook_url": "file:///etc/SECRET"}, "Slack webhook URL must be an http(s) URL"),
        ({"teams_webhook_url": "hooks/SECRET"}, "Teams webhook URL must be an http(s) URL"),
        ({"approve_url_template": "https://x.example/SECRET"}, "must contain {approval_id}"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_settings_are_rejected_without_echoing_the_value(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        NotifierConfig(**settings)
    assert "SECRET" not in str(info.value)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="signoff notify")
    add_notify_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REDIS_URL",
        "SIGNOFF_EVENTS_STREAM",
        "SIGNOFF_SLACK_WEBHOOK_URL",
        "SIGNOFF_TEAMS_WEBHOOK_URL",
        "SIGNOFF_APPROVAL_URL_TEMPLATE",
        "SIGNOFF_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_env")
def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_EVENTS_STREAM", "from:env")
    monkeypatch.setenv("SIGNOFF_TEAMS_WEBHOOK_URL", "https://teams.example/hook")
    args = parse("--slack-webhook-url", "https://hooks.slack.com/x", "--max-attempts", "2")
    config = config_from_args(args)
    assert config.stream == "from:env"
    assert config.slack_webhook_url == "https://hooks.slack.com/x"
    assert config.teams_webhook_url == "https://teams.example/hook"
    assert config.max_attempts == 2
    assert config.follow_ups is True
    assert config_from_args(parse("--no-follow-ups", "--stream", "s")).follow_ups is False


@pytest.mark.usefixtures("clean_env")
def test_notify_without_any_webhook_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_notify(parse(), stop=threading.Event()) == 2
    assert "no webhook configured" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_notify_command_posts_new_requests_until_stopped(
    r: redis.Redis,
    redis_server_url: str,
    stream: str,
    webhooks: Webhooks,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse(
        "--redis-url",
        redis_server_url,
        "--stream",
        stream,
        "--slack-webhook-url",
        webhooks.url(SLACK_PATH),
        "--teams-webhook-url",
        webhooks.url(TEAMS_PATH),
    )
    stop = threading.Event()
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(run_notify(args, stop=stop)))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not r.exists(stream) and time.monotonic() < deadline:
            time.sleep(0.01)  # the group (and stream) exist once the command is consuming
        publish(r, stream, event())
        webhooks.wait_for(2)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert codes == [0]
    out = capsys.readouterr().out
    assert f"consuming {stream}" in out
    assert "SLACKSECRET" not in out
    assert pending_count(r, stream) == 0
