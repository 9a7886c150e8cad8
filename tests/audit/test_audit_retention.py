"""Retention trims old records and moves the sealed anchor; verify stays ok, tampering does not."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time

import redis

from signoff.audit import BadRecord
from tests.audit.conftest import MakeLog
from tests.audit.support import entries, records, write


def test_max_records_trims_and_verify_stays_ok(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(max_records=100)
    keys = log.keys["decisions"]
    write(log, 350)

    assert log.enforce_retention("decisions") == 250
    assert r.xlen(keys.stream) == 100
    recs = records(r, keys.stream)
    assert recs[0]["seq"] == 251
    assert str(r.get(keys.anchor)).startswith(f"251 {recs[0]['prev']} ")
    result = log.verify("decisions")
    assert result.ok, result
    assert result.checked == 100

    # Appending and trimming again keeps it consistent.
    write(log, 120, start=350)
    assert log.enforce_retention("decisions") == 120
    assert log.verify("decisions").ok
    assert records(r, keys.stream)[0]["seq"] == 371


def test_small_excess_waits_for_a_step_of_one_percent(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(max_records=1000)
    write(log, 1005)

    assert log.enforce_retention("decisions") == 0  # 5 over, the step is 10
    write(log, 5, start=1005)
    assert log.enforce_retention("decisions") == 10
    assert r.xlen(log.keys["decisions"].stream) == 1000


def test_the_writer_trims_by_itself(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(max_records=50, trim_every=0.05)
    write(log, 200)

    deadline = time.monotonic() + 5
    while r.xlen(log.keys["decisions"].stream) > 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.xlen(log.keys["decisions"].stream) == 50
    assert log.verify("decisions").ok
    assert log.stats()["trimmed"] == 150


# Long enough that writing and flushing 20 records on a loaded machine stays within it.
AGE_MS = 1500


def test_max_age_trims_old_records_but_keeps_the_last(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(max_records=None, max_age=dt.timedelta(milliseconds=AGE_MS))
    write(log, 30)
    time.sleep(AGE_MS / 1000 + 0.1)
    write(log, 20, start=30)

    assert log.enforce_retention("decisions") == 30
    assert [x["seq"] for x in records(r, log.keys["decisions"].stream)] == list(range(31, 51))
    assert log.verify("decisions").ok

    time.sleep(AGE_MS / 1000 + 0.1)
    # Everything is old now; the last record stays so the chain keeps a start and an end.
    assert log.enforce_retention("decisions") == 19
    assert log.verify("decisions").checked == 1


def test_trimming_by_hand_is_not_mistaken_for_retention(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(max_records=100)
    write(log, 150)
    first_kept = entries(r, log.keys["decisions"].stream)[50][0]
    r.xtrim(log.keys["decisions"].stream, minid=first_kept, approximate=False)

    assert log.verify("decisions").first_bad == BadRecord(first_kept, 51, "anchor_mismatch")


def test_retention_never_trims_a_broken_chain(
    make_log: MakeLog, r: redis.Redis, caplog: object
) -> None:
    # Deleting old records by hand and letting retention "tidy up" must not launder the gap:
    # the writer checks what it trims and refuses.
    log = make_log(max_records=100)
    write(log, 150)
    ids = [i for i, _ in entries(r, log.keys["decisions"].stream)]
    r.xdel(log.keys["decisions"].stream, ids[3])

    assert log.enforce_retention("decisions") == 0
    assert r.xlen(log.keys["decisions"].stream) == 149
    assert log.verify("decisions").first_bad == BadRecord(ids[4], 5, "inserted_or_deleted")


def test_verify_while_writing_and_trimming_stays_ok(make_log: MakeLog) -> None:
    log = make_log(max_records=200, trim_every=0.01, batch_max=16)
    checker = make_log()
    write(log, 300)
    stop = threading.Event()

    def produce() -> None:
        i = 1000
        while not stop.is_set():
            log.submit({"type": "decision", "decision_id": f"live-{i}"})
            i += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        results = [checker.verify("decisions") for _ in range(15)]
    finally:
        stop.set()
        thread.join()
    assert log.flush(10)
    assert all(res.ok for res in results), [res for res in results if not res.ok]
    assert checker.verify("decisions").ok
    assert log.stats()["trimmed"] > 0


def test_export_filters_by_time_and_writes_json_lines(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log()
    for i, at in enumerate(
        [
            "2025-03-01T10:00:00.000Z",
            "2025-03-01T11:00:00.000Z",
            "2025-03-01T12:00:00.000Z",
            "2025-03-01T13:00:00.000Z",
        ]
    ):
        assert log.submit({"type": "decision", "decision_id": f"d{i}", "at": at})
    assert log.flush(5)

    out = io.StringIO()
    count = log.export(
        "decisions",
        dt.datetime(2025, 3, 1, 11, tzinfo=dt.UTC),
        dt.datetime(2025, 3, 1, 13, tzinfo=dt.UTC),
        out,
    )

    lines = out.getvalue().splitlines()
    assert count == len(lines) == 2
    parsed = [json.loads(line) for line in lines]
    assert [p["decision_id"] for p in parsed] == ["d1", "d2"]
    ids = [i for i, _ in entries(r, log.keys["decisions"].stream)]
    for p in parsed:
        assert set(p) >= {"seq", "prev", "hash", "at", "type", "entry_id", "stream"}
        assert p["entry_id"] in ids
        assert p["stream"] == "decisions"

    # A time without a zone is read as UTC; no filter exports everything.
    everything = io.StringIO()
    assert log.export("decisions", None, None, everything) == 4
    naive = io.StringIO()
    assert log.export("decisions", dt.datetime(2025, 3, 1, 12), None, naive) == 2
