"""verify names the first edited, inserted, deleted, re-ordered or forged record."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable

import pytest
import redis

from signoff.audit import AuditLog, BadRecord, Hasher, audit_key, canonical_json
from tests.audit.conftest import MakeLog
from tests.audit.support import KEY, Fields, entries, records, rewrite, write

COUNT = 40


@pytest.fixture
def log(make_log: MakeLog) -> AuditLog:
    made = make_log()
    write(made, COUNT)
    assert made.verify("decisions").ok
    return made


def _stream(log: AuditLog) -> str:
    return log.keys["decisions"].stream


def _fields(r: redis.Redis, log: AuditLog) -> list[Fields]:
    return [f for _, f in entries(r, _stream(log))]


def _edit(fields: Fields, **changes: object) -> Fields:
    rec = json.loads(fields["record"])
    rec.update(changes)
    return {"hash": fields["hash"], "record": canonical_json(rec)}


def test_an_edited_record_is_named(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    new = [*old[:17], _edit(old[17], verdict="DENY"), *old[18:]]
    ids = rewrite(r, _stream(log), new)

    result = log.verify("decisions")

    assert not result.ok
    assert result.first_bad == BadRecord(ids[17], 18, "edited")
    assert result.checked == 17


def test_an_edited_record_in_place_at_the_end_is_named(log: AuditLog, r: redis.Redis) -> None:
    # The last entry can be replaced without a rebuild: XDEL it and XADD a changed copy.
    last_id, last = entries(r, _stream(log))[-1]
    r.xdel(_stream(log), last_id)
    new_id = r.xadd(_stream(log), _edit(last, verdict="DENY"))  # type: ignore[arg-type]

    assert log.verify("decisions").first_bad == BadRecord(str(new_id), COUNT, "edited")


def test_a_deleted_record_in_the_middle_is_named(log: AuditLog, r: redis.Redis) -> None:
    ids = [i for i, _ in entries(r, _stream(log))]
    r.xdel(_stream(log), ids[9])

    result = log.verify("decisions")

    assert result.first_bad == BadRecord(ids[10], 11, "inserted_or_deleted")
    assert "seq 10 to 10 are missing" in result.detail


def test_the_deleted_last_record_is_caught_by_the_head(log: AuditLog, r: redis.Redis) -> None:
    ids = [i for i, _ in entries(r, _stream(log))]
    r.xdel(_stream(log), ids[-1])

    result = log.verify("decisions")

    assert result.first_bad == BadRecord("", COUNT, "head_mismatch")
    assert result.checked == COUNT - 1
    assert "deleted from the end" in result.detail


def test_deleted_first_records_are_caught_by_the_anchor(log: AuditLog, r: redis.Redis) -> None:
    ids = [i for i, _ in entries(r, _stream(log))]
    r.xdel(_stream(log), ids[0], ids[1])

    assert log.verify("decisions").first_bad == BadRecord(ids[2], 3, "anchor_mismatch")


def test_an_anchor_moved_by_hand_does_not_verify(log: AuditLog, r: redis.Redis) -> None:
    # Deleting old records and pointing the anchor at the new first one, as retention would:
    # without the key the anchor's seal cannot be made.
    recs = records(r, _stream(log))
    r.xdel(_stream(log), *(rec["entry_id"] for rec in recs[:5]))
    keys = log.keys["decisions"]
    seal = hashlib.sha256(f"6 {recs[5]['prev']}".encode()).hexdigest()
    r.set(keys.anchor, f"6 {recs[5]['prev']} {seal}")

    result = log.verify("decisions")

    assert result.first_bad == BadRecord(recs[5]["entry_id"], 6, "anchor_mismatch")
    assert "seal" in result.detail


def test_an_anchor_copied_from_the_other_stream_does_not_verify(
    log: AuditLog, r: redis.Redis
) -> None:
    # Sealed with the right key, but for the approvals stream: a seal names its stream.
    other = Hasher(KEY)
    keys = log.keys["decisions"]
    seq, prev, _ = str(r.get(keys.anchor)).split(" ")
    r.set(keys.anchor, other.anchor("approvals", int(seq), prev))

    first_bad = log.verify("decisions").first_bad
    assert first_bad is not None
    assert first_bad.reason == "anchor_mismatch"


def test_an_inserted_record_is_named(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    fake = _edit(old[20], decision_id="dec_fake")
    ids = rewrite(r, _stream(log), [*old[:20], fake, *old[20:]])

    result = log.verify("decisions")

    assert result.first_bad == BadRecord(ids[20], 21, "inserted_or_deleted")
    assert "inserted" in result.detail


def test_a_replayed_copy_of_a_genuine_record_is_named(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    ids = rewrite(r, _stream(log), [*old[:30], old[5], *old[30:]])

    assert log.verify("decisions").first_bad == BadRecord(ids[30], 6, "inserted_or_deleted")


def test_a_reordered_pair_is_named(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    ids = rewrite(r, _stream(log), [*old[:12], old[13], old[12], *old[14:]])

    result = log.verify("decisions")

    assert result.first_bad == BadRecord(ids[12], 14, "reordered")
    assert "seq 13 comes after seq 14" in result.detail


Forge = Callable[[str, bytes], str]


def _plain_sha256(prev: str, data: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + data).hexdigest()


def _guessed_key(prev: str, data: bytes) -> str:
    guess = audit_key(b"not-the-service-secret-0123456789abcdef")
    return hmac.new(guess, bytes.fromhex(prev) + data, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("forge", [_plain_sha256, _guessed_key], ids=["sha256", "wrong-key"])
def test_a_forged_chain_without_the_key_is_caught(
    log: AuditLog, r: redis.Redis, forge: Forge
) -> None:
    # The strongest attacker without the key: edit record 25, then recompute its hash and
    # every later record's prev and hash, and the head, so the chain is consistent.
    old = _fields(r, log)
    new = old[:24]
    prev = old[23]["hash"]
    for i, fields in enumerate(old[24:], start=24):
        rec = json.loads(fields["record"])
        rec["prev"] = prev
        if i == 24:
            rec["verdict"] = "DENY"
        text = canonical_json(rec)
        prev = forge(prev, text.encode())
        new.append({"hash": prev, "record": text})
    ids = rewrite(r, _stream(log), new)
    r.set(log.keys["decisions"].head, f"{COUNT} {prev}")

    assert log.verify("decisions").first_bad == BadRecord(ids[24], 25, "edited")


def test_an_entry_that_is_not_a_record_is_malformed(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    ids = rewrite(r, _stream(log), [*old[:3], {"hello": "world"}, *old[3:]])

    assert log.verify("decisions").first_bad == BadRecord(ids[3], 4, "malformed")


def test_an_altered_head_is_named(log: AuditLog, r: redis.Redis) -> None:
    r.set(log.keys["decisions"].head, f"{COUNT} {'f' * 64}")
    last = entries(r, _stream(log))[-1][0]

    assert log.verify("decisions").first_bad == BadRecord(last, COUNT, "head_mismatch")


def test_an_emptied_stream_is_named(log: AuditLog, r: redis.Redis) -> None:
    r.delete(_stream(log))

    assert log.verify("decisions").first_bad == BadRecord("", COUNT, "head_mismatch")


def test_a_wiped_log_restarted_by_the_writer_keeps_failing_verify(
    make_log: MakeLog, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(max_records=10)
    write(log, COUNT)
    assert log.enforce_retention("decisions") == COUNT - 10
    # Stream and head deleted, the anchor left: the writer starts a new chain but keeps the
    # old anchor, so the wipe stays visible to verify.
    r.delete(_stream(log), log.keys["decisions"].head)
    write(make_log(), 3, start=100)

    assert log.verify("decisions").first_bad == BadRecord(
        entries(r, _stream(log))[0][0], 1, "anchor_mismatch"
    )
    assert "anchor remained" in caplog.text


def test_a_wipe_before_any_trim_is_logged_by_the_writer(
    log: AuditLog, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Never trimmed, the anchor is the genesis one, which a fresh chain has too: verify
    # cannot tell, but the writer sees the anchor outlive its stream and says so.
    r.delete(_stream(log), log.keys["decisions"].head)
    log._heads.clear()
    write(log, 3, start=100)

    assert log.verify("decisions").ok
    assert "anchor remained" in caplog.text


def test_planted_bytes_that_are_not_utf8_do_not_crash_verify(
    log: AuditLog, r: redis.Redis, redis_url: str
) -> None:
    last_id, last = entries(r, _stream(log))[-1]
    r.xdel(_stream(log), last_id)
    # The last record again, with bytes that are not UTF-8, written by a bytes client.
    planted = last["record"].encode().replace(b"ALLOW", b"\xff\xfe")
    binary = redis.Redis.from_url(redis_url)
    new_id = binary.xadd(_stream(log), {b"hash": last["hash"].encode(), b"record": planted})
    binary.close()

    result = log.verify("decisions")

    assert result.first_bad == BadRecord(new_id.decode(), COUNT, "edited")  # type: ignore[union-attr]


def test_a_lone_surrogate_is_an_edit_and_exports_as_ascii(log: AuditLog, r: redis.Redis) -> None:
    old = _fields(r, log)
    planted = old[10]["record"].replace('"ALLOW"', '"\\ud800"')
    ids = rewrite(
        r, _stream(log), [*old[:10], {"hash": old[10]["hash"], "record": planted}, *old[11:]]
    )

    assert log.verify("decisions").first_bad == BadRecord(ids[10], 11, "edited")
    out = io.StringIO()
    assert log.export("decisions", None, None, out) == COUNT
    line = out.getvalue().splitlines()[10]
    assert "\\ud800" in line
    line.encode("utf-8")
