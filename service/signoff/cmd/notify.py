"""`signoff notify`: post new approval requests from the event stream to Slack and Teams."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Final

import redis

from signoff import logsetup
from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import add_settings
from signoff.cmd import options
from signoff.errors import ConfigError
from signoff.notify.config import DEFAULT_GROUP, DEFAULT_REDIS_URL, NotifierConfig
from signoff.notify.delivery import Notifier, describe

LOG_LEVELS: Final = options.LOG_LEVELS


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `notify` to the `signoff` command line."""
    notify = commands.add_parser("notify", help="post new approval requests to Slack and Teams")
    add_notify_arguments(notify)
    notify.set_defaults(run=run_notify)


def add_notify_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `notify` options to `parser`; unset flags fall back to the environment."""
    parser.add_argument(
        "--redis-url", help=f"Redis to read from (REDIS_URL; default {DEFAULT_REDIS_URL})"
    )
    parser.add_argument(
        "--stream",
        help="event stream key (SIGNOFF_EVENTS_STREAM; default: `events` under "
        "SIGNOFF_REDIS_PREFIX, signoff:events)",
    )
    parser.add_argument("--group", help=f"consumer group (default {DEFAULT_GROUP})")
    parser.add_argument("--consumer", help="consumer name within the group (default hostname-pid)")
    parser.add_argument(
        "--slack-webhook-url",
        help="Slack incoming webhook (SIGNOFF_SLACK_WEBHOOK_URL; prefer the variable: "
        "flags are visible to other users in the process list)",
    )
    parser.add_argument(
        "--teams-webhook-url",
        help="Teams workflow webhook (SIGNOFF_TEAMS_WEBHOOK_URL; prefer the variable)",
    )
    parser.add_argument(
        "--approval-url-template",
        help="review page, e.g. https://signoff.example/approvals/{approval_id} "
        "(SIGNOFF_APPROVAL_URL_TEMPLATE); without it messages show the CLI commands",
    )
    parser.add_argument("--http-timeout", type=float, help="seconds per webhook call (default 5)")
    parser.add_argument(
        "--max-attempts", type=int, help="tries per webhook before dropping (default 5)"
    )
    parser.add_argument(
        "--no-follow-ups",
        dest="follow_ups",
        action="store_false",
        default=None,
        help="post only new requests, not approved/rejected/expired/cancelled follow-ups",
    )
    add_settings(parser, [options.LOG_LEVEL])


_FLAG_FIELDS: Final = {
    "redis_url": "redis_url",
    "stream": "stream",
    "group": "group",
    "consumer": "consumer",
    "slack_webhook_url": "slack_webhook_url",
    "teams_webhook_url": "teams_webhook_url",
    "approval_url_template": "approve_url_template",
    "http_timeout": "http_timeout",
    "max_attempts": "max_attempts",
    "follow_ups": "follow_ups",
}


def config_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> NotifierConfig:
    """The environment's configuration with every flag that was given laid over it."""
    base = NotifierConfig.from_env(env)
    overrides = {
        name: getattr(args, flag)
        for flag, name in _FLAG_FIELDS.items()
        if getattr(args, flag, None) is not None
    }
    return dataclasses.replace(base, **overrides)


def run_notify(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run `signoff notify` until SIGTERM/SIGINT (or `stop`); returns the exit status."""
    if args.log_level not in LOG_LEVELS:
        print(f"signoff notify: unknown log level {args.log_level!r}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        config = config_from_args(args)
        notifier = Notifier(config)
    except ConfigError as exc:
        print(f"signoff notify: bad configuration: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    logsetup.configure(args.log_level)
    if stop is None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    with notifier:
        try:
            notifier.ensure_group()
        except redis.RedisError as exc:
            print(f"signoff notify: cannot use Redis: {describe(exc)}", file=sys.stderr)
            return exitcodes.REFUSED
        hosts = ", ".join(f"{t.name} {t.host}" for t in notifier.targets)
        print(
            f"signoff notify consuming {config.stream} as {config.group}/{config.consumer}, "
            f"posting to {hosts}",
            flush=True,
        )
        notifier.run_forever(stop)
    return exitcodes.OK
