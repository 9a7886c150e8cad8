"""Fixtures for the notifier tests: real Redis, a per-test stream, a recording webhook server."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from signoff.notify.config import NotifierConfig
from signoff.notify.delivery import Notifier
from tests.notifier.support import SLACK_PATH, TEAMS_PATH, Webhooks, redis_url

MakeNotifier = Callable[..., Notifier]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook calls must reach the local server directly, whatever proxy the shell has set."""
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture
def r(redis_server_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def stream(r: redis.Redis) -> Iterator[str]:
    """A stream key no other test (or the real service) uses; deleted with its groups after."""
    key = f"signoff:test:{uuid.uuid4().hex}"
    yield key
    r.delete(key)


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    with Webhooks() as hooks:
        yield hooks


@pytest.fixture
def make_notifier(
    r: redis.Redis, redis_server_url: str, stream: str, webhooks: Webhooks
) -> Iterator[MakeNotifier]:
    """Build notifiers on the test stream, posting to the recording server, with fast backoff."""
    made: list[Notifier] = []
    names = itertools.count(1)

    def make(**overrides: Any) -> Notifier:
        settings: dict[str, Any] = {
            "redis_url": redis_server_url,
            "stream": stream,
            "consumer": f"consumer-{next(names)}",
            "slack_webhook_url": webhooks.url(SLACK_PATH),
            "teams_webhook_url": webhooks.url(TEAMS_PATH),
            "http_timeout": 2.0,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            **overrides,
        }
        notifier = Notifier(NotifierConfig(**settings))
        notifier.ensure_group()
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()
