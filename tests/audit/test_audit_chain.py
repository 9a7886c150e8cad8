"""Appending builds one intact keyed chain per stream, also with several writers at once."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import threading
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from signoff.audit import GENESIS, AuditLog, canonical_json
from signoff.audit.chain import Canonical
from tests.audit.conftest import MakeLog
from tests.audit.support import KEY, entries, records, write


def test_many_records_form_one_chain_that_verifies(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log(batch_max=64)
    write(log, 1500)

    result = log.verify("decisions")

    assert result.ok, result
    assert result.checked == 1500
    assert result.first_bad is None
    recs = records(r, log.keys["decisions"].stream)
    assert [rec["seq"] for rec in recs] == list(range(1, 1501))
    assert recs[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(recs))
    assert r.get(log.keys["decisions"].head) == f"1500 {recs[-1]['hash']}"
    assert result.head == (1500, recs[-1]["hash"])
    # The other stream is untouched and empty, which verifies too.
    assert log.verify("approvals").ok
    assert log.verify("approvals").checked == 0


def test_the_hash_is_the_documented_hmac_so_a_siem_can_recompute_it(
    make_log: MakeLog, r: redis.Redis
) -> None:
    log = make_log()
    assert log.submit(
        {
            "type": "decision",
            "decision_id": "dec_1",
            "verdict": "MASK",
            "rule_ids": ["pii", "prod"],
            "revision": "3f2a",
            "principal_id": "agent-7",
            "reasons": ["Zoë's résumé"],
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "request": {"payload": {"card": "[masked]"}, "n": 3, "ratio": 0.5},
        }
    )
    assert log.submit({"type": "decision", "decision_id": "dec_2", "verdict": "DENY"})
    assert log.flush(5)
    out = io.StringIO()
    assert log.export("decisions", None, None, out) == 2

    prev = GENESIS
    for line in out.getvalue().splitlines():
        rec: dict[str, Any] = json.loads(line)
        stored_hash = rec.pop("hash")
        rec.pop("entry_id")
        assert rec.pop("stream") == "decisions"
        text = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected = hmac.new(KEY, bytes.fromhex(prev) + text.encode(), hashlib.sha256).hexdigest()
        assert stored_hash == expected
        assert rec["prev"] == prev
        prev = stored_hash
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["reasons"] == ["Zoë's résumé"]
    assert first["at"].endswith("Z")
    assert len(first["at"]) == len("2025-03-03T14:00:00.123Z")


def test_two_writers_in_threads_share_one_chain(make_log: MakeLog, r: redis.Redis) -> None:
    # Two AuditLog objects, each with its own Redis connection, stand for two processes.
    logs = [make_log(batch_max=32, batch_ms=1.0), make_log(batch_max=32, batch_ms=1.0)]
    per_writer = 2000
    start = threading.Barrier(len(logs))

    def produce(index: int, log: AuditLog) -> None:
        start.wait()
        for i in range(per_writer):
            assert log.submit({"type": "decision", "decision_id": f"w{index}-{i}"})

    threads = [threading.Thread(target=produce, args=(i, log)) for i, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        assert log.flush(20)

    result = logs[0].verify("decisions")
    assert result.ok, result
    assert result.checked == 2 * per_writer
    ids = [rec["decision_id"] for rec in records(r, logs[0].keys["decisions"].stream)]
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(2) for i in range(per_writer))
    # Each writer appended its own records: the chain was shared, not taken turns on.
    assert [log.stats()["written"] for log in logs] == [per_writer, per_writer]


def test_streams_are_chosen_by_type_or_explicitly(make_log: MakeLog, r: redis.Redis) -> None:
    log = make_log()
    assert log.submit({"type": "decision", "decision_id": "d"})
    assert log.submit({"type": "approval.created", "approval_id": "apr_1"})
    assert log.submit({"type": "note", "n": 1}, stream="approvals")
    assert log.flush(5)

    assert [x["type"] for x in records(r, log.keys["decisions"].stream)] == ["decision"]
    assert [x["type"] for x in records(r, log.keys["approvals"].stream)] == [
        "approval.created",
        "note",
    ]
    assert log.verify("approvals").ok


def test_a_record_keeps_its_own_at_and_is_copied_at_submit(
    make_log: MakeLog, r: redis.Redis
) -> None:
    log = make_log()
    record: dict[str, Any] = {"type": "decision", "at": "2025-01-02T03:04:05.678Z", "v": 1}
    assert log.submit(record)
    record["v"] = 2  # a change after submit does not reach the log
    assert log.flush(5)

    (stored,) = records(r, log.keys["decisions"].stream)
    assert stored["at"] == "2025-01-02T03:04:05.678Z"
    assert stored["v"] == 1


@pytest.mark.parametrize(
    "record",
    [
        {"verdict": "ALLOW"},
        {"type": ""},
        {"type": "decision", "seq": 5},
        {"type": "decision", "hash": "x"},
        {"type": "decision", "entry_id": "x"},
    ],
)
def test_malformed_records_are_refused_at_submit(make_log: MakeLog, record: dict[str, Any]) -> None:
    log = make_log()
    with pytest.raises(ValueError, match=r"type|must not set"):
        log.submit(record)


def test_a_record_that_is_not_json_leaves_a_placeholder_in_the_chain(
    make_log: MakeLog, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    assert log.submit({"type": "decision", "score": float("nan")})
    assert log.submit({"type": "decision", "obj": object()})
    assert log.submit({"type": "decision", "ok": True})
    assert log.flush(5)

    recs = records(r, log.keys["decisions"].stream)
    assert [x["type"] for x in recs] == ["audit.unserializable"] * 2 + ["decision"]
    assert recs[0]["original_type"] == "decision"
    assert log.verify("decisions").ok
    assert "not JSON" in caplog.text


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=6,
    ),
    st.data(),
)
def test_pre_encoded_values_give_the_same_text_as_plain_ones(
    record: dict[str, Any], data: st.DataObject
) -> None:
    keys = sorted(record)
    encoded = data.draw(st.sets(st.sampled_from(keys)) if keys else st.just(set()))
    mixed = {k: Canonical.of(v) if k in encoded else v for k, v in record.items()}
    assert canonical_json(mixed) == canonical_json(record)


def test_a_callers_string_cannot_stand_in_for_a_pre_encoded_value() -> None:
    sneaky = "\x00" + "0" * 32 + "-0\x00"
    record = {"a": sneaky, "b": Canonical.of({"x": 1}), "c": sneaky}
    assert json.loads(canonical_json(record)) == {"a": sneaky, "b": {"x": 1}, "c": sneaky}


def test_canonical_json_is_sorted_compact_and_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"], "c": {"y": None, "x": True}}) == (
        '{"a":[1,"é"],"b":1,"c":{"x":true,"y":null}}'
    )
    with pytest.raises(ValueError, match="JSON"):
        canonical_json({"x": float("inf")})


def test_a_missing_head_key_is_restored_from_the_last_record(
    make_log: MakeLog, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    write(log, 10)
    r.delete(log.keys["decisions"].head)
    assert log.verify("decisions").first_bad == (
        entries(r, log.keys["decisions"].stream)[-1][0],
        10,
        "head_mismatch",
    )

    # A new writer (no cached head) continues the chain instead of starting a second one.
    other = make_log()
    write(other, 5, start=10)

    assert other.verify("decisions").ok
    assert other.verify("decisions").checked == 15
    assert "head key was missing or altered" in caplog.text


def test_a_head_that_moves_back_is_reported_by_the_writer(
    make_log: MakeLog, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    write(log, 10)
    # Deleting the tail and rolling the head back is consistent to anyone without history;
    # the writer remembers its own last head and says so.
    recs = records(r, log.keys["decisions"].stream)
    for rec in recs[7:]:
        r.xdel(log.keys["decisions"].stream, rec["entry_id"])
    r.set(log.keys["decisions"].head, f"7 {recs[6]['hash']}")
    write(log, 1, start=10)

    assert "went back from seq 10 to 7" in caplog.text
