"""Notifier configuration: which stream and group to read, which webhooks to post to."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from signoff.errors import ConfigError
from signoff.streamreader import default_consumer

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX: Final = "signoff:"
# The store writes every transition to `<prefix>events`; a notifier reads the same key.
EVENTS_STREAM: Final = "events"
DEFAULT_STREAM: Final = DEFAULT_PREFIX + EVENTS_STREAM
DEFAULT_GROUP: Final = "signoff-notifier"


def _check_http_url(value: str | None, what: str) -> None:
    if value is None:
        return
    parts = urllib.parse.urlsplit(value)
    # urllib would also open file:// and ftp:// URLs; a webhook is only ever http(s).
    # The value itself is never echoed: webhook URLs carry their secret in the path.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http(s) URL with a host")


@dataclass(frozen=True)
class NotifierConfig:
    """Where to read events and where to post them; webhook URLs are secrets, kept out of repr."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    slack_webhook_url: str | None = field(default=None, repr=False)
    teams_webhook_url: str | None = field(default=None, repr=False)
    # A Slack app (bot token + channel) posts messages with buttons and updates them in place.
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    approve_url_template: str | None = None
    http_timeout: float = 5.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # An entry pending this long on any consumer is presumed orphaned and taken over. Keep it
    # well above http_timeout: the owner refreshes its entries between posts, not during one.
    claim_min_idle_ms: int = 60_000
    batch_size: int = 10
    follow_ups: bool = True

    def __post_init__(self) -> None:
        _check_http_url(self.slack_webhook_url, "the Slack webhook URL")
        _check_http_url(self.teams_webhook_url, "the Teams webhook URL")
        _check_http_url(self.slack_api_url, "the Slack API URL")
        if bool(self.slack_bot_token) != bool(self.slack_channel):
            raise ConfigError("a Slack bot token and a Slack channel go together")
        if self.approve_url_template is not None:
            _check_http_url(self.approve_url_template, "the approval URL template")
            if "{approval_id}" not in self.approve_url_template:
                raise ConfigError("the approval URL template must contain {approval_id}")
        if not (self.stream and self.group and self.consumer):
            raise ConfigError("stream, group and consumer must not be empty")
        if self.http_timeout <= 0:
            raise ConfigError("http_timeout must be positive")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ConfigError("backoff must not be negative")
        if self.claim_min_idle_ms < 0:
            raise ConfigError("claim_min_idle_ms must not be negative")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierConfig:
        """Read REDIS_URL and the SIGNOFF_* notifier variables; empty values count as unset.
        The stream is SIGNOFF_EVENTS_STREAM, else the events stream under SIGNOFF_REDIS_PREFIX,
        so a service and its notifier configured with one prefix meet on one stream."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            return source.get(name) or None

        return cls(
            redis_url=get("REDIS_URL") or DEFAULT_REDIS_URL,
            stream=get("SIGNOFF_EVENTS_STREAM")
            or (get("SIGNOFF_REDIS_PREFIX") or DEFAULT_PREFIX) + EVENTS_STREAM,
            slack_webhook_url=get("SIGNOFF_SLACK_WEBHOOK_URL"),
            teams_webhook_url=get("SIGNOFF_TEAMS_WEBHOOK_URL"),
            slack_bot_token=get("SIGNOFF_SLACK_BOT_TOKEN"),
            slack_channel=get("SIGNOFF_SLACK_CHANNEL"),
            slack_api_url=get("SIGNOFF_SLACK_API_URL") or "https://slack.com/api/",
            approve_url_template=get("SIGNOFF_APPROVAL_URL_TEMPLATE"),
        )
