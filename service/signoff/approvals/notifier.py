"""Old home of the notifier, kept so existing imports work; new code imports `signoff.notify`."""

from signoff.notify.config import DEFAULT_GROUP, DEFAULT_REDIS_URL, DEFAULT_STREAM, NotifierConfig
from signoff.notify.delivery import Notifier
from signoff.notify.events import CREATED, FOLLOW_UPS, Event, parse_event, parse_summary
from signoff.notify.render import (
    approval_url,
    cli_commands,
    slack_escape,
    slack_message,
    teams_message,
)

__all__ = [
    "CREATED",
    "DEFAULT_GROUP",
    "DEFAULT_REDIS_URL",
    "DEFAULT_STREAM",
    "FOLLOW_UPS",
    "Event",
    "Notifier",
    "NotifierConfig",
    "approval_url",
    "cli_commands",
    "parse_event",
    "parse_summary",
    "slack_escape",
    "slack_message",
    "teams_message",
]
