"""submit() stays cheap when Redis is down; the writer catches up when it returns."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from signoff.audit import AuditConfig, AuditLog
from tests.audit.conftest import MakeLog
from tests.audit.support import KEY, records, write
from tests.durability.support import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (AOF, fsync always) that the test can stop and start again."""
    made = RedisServer(tmp_path / "redis", appendonly=True)
    made.start()
    yield made
    made.close()


def test_submit_stays_fast_while_redis_is_down_and_the_writer_recovers(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "signoff.audit")
    config = AuditConfig(queue_max=200, batch_max=50, batch_ms=5, timeout=0.3, retry_max=0.2)
    log = AuditLog(server.url, KEY, config=config)
    try:
        write(log, 50)
        server.stop()

        times, queued = [], 0
        for i in range(2000):
            start = time.perf_counter()
            queued += log.submit({"type": "decision", "decision_id": f"down-{i}"})
            times.append(time.perf_counter() - start)

        # Never an exception, never a long wait: the decision path does not notice.
        assert max(times) < 0.05, max(times)
        assert statistics.median(times) < 50e-6
        dropped = log.stats()["dropped"]["decisions"]
        assert dropped == 2000 - queued > 0
        assert queued <= config.queue_max + config.batch_max + 10
        assert not log.flush(0.2)

        server.start()
        assert log.flush(20)

        result = log.verify("decisions")
        assert result.ok, result
        client = server.client()
        recs = records(client, "signoff:audit:decisions")
        client.close()
        kinds = [x["type"] for x in recs]
        assert kinds.count("decision") == 50 + queued
        notes = [x for x in recs if x["type"] == "audit.dropped"]
        assert [n["count"] for n in notes] == [dropped]
        assert "records stay queued" in caplog.text
        assert "reachable again" in caplog.text
    finally:
        log.close(timeout=1)


def test_close_with_redis_down_reports_what_was_lost(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(server.url, KEY, config=AuditConfig(batch_ms=5, timeout=0.2))
    server.stop()
    for i in range(10):
        log.submit({"type": "decision", "decision_id": f"d{i}"})

    start = time.monotonic()
    log.close(timeout=0.5)

    assert time.monotonic() - start < 3
    assert "closed with 10 record(s) not written" in caplog.text


def test_submit_costs_microseconds(server: RedisServer) -> None:
    log = AuditLog(server.url, KEY, config=AuditConfig(batch_ms=5))
    try:
        record = {
            "type": "decision",
            "decision_id": "dec_1",
            "verdict": "ALLOW",
            "rule_ids": ["r1", "r2"],
            "revision": "3f2a",
            "principal_id": "agent-7",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        }
        times = []
        for _ in range(10_000):
            start = time.perf_counter_ns()
            log.submit(record)
            times.append(time.perf_counter_ns() - start)
        assert log.flush(20)
        # Loose: a decision takes ~60 us; the point is that submit is far below it.
        assert statistics.median(times) < 20_000
        assert log.verify("decisions").checked == 10_000
    finally:
        log.close()


def test_a_batch_whose_reply_was_lost_is_not_written_twice(
    make_log: MakeLog, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log()
    write(log, 3)
    real = log._append_script
    lost: list[int] = []

    def reply_lost(*args: Any, **kwargs: Any) -> Any:
        # Redis runs the script; the connection then fails before the reply arrives.
        result = real(*args, **kwargs)
        if not lost:
            lost.append(1)
            raise redis.TimeoutError("Timeout reading from socket")
        return result

    monkeypatch.setattr(log, "_append_script", reply_lost)
    write(log, 5, start=3)

    ids = [x["decision_id"] for x in records(r, log.keys["decisions"].stream)]
    assert ids == [f"dec_{i}" for i in range(8)]
    assert lost == [1]
    assert log.verify("decisions").checked == 8
