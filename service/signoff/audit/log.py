"""Audit writer: submit() only queues; records still queued when the process dies are lost."""

from __future__ import annotations

import collections
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.approvals.store import DEFAULT_PREFIX
from signoff.audit.chain import (
    ENCODER,
    GENESIS,
    RESERVED,
    SLOT,
    STREAMS,
    Canonical,
    Hasher,
    StreamKeys,
    canonical_json,
    parse_head,
    rfc3339_ms,
)
from signoff.audit.record import DecisionRecord
from signoff.audit.verify import VerifyResult, hash_ok, parse_entry
from signoff.audit.verify import export as export_stream
from signoff.audit.verify import verify as verify_stream
from signoff.engine.model import Decision
from signoff.errors import AuditUnavailable

log = logging.getLogger("signoff.audit")

# KEYS: head, stream, anchor, ack stream (the stream again when nothing is acknowledged).
# ARGV: expected head ('' for an empty log), new head, genesis anchor, ack group ('' for
# none), m, m ack ids, then the entries as one argument: hash NL record NL hash NL record ...
# (canonical JSON escapes every control character, so a record holds no newline). One
# argument instead of two per entry: packing hundreds of arguments costs the writer more
# than encoding the records.
# Returns {'ok', derived, anchor_kept, count} or {'stale', current head, derived} or
# {'broken'}. `derived` says the head key was missing or malformed and the head was read from
# the last record instead (which is all the key could have said); the caller logs it.
_APPEND = """
local head = redis.call('GET', KEYS[1])
local derived = 0
if not head or not string.match(head, '^%d+ %x+$') then
  head = ''
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local fields, rec, hash = last[1][2], nil, nil
    for i = 1, #fields, 2 do
      if fields[i] == 'record' then rec = fields[i + 1] end
      if fields[i] == 'hash' then hash = fields[i + 1] end
    end
    local ok, doc = pcall(cjson.decode, rec or '')
    if not ok or type(doc) ~= 'table' or type(doc.seq) ~= 'number' or not hash then
      return {'broken'}
    end
    head = string.format('%d', doc.seq) .. ' ' .. hash
    derived = 1
  end
end
if head ~= ARGV[1] then return {'stale', head, derived} end
local anchor_kept = 0
if head == '' then
  -- A fresh log. An anchor left behind means the records were wiped, not never written:
  -- it is kept, so verify goes on reporting that until someone looks.
  if not redis.call('SET', KEYS[3], ARGV[3], 'NX') then anchor_kept = 1 end
end
local m = tonumber(ARGV[5])
local count = 0
local blob = ARGV[6 + m]
local pos, size = 1, #blob
while pos <= size do
  local a = string.find(blob, '\\n', pos, true)
  local b = string.find(blob, '\\n', a + 1, true) or (size + 1)
  redis.call('XADD', KEYS[2], '*', 'hash', string.sub(blob, pos, a - 1),
    'record', string.sub(blob, a + 1, b - 1))
  count = count + 1
  pos = b + 1
end
redis.call('SET', KEYS[1], ARGV[2])
-- Acknowledged in the same step as the append: a crash leaves both done or neither.
if ARGV[4] ~= '' and m > 0 then
  redis.call('XACK', KEYS[4], ARGV[4], unpack(ARGV, 6, 5 + m))
end
return {'ok', derived, anchor_kept, count}
"""

# KEYS: anchor, stream. ARGV: anchor read before the walk, first entry id to keep, new anchor,
# how many entries the walk verified before it.
_TRIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'stale'} end
local n = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
-- A different count means the stream changed after the walk: leave the anchor alone, so
-- verify reports it.
if n ~= tonumber(ARGV[4]) then return {'mismatch', n} end
redis.call('SET', KEYS[1], ARGV[3])
return {'ok', n}
"""


@dataclass(frozen=True)
class AuditConfig:
    """Tuning of the audit log; the defaults suit a service doing thousands of decisions/s."""

    # Retention per stream: the newest `max_records`, and/or none older than `max_age`.
    max_records: int | None = 1_000_000
    max_age: dt.timedelta | None = None
    # A batch is written when it holds `batch_max` records or `batch_ms` after the first was
    # queued; `batch_ms` bounds what a crash can lose.
    batch_max: int = 256
    batch_ms: float = 20.0
    queue_max: int = 20_000
    # How long submit() waits for room in a full queue while the writer is keeping up;
    # while Redis is failing it does not wait at all.
    submit_wait: float = 0.002
    timeout: float = 2.0
    retry_max: float = 2.0
    trim_every: float = 5.0
    trim_max: int = 5_000
    # How often the heads are logged: a copy outside Redis that exposes a rewritten tail.
    checkpoint_every: float = 300.0

    def __post_init__(self) -> None:
        if self.max_records is not None and self.max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self.max_age is not None and self.max_age <= dt.timedelta(0):
            raise ValueError("max_age must be positive")
        if self.batch_max < 1 or self.queue_max < 1 or self.trim_max < 1:
            raise ValueError("batch_max, queue_max and trim_max must be at least 1")
        if self.batch_ms <= 0 or self.timeout <= 0 or self.retry_max <= 0:
            raise ValueError("batch_ms, timeout and retry_max must be positive")
        if self.submit_wait < 0 or self.trim_every <= 0 or self.checkpoint_every <= 0:
            raise ValueError("submit_wait must not be negative; trim and checkpoint periods > 0")


@dataclass(frozen=True)
class Ack:
    """Stream entries to acknowledge in the same atomic step as an append."""

    stream: str
    group: str
    ids: Sequence[str]


@dataclass
class _Stats:
    written: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    noted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    failures: int = 0
    trimmed: int = 0


# What DecisionRecord.of takes: the decision path hands over only what it already holds, and
# the writer thread makes the record (or, for a repeat, only splices its ids into a template).
DecisionArgs = tuple[str, Decision, Decision, str, str, str, "Mapping[str, Any] | Canonical"]


class _Decided(tuple):  # type: ignore[type-arg]
    """DecisionArgs on the queue, told apart from any other record by its type."""

    __slots__ = ()


# Stream name, submit time (ns), record: a decision record stays unencoded until the writer
# thread encodes it, which keeps that work off the decision path.
_Item = tuple[str, int, dict[str, Any] | DecisionRecord | _Decided]


class AuditLog:
    """Appends records to the tamper-evident audit streams `<prefix>audit:{decisions,approvals}`.

    `submit()` is the decision path: it copies the record into a bounded in-memory queue and
    returns (about a microsecond). A writer thread hashes queued records into the chain and
    appends each batch with one Lua script call. The cost of that: records still queued when
    the process dies (at most `batch_ms` of them, more while Redis is unreachable) are lost,
    and when the queue is full records are dropped and counted, never the decision failed.
    Drops are written into the chain as `audit.dropped` records once Redis is back, so a gap
    is itself on the record.

    Every record gets `seq` (1, 2, ... per stream), `prev` (the previous record's hash),
    `hash` = HMAC-SHA256(key, prev || canonical_json(record without hash)), and `at` (RFC 3339
    UTC, ms: the submit time unless the record brings its own). The head key holds `seq hash`
    of the last record; the anchor key holds `seq prev seal` of the first retained one, sealed
    with the key so retention trimming is the only way it moves.
    """

    def __init__(
        self,
        redis_url: str,
        key: bytes,
        *,
        prefix: str = DEFAULT_PREFIX,
        config: AuditConfig | None = None,
        client: redis.Redis | None = None,
        start: bool = True,
    ) -> None:
        self.config = config or AuditConfig()
        self.prefix = prefix
        self._hasher = Hasher(key)
        self._owns_client = client is None
        # Fail fast: the writer retries with backoff itself, and the auditor's caller retries.
        self.redis: redis.Redis = client or redis.Redis.from_url(
            redis_url,
            socket_timeout=self.config.timeout,
            socket_connect_timeout=self.config.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=5,
            decode_responses=True,
            # Bytes that are not UTF-8 (planted by hand) must read as a bad record, not crash.
            encoding_errors="replace",
        )
        self._templates = _Templates()
        self._append_script = self.redis.register_script(_APPEND)
        self._trim_script = self.redis.register_script(_TRIM)
        self.keys = {name: StreamKeys.of(prefix, name) for name in STREAMS}
        self._heads: dict[str, tuple[int, str] | None] = {}
        self._queue: collections.deque[_Item] = collections.deque()
        self._pending: dict[str, list[_Item]] = {name: [] for name in STREAMS}
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._healthy = True
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_trim = 0.0
        self._next_checkpoint = time.monotonic() + self.config.checkpoint_every
        self._checkpointed: dict[str, tuple[int, str] | None] = {}
        self._warned: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        if start:
            self._thread.start()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- decision path ----------------------------------------------------------------

    def submit(self, record: Mapping[str, Any] | DecisionRecord, stream: str | None = None) -> bool:
        """Queue `record` for the audit log; False when it was dropped (the queue is full).

        A DecisionRecord goes to `decisions`. Otherwise `stream` defaults to `approvals` for
        types starting with `approval.`, else `decisions`, and the record is copied (one level
        deep): nested values must not be changed afterwards. Raises ValueError only for a
        record no writer could take (no string `type`, or a reserved key: seq, prev, hash,
        entry_id, stream).
        """
        body: dict[str, Any] | DecisionRecord
        if isinstance(record, DecisionRecord):
            # Immutable, and its shape is fixed: nothing to check or copy on the decision path.
            body, stream = record, "decisions"
        else:
            kind = record.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError("an audit record needs a non-empty string 'type'")
            if stream is None:
                stream = "approvals" if kind.startswith("approval.") else "decisions"
            elif stream not in STREAMS:
                raise ValueError(f"unknown audit stream {stream!r}")
            if not RESERVED.isdisjoint(record):
                raise ValueError(f"audit records must not set {sorted(RESERVED & set(record))}")
            body = dict(record)
        if self._closed:
            with self._lock:
                self._stats.dropped[stream] += 1
            return False
        item = (stream, time.time_ns(), body)
        queue = self._queue
        # deque.append is atomic; the bound is checked without a lock, so it can be exceeded
        # by at most one record per submitting thread.
        if len(queue) >= self.config.queue_max and not self._wait_for_room():
            with self._lock:
                self._stats.dropped[stream] += 1
            return False
        queue.append(item)
        return True

    def submit_decision(
        self,
        decision_id: str,
        decision: Decision,
        policy: Decision,
        approval_id: str,
        trace_id: str,
        caller: str,
        request: Mapping[str, Any] | Canonical,
    ) -> bool:
        """Queue the record `DecisionRecord.of` makes of these, as submit() does: the record
        is made on the writer thread. The values must not change afterwards."""
        if self._closed:
            with self._lock:
                self._stats.dropped["decisions"] += 1
            return False
        args = _Decided((decision_id, decision, policy, approval_id, trace_id, caller, request))
        queue = self._queue
        if len(queue) >= self.config.queue_max and not self._wait_for_room():
            with self._lock:
                self._stats.dropped["decisions"] += 1
            return False
        queue.append(("decisions", time.time_ns(), args))
        return True

    def _wait_for_room(self) -> bool:
        if self._closed or not self._healthy or self.config.submit_wait <= 0:
            return False
        self._wake.set()
        deadline = time.monotonic() + self.config.submit_wait
        while len(self._queue) >= self.config.queue_max:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0002)
        return True

    # --- synchronous path (the approval event auditor) --------------------------------

    def append(
        self, stream: str, records: Sequence[Mapping[str, Any]], *, ack: Ack | None = None
    ) -> int:
        """Append `records` now, in one atomic step with acknowledging `ack`; how many.

        Raises AuditUnavailable when Redis cannot be reached or the chain cannot be extended.
        """
        if stream not in STREAMS:
            raise ValueError(f"unknown audit stream {stream!r}")
        now = time.time_ns()
        items: list[_Item] = []
        for record in records:
            if not RESERVED.isdisjoint(record):
                raise ValueError(f"audit records must not set {sorted(RESERVED & set(record))}")
            items.append((stream, now, dict(record)))
        try:
            count = self._append(stream, items, ack)
        except redis.RedisError as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from None
        with self._lock:
            self._stats.written += count
        return count

    # --- writing ----------------------------------------------------------------------

    @staticmethod
    def _body(item: _Item) -> dict[str, Any]:
        _name, ns, record = item
        if isinstance(record, _Decided):
            body = DecisionRecord.of(*record).doc()
        else:
            body = record.doc() if isinstance(record, DecisionRecord) else dict(record)
        if "at" not in body:
            body["at"] = rfc3339_ms(ns)
        return body

    @staticmethod
    def _placeholder(body: dict[str, Any], exc: Exception) -> dict[str, Any]:
        # Written in its place, so the chain shows something was submitted here.
        log.error(
            "audit record of type %r is not JSON (%s); writing a placeholder",
            str(body.get("type"))[:80],
            type(exc).__name__,
        )
        return {
            "type": "audit.unserializable",
            "at": body["at"] if isinstance(body.get("at"), str) else rfc3339_ms(time.time_ns()),
            "original_type": str(body.get("type"))[:200],
            "error": type(exc).__name__,
        }

    def _current_head(self, keys: StreamKeys) -> tuple[int, str] | None:
        if keys.name not in self._heads:
            self._heads[keys.name] = parse_head(_text(self.redis.get(keys.head)))
        return self._heads[keys.name]

    def _append(self, name: str, items: Sequence[_Item], ack: Ack | None) -> int:
        keys = self.keys[name]
        # A body is built only for a record no template encodes (see _Templates).
        bodies: list[dict[str, Any] | None] = [None] * len(items)
        stamps = [rfc3339_ms(item[1]) for item in items]
        ack_args: list[str] = [ack.group, str(len(ack.ids)), *ack.ids] if ack else ["", "0"]
        genesis = self._hasher.anchor(name, 1, GENESIS)
        for attempt in range(1000):
            head = self._current_head(keys)
            seq, prev = head if head else (0, GENESIS)
            entries: list[bytes] = []
            # Hand the GIL to decision threads every few records: a batch hashed in one go
            # holds it for milliseconds, which shows in their tail latency. Not when the queue
            # is filling up, though: in a CPU-bound process yielding starves the writer.
            polite = len(self._queue) < self.config.queue_max // 4
            for index, item in enumerate(items):
                seq += 1
                record = item[2]
                text = (
                    self._templates.encode(record, stamps[index], seq, prev)
                    if isinstance(record, _Decided)
                    else None
                )
                if text is not None:
                    data = text.encode("utf-8")
                else:
                    body = bodies[index]
                    if body is None:
                        body = bodies[index] = self._body(item)
                    body["seq"], body["prev"] = seq, prev
                    try:
                        data = canonical_json(body).encode("utf-8")
                    except (TypeError, ValueError) as exc:
                        body = bodies[index] = self._placeholder(body, exc)
                        body["seq"], body["prev"] = seq, prev
                        data = canonical_json(body).encode("utf-8")
                prev = self._hasher.record(prev, data)
                entries += [prev.encode("ascii"), data]
                # Every 64: a templated record takes a few µs, and each yield ~20 µs of CPU.
                if polite and index % 64 == 63:
                    time.sleep(0)
            expected = f"{head[0]} {head[1]}" if head else ""
            reply: Any = self._append_script(
                keys=[keys.head, keys.stream, keys.anchor, ack.stream if ack else keys.stream],
                args=[expected, f"{seq} {prev}", genesis, *ack_args, b"\n".join(entries)],
            )
            status = reply[0]
            if status == "ok":
                self._heads[name] = (seq, prev)
                if int(reply[1]):
                    self._warn(name, "head", "the head key was missing or altered; restored it")
                if int(reply[2]):
                    log.error(
                        "audit stream %s was empty but its anchor remained: its records were "
                        "deleted; a new chain was started and verify reports the old anchor",
                        name,
                    )
                return int(reply[3])
            if status == "broken":
                raise AuditUnavailable(
                    f"audit stream {name} cannot be extended: its head key is missing and its "
                    "last record is malformed; run `signoff audit verify`"
                )
            current = parse_head(str(reply[1]))
            if current == (seq, prev):
                # An earlier try of this very batch reached Redis but its reply was lost (the
                # head hashes the batch and its position): it is in, do not write it twice.
                self._heads[name] = current
                return len(items)
            if head and (current is None or current[0] < head[0]):
                log.error(
                    "audit stream %s went back from seq %d to %s: records were deleted, the "
                    "head was rewritten, or Redis lost data; run `signoff audit verify`",
                    name,
                    head[0],
                    current[0] if current else 0,
                )
            self._heads[name] = current
            if attempt >= 3:
                # Many writers racing for one head: spread them out instead of livelocking.
                time.sleep(random.uniform(0, 0.002 * min(attempt, 50)))  # noqa: S311
        raise AuditUnavailable(f"audit stream {name}: lost the race for its head 1000 times")

    def _run(self) -> None:
        cfg = self.config
        delay = 0.05
        while True:
            stopping = self._stop.is_set()
            try:
                self._write_pending()
                self._housekeeping()
                if not self._healthy:
                    log.info("audit log reachable again; writing queued records")
                self._healthy = True
                delay = 0.05
            except Exception as exc:
                # Redis errors are expected (outages); anything else is a bug, but the writer
                # must outlive it: the decision path depends on the queue being drained.
                if self._healthy:
                    log.warning(
                        "audit log write failed (%s); records stay queued and are retried",
                        type(exc).__name__,
                        exc_info=not isinstance(exc, redis.RedisError | AuditUnavailable),
                    )
                with self._lock:
                    self._stats.failures += 1
                self._healthy = False
                if stopping:
                    return
                self._stop.wait(delay)
                delay = min(cfg.retry_max, delay * 2)
                continue
            if stopping and not self._queue:
                return
            queue = self._queue
            if not queue:
                self._wake.wait(cfg.batch_ms / 1000)
                self._wake.clear()
            elif len(queue) < cfg.batch_max and not stopping:
                # A batch is written when full or `batch_ms` after its first record was
                # queued: one append per batch instead of one per handful of records, which
                # under load is most of the writer's cost. flush() wakes it at once.
                try:
                    first = queue[0][1]
                except IndexError:
                    continue
                left = cfg.batch_ms / 1000 - (time.time_ns() - first) / 1e9
                if left > 0 and self._wake.wait(left):
                    self._wake.clear()

    def _take(self) -> int:
        """Move up to `batch_max` queued records into the per-stream pending batches."""
        taken = 0
        while taken < self.config.batch_max:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            self._pending[item[0]].append(item)
            taken += 1
        return taken

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                self._busy = True
                # A batch being retried is never grown: if its last try did reach Redis, the
                # retry recognises it by the head it would produce (and does not write twice).
                if not any(self._pending.values()):
                    self._take()
            try:
                if not any(self._pending.values()):
                    return
                for name, items in self._pending.items():
                    if items:
                        count = self._append(name, items, None)
                        items.clear()
                        with self._lock:
                            self._stats.written += count
                # Straight on only with a full batch: a partial one waits in _run for its
                # time, so batches are not one append per handful of records (flush() and
                # close() wake the writer, which then writes at once).
                waiting = len(self._queue)
                if waiting < self.config.batch_max and not (
                    self._wake.is_set() or self._stop.is_set()
                ):
                    return
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()

    def _housekeeping(self) -> None:
        self._note_drops()
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + self.config.trim_every
            for name in STREAMS:
                self.enforce_retention(name)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.config.checkpoint_every
            self._checkpoint()

    def _note_drops(self) -> None:
        with self._lock:
            fresh = {
                name: self._stats.dropped[name] - self._stats.noted[name]
                for name in STREAMS
                if self._stats.dropped[name] > self._stats.noted[name]
            }
        for name, count in fresh.items():
            log.warning("audit queue was full: %d %s record(s) dropped", count, name)
            record = {"type": "audit.dropped", "count": count}
            self._append(name, [(name, time.time_ns(), record)], None)
            with self._lock:
                self._stats.noted[name] += count
                self._stats.written += 1

    def _checkpoint(self) -> None:
        for name in STREAMS:
            head = self._heads.get(name)
            if head and head != self._checkpointed.get(name):
                log.info("audit checkpoint %s seq=%d hash=%s", name, head[0], head[1])
                self._checkpointed[name] = head

    def _warn(self, name: str, what: str, message: str, every: float = 60.0) -> None:
        now = time.monotonic()
        if now >= self._warned.get(f"{name}:{what}", 0.0):
            self._warned[f"{name}:{what}"] = now + every
            log.error("audit stream %s: %s", name, message)

    # --- retention --------------------------------------------------------------------

    def enforce_retention(self, stream: str) -> int:
        """Trim `stream` to the configured retention; returns how many records were removed.

        Only records that verify are trimmed, and the anchor moves in the same atomic step,
        sealed: deleting records at the start by hand still shows as `anchor_mismatch`.
        A chain that does not verify is never trimmed (that would destroy the evidence).
        """
        cfg = self.config
        if cfg.max_records is None and cfg.max_age is None:
            return 0
        keys = self.keys[stream]
        length = int(self.redis.xlen(keys.stream))
        if length <= 1:
            return 0
        excess = length - cfg.max_records if cfg.max_records is not None else 0
        # Trimming in steps of 1% keeps the per-append cost of retention near zero.
        step = max(1, cfg.max_records // 100) if cfg.max_records is not None else 1
        want = excess if excess >= step else 0
        cutoff = None
        if cfg.max_age is not None:
            cutoff = time.time_ns() // 1_000_000 - int(cfg.max_age.total_seconds() * 1000)
        first: Any = self.redis.xrange(keys.stream, "-", "+", count=1)
        old = cutoff is not None and first and _entry_ms(first[0][0]) < cutoff
        if not want and not old:
            return 0
        anchor_raw = _text(self.redis.get(keys.anchor))
        anchor = self._hasher.open_anchor(stream, anchor_raw)
        if anchor is None or anchor_raw is None:
            self._warn(stream, "anchor", "anchor missing or altered; not trimming (run verify)")
            return 0
        limit = min(length - 1, cfg.trim_max)
        expected, trimmed, start = anchor, 0, "-"
        while True:
            got: Any = self.redis.xrange(keys.stream, start, "+", count=500)
            for index, (entry_id, fields) in enumerate(got):
                if index % 8 == 7:
                    time.sleep(0)  # checking thousands of records: let decision threads in
                entry = parse_entry(entry_id, fields)
                if (
                    entry is None
                    or (entry.seq, entry.prev) != expected
                    or not hash_ok(self._hasher, entry)
                ):
                    self._warn(stream, "trim", f"chain broken at {entry_id}; not trimming")
                    return 0
                aged = cutoff is not None and _entry_ms(entry_id) < cutoff
                if trimmed < limit and (trimmed < want or aged):
                    trimmed += 1
                    expected = (entry.seq + 1, entry.hash)
                    continue
                if trimmed == 0:
                    return 0
                reply: Any = self._trim_script(
                    keys=[keys.anchor, keys.stream],
                    args=[anchor_raw, entry_id, self._hasher.anchor(stream, *expected), trimmed],
                )
                if reply[0] == "mismatch":
                    self._warn(stream, "trim", "stream changed while trimming; anchor kept")
                if reply[0] != "ok":
                    return 0
                with self._lock:
                    self._stats.trimmed += trimmed
                return trimmed
            if not got:
                return 0
            start = f"({got[-1][0]}"

    # --- reading ----------------------------------------------------------------------

    def verify(self, stream: str) -> VerifyResult:
        return verify_stream(self.redis, self._hasher, self.keys[stream])

    def export(
        self,
        stream: str,
        since: dt.datetime | None,
        until: dt.datetime | None,
        out: TextIO,
    ) -> int:
        return export_stream(self.redis, self.keys[stream], out, since=since, until=until)

    def stats(self) -> dict[str, Any]:
        """Counters: queued, written, dropped (per stream), write failures, trimmed."""
        with self._lock:
            return {
                "queued": len(self._queue) + sum(len(p) for p in self._pending.values()),
                "written": self._stats.written,
                "dropped": dict(self._stats.dropped),
                "failures": self._stats.failures,
                "trimmed": self._stats.trimmed,
            }

    # --- lifecycle --------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far is appended, and the note of any records
        dropped meanwhile; False if `timeout` passed."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._busy or any(self._pending.values()) or self._unnoted():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.01))
        return True

    def _unnoted(self) -> bool:
        stats = self._stats
        return any(stats.dropped[name] > stats.noted[name] for name in STREAMS)

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to `timeout`), stop the writer, and close the connection."""
        if self._thread.is_alive():
            flushed = self.flush(timeout)
            self._closed = True
            self._stop.set()
            self._wake.set()
            self._thread.join(max(0.1, timeout))
            if not flushed:
                lost = self.stats()["queued"]
                log.error("audit log closed with %d record(s) not written", lost)
        self._closed = True
        if self._owns_client:
            self.redis.close()


class _Templates:
    """Canonical JSON of decision records whose decision and request view repeat.

    A repeated request's record differs from the previous one only in its per-call fields
    (ids, time, place in the chain): from its second sighting on, its canonical JSON is kept
    with those fields cut out, and each record is that text with its own values spliced in,
    byte for byte what canonical_json of its whole document gives. Writer thread only;
    bounded (emptied when full).
    """

    PER_CALL = ("approval_id", "at", "caller", "decision_id", "prev", "seq", "trace_id")
    _MAX = 1024

    def __init__(self) -> None:
        # Keyed by the identities of the decisions and the request view; the value holds the
        # arguments first seen, so those objects live, and their ids are not reused, while
        # it is kept. Decisions are frozen and a view is a str: the same objects, the same text.
        self._made: dict[tuple[int, int, int, bool], tuple[Any, str, bool] | None] = {}
        self._slots = {name: SLOT.format(f"field-{name}") for name in self.PER_CALL}

    def encode(self, args: DecisionArgs, at: str, seq: int, prev: str) -> str | None:
        """The canonical JSON of the record of `args` with `at`, `seq` and `prev`; None when
        it has no template (yet): the caller then encodes its document."""
        decision_id, decision, policy, approval_id, trace_id, caller, view = args
        if type(view) is not Canonical:
            return None
        key = (id(decision), id(policy), id(view), bool(caller))
        if key not in self._made:  # first sighting: remembered, encoded the plain way
            if len(self._made) >= self._MAX:
                self._made.clear()
            self._made[key] = None
            return None
        made = self._made[key]
        if made is None:
            made = self._made[key] = self._make(args)
        _witness, text, with_caller = made
        # The fields in canonical (sorted) order; `at`, `prev` and `seq` are the writer's own
        # plain text and number.
        if with_caller:
            return text.format(
                _encode_scalar(approval_id),
                at,
                _encode_scalar(caller),
                _encode_scalar(decision_id),
                prev,
                seq,
                _encode_scalar(trace_id),
            )
        return text.format(
            _encode_scalar(approval_id),
            at,
            _encode_scalar(decision_id),
            prev,
            seq,
            _encode_scalar(trace_id),
        )

    def _make(self, args: DecisionArgs) -> tuple[DecisionArgs, str, bool]:
        """The record's canonical JSON as a str.format template, its fields in PER_CALL order
        (`at` and `prev` with their quotes around the placeholder)."""
        _witness, parts, names = self._split(args)
        expected = [n for n in self.PER_CALL if n in names]
        if names != expected:  # canonical JSON sorts keys: never, unless that changes
            raise AssertionError(f"audit record fields out of order: {names}")
        out = [_braces(parts[0])]
        for name, part in zip(names, parts[1:], strict=True):
            out.append('"{}"' if name in ("at", "prev") else "{}")
            out.append(_braces(part))
        return args, "".join(out), "caller" in names

    def _split(self, args: DecisionArgs) -> tuple[DecisionArgs, list[str], list[str]]:
        doc = DecisionRecord.of(*args).doc()
        for name in self.PER_CALL:
            if name in doc or name in ("at", "prev", "seq"):
                doc[name] = self._slots[name]
        text = canonical_json(doc)
        # Canonical text holds a NUL only escaped: the slots cannot be confused with data.
        marks = {ENCODER.encode(slot): name for name, slot in self._slots.items()}
        parts: list[str] = []
        names: list[str] = []
        rest = text
        while True:
            found = [(rest.find(mark), mark) for mark in marks if mark in rest]
            if not found:
                break
            where, mark = min(found)
            parts.append(rest[:where])
            names.append(marks[mark])
            rest = rest[where + len(mark) :]
        parts.append(rest)
        return args, parts, names


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _encode_scalar(value: str | int) -> str:
    """ENCODER.encode(value) for a str or int, quicker for the plain text ids are made of."""
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        return f'"{value}"'
    return ENCODER.encode(value)


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
