"""Fixtures for the audit tests: the shared real Redis under a fresh prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.audit import AuditConfig, AuditLog
from tests.audit.support import KEY

MakeLog = Callable[..., AuditLog]


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the audit tests need a real Redis at {url}: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def prefix(r: redis.Redis) -> Iterator[str]:
    """A key prefix no other test (or a real service) uses; its keys are deleted afterwards."""
    value = f"signoff-test:{uuid.uuid4().hex}:"
    yield value
    for key in r.scan_iter(f"{value}*", count=1000):
        r.delete(key)


@pytest.fixture
def make_log(redis_url: str, prefix: str) -> Iterator[MakeLog]:
    """AuditLogs on the test prefix, each with its own connection; closed at the end."""
    made: list[AuditLog] = []

    def make(url: str | None = None, key: bytes = KEY, **config: Any) -> AuditLog:
        config.setdefault("batch_ms", 5.0)
        log = AuditLog(url or redis_url, key, prefix=prefix, config=AuditConfig(**config))
        made.append(log)
        return log

    yield make
    for log in made:
        log.close(timeout=1.0)
