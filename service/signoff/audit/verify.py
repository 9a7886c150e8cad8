"""Walking an audit stream: verifying its hash chain, and exporting it as JSON lines."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

import redis

from signoff.audit.chain import (
    Hasher,
    StreamKeys,
    canonical_json,
    is_hash,
    no_constants,
    parse_head,
)

CHUNK = 1000
# How far past a misplaced record verify looks for the one that belongs there.
LOOKAHEAD = 16
REASONS = (
    "edited",
    "inserted_or_deleted",
    "reordered",
    "head_mismatch",
    "anchor_mismatch",
    "malformed",
)

RawEntry = tuple[str, Mapping[str, str]]


class BadRecord(NamedTuple):
    """The first record that breaks the chain: its stream entry id, its seq, and why.

    For `head_mismatch` after deleted tail records the entry is gone: `entry_id` is empty and
    `seq` is the first missing one.
    """

    entry_id: str
    seq: int
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: `checked` records form an intact chain up to `first_bad`, if any."""

    stream: str
    ok: bool
    checked: int
    first_bad: BadRecord | None = None
    detail: str = ""
    # The last record's (seq, hash): compared with a copy kept outside Redis (a SIEM, a log
    # line), it also exposes a tail truncated together with a rewritten head key.
    head: tuple[int, str] | None = None


@dataclass(frozen=True)
class Entry:
    """One parsed stream entry; `record` is the stored record without its hash."""

    entry_id: str
    seq: int
    prev: str
    hash: str
    record: dict[str, Any]


def parse_entry(entry_id: str, fields: Mapping[str, str] | None) -> Entry | None:
    """The entry as a chain record, or None when it lacks the fields or types one must have."""
    if not fields:
        return None
    text, digest = fields.get("record"), fields.get("hash")
    if text is None or not is_hash(digest):
        return None
    try:
        doc = json.loads(text, parse_constant=no_constants)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    seq, prev = doc.get("seq"), doc.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not is_hash(prev):
        return None
    assert isinstance(digest, str)  # for mypy: is_hash checked it
    assert isinstance(prev, str)
    return Entry(entry_id, seq, prev, digest, doc)


def hash_ok(hasher: Hasher, entry: Entry) -> bool:
    try:
        data = canonical_json(entry.record).encode("utf-8")
    except ValueError:  # e.g. a lone surrogate escaped into the JSON: never written by us
        return False
    return hmac.compare_digest(hasher.record(entry.prev, data), entry.hash)


class _Reader:
    """Entries of one stream in order, fetched in chunks, with a look at the ones ahead."""

    def __init__(self, r: redis.Redis, stream: str, first: list[RawEntry], chunk: int) -> None:
        self.r, self.stream, self.chunk = r, stream, chunk
        self.buffer: deque[RawEntry] = deque(first)
        self.last_id = first[-1][0] if first else ""
        self.drained = len(first) < chunk

    def extend(self, entries: list[RawEntry]) -> None:
        self.buffer.extend(entries)
        if entries:
            self.last_id = entries[-1][0]

    def _fetch(self) -> None:
        if self.drained or not self.last_id:
            self.drained = True
            return
        got: Any = self.r.xrange(self.stream, min=f"({self.last_id}", max="+", count=self.chunk)
        self.drained = len(got) < self.chunk
        self.extend(got)

    def next(self) -> RawEntry | None:
        if not self.buffer:
            self._fetch()
        return self.buffer.popleft() if self.buffer else None

    def peek(self, n: int) -> list[RawEntry]:
        while len(self.buffer) < n and not self.drained:
            self._fetch()
        return list(self.buffer)[:n]


def verify(r: redis.Redis, hasher: Hasher, keys: StreamKeys, *, chunk: int = CHUNK) -> VerifyResult:
    """Walk one stream and check its chain, its anchor (start) and its head (end).

    Safe on a live log: records appended while it runs are checked too, and a walk that
    retention trimming overtook is started again from the new anchor.
    """
    result = _verify_once(r, hasher, keys, chunk)
    for _ in range(3):
        if result[0].ok or r.get(keys.anchor) == result[1]:
            break
        result = _verify_once(r, hasher, keys, chunk)
    return result[0]


def _verify_once(
    r: redis.Redis, hasher: Hasher, keys: StreamKeys, chunk: int
) -> tuple[VerifyResult, str | None]:
    name = keys.name
    # One transaction, so a trim between reading the anchor and the first records cannot look
    # like records deleted from the start.
    pipe = r.pipeline(transaction=True)
    pipe.get(keys.anchor)
    pipe.get(keys.head)
    pipe.xrange(keys.stream, "-", "+", count=chunk)
    anchor_raw, head_raw, first = pipe.execute()
    anchor = hasher.open_anchor(name, anchor_raw)

    def bad(entry_id: str, seq: int, reason: str, detail: str, checked: int) -> VerifyResult:
        return VerifyResult(name, False, checked, BadRecord(entry_id, seq, reason), detail)

    if not first:
        if head_raw is None and anchor_raw is None:
            return VerifyResult(name, True, 0), anchor_raw
        if head_raw is not None:
            head = parse_head(head_raw)
            return bad(
                "",
                head[0] if head else 0,
                "head_mismatch",
                "the stream is empty but its head names a record: every record was deleted",
                0,
            ), anchor_raw
        return bad(
            "",
            anchor[0] if anchor else 0,
            "anchor_mismatch",
            "the stream is empty but its anchor remains: every record was deleted",
            0,
        ), anchor_raw

    reader = _Reader(r, keys.stream, first, chunk)
    expected = anchor
    last: Entry | None = None
    checked = 0
    while True:
        raw = reader.next()
        if raw is None:
            # The end, read in one transaction with the head so a concurrent append cannot
            # look like a head that runs ahead of the records.
            pipe = r.pipeline(transaction=True)
            pipe.get(keys.head)
            pipe.xrange(keys.stream, min=f"({reader.last_id}", max="+", count=chunk)
            head_raw, more = pipe.execute()
            if more:
                reader.drained = len(more) < chunk
                reader.extend(more)
                continue
            break
        entry_id, fields = raw
        want_seq = expected[0] if expected else 1
        entry = parse_entry(entry_id, fields)
        if entry is None:
            return bad(entry_id, want_seq, "malformed", "not a chain record", checked), anchor_raw
        if last is None and anchor is None:
            detail = (
                "the anchor is missing"
                if anchor_raw is None
                else "the anchor's seal does not verify: it was altered"
            )
            return bad(entry_id, entry.seq, "anchor_mismatch", detail, checked), anchor_raw
        assert expected is not None
        if not hash_ok(hasher, entry):
            ahead = [parse_entry(i, f) for i, f in reader.peek(1)]
            nxt = ahead[0] if ahead else None
            if nxt and (nxt.seq, nxt.prev) == expected and hash_ok(hasher, nxt):
                return bad(
                    entry_id,
                    entry.seq,
                    "inserted_or_deleted",
                    "a record that is not part of the chain was inserted",
                    checked,
                ), anchor_raw
            return bad(
                entry_id,
                entry.seq,
                "edited",
                "its hash does not match its contents (altered, or forged without the key)",
                checked,
            ), anchor_raw
        if (entry.seq, entry.prev) != expected:
            if last is None:
                return bad(
                    entry_id,
                    entry.seq,
                    "anchor_mismatch",
                    f"the first record should be seq {expected[0]}: records were deleted "
                    "from the start",
                    checked,
                ), anchor_raw
            reason, detail = _misplaced(entry, expected, reader)
            return bad(entry_id, entry.seq, reason, detail, checked), anchor_raw
        checked += 1
        last = entry
        expected = (entry.seq + 1, entry.hash)

    assert last is not None
    head = parse_head(head_raw)
    if head != (last.seq, last.hash):
        if head is not None and head[0] > last.seq:
            detail = (
                f"the head names seq {head[0]} but the last record is seq {last.seq}: "
                "records were deleted from the end"
            )
            return bad("", last.seq + 1, "head_mismatch", detail, checked), anchor_raw
        detail = "the head key is missing" if head_raw is None else "the head key was altered"
        return bad(last.entry_id, last.seq, "head_mismatch", detail, checked), anchor_raw
    return VerifyResult(name, True, checked, head=head), anchor_raw


def _misplaced(entry: Entry, expected: tuple[int, str], reader: _Reader) -> tuple[str, str]:
    """Name why a genuine record is out of place (best effort)."""
    want = expected[0]
    if entry.seq > want:
        for i, f in reader.peek(LOOKAHEAD):
            later = parse_entry(i, f)
            if later is not None and later.seq == want:
                return "reordered", f"seq {want} comes after seq {entry.seq}"
        return "inserted_or_deleted", f"seq {want} to {entry.seq - 1} are missing"
    if entry.seq < want:
        return "inserted_or_deleted", f"seq {entry.seq} appears again after seq {want - 1}"
    return "inserted_or_deleted", "it does not link to the record before it (a forked chain)"


def _as_utc(when: dt.datetime) -> dt.datetime:
    # A time without a zone is read as UTC, the zone every record is written in.
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _record_time(record: Mapping[str, Any]) -> dt.datetime | None:
    at = record.get("at")
    if not isinstance(at, str):
        return None
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    return _as_utc(when)


def export(
    r: redis.Redis,
    keys: StreamKeys,
    out: TextIO,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    chunk: int = CHUNK,
) -> int:
    """Write the stream's records with `since <= at < until` as JSON lines; returns how many.

    Each line is the stored record plus `hash`, `entry_id` and `stream`; dropping those three
    and hashing the canonical JSON of the rest re-derives the chain outside Redis. Entries that
    are not chain records are written as `{"malformed": true, "fields": ...}` when no time
    filter is given, so an export never hides what is in the stream.
    """
    lower = _as_utc(since) if since else None
    upper = _as_utc(until) if until else None
    filtered = lower is not None or upper is not None
    start = "-"
    written = 0
    while True:
        got: Any = r.xrange(keys.stream, min=start, max="+", count=chunk)
        for entry_id, fields in got:
            entry = parse_entry(entry_id, fields)
            line: dict[str, Any]
            if entry is None:
                if filtered:
                    continue
                line = {
                    "entry_id": entry_id,
                    "stream": keys.name,
                    "malformed": True,
                    "fields": dict(fields or {}),
                }
            else:
                if filtered:
                    when = _record_time(entry.record)
                    if when is None or (lower and when < lower) or (upper and when >= upper):
                        continue
                line = {
                    **entry.record,
                    "hash": entry.hash,
                    "entry_id": entry_id,
                    "stream": keys.name,
                }
            text = json.dumps(line, sort_keys=True, ensure_ascii=False)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (only a planted record has one) cannot be written as UTF-8.
                text = json.dumps(line, sort_keys=True)
            out.write(text + "\n")
            written += 1
        if len(got) < chunk:
            return written
        start = f"({got[-1][0]}"
