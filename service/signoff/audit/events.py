"""Approval transitions into the audit log, read from `<prefix>events` in a consumer group."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.approvals.store import DEFAULT_PREFIX
from signoff.audit.chain import no_constants, normalise_time
from signoff.audit.log import Ack, AuditLog
from signoff.streamreader import Entry, StreamGroupReader, default_consumer

log = logging.getLogger("signoff.audit")
DEFAULT_GROUP = "signoff-audit"


def _summary(raw: str) -> Any:
    # Stored as structured JSON when it is some, so a SIEM can query it; otherwise as given.
    try:
        value = json.loads(raw, parse_constant=no_constants)
    except ValueError:
        return raw
    return value if isinstance(value, dict | list) else raw


def event_record(entry_id: str, fields: Mapping[str, str] | None) -> dict[str, Any]:
    """The audit record of one approval event; `source_event_id` makes duplicates detectable."""
    if not fields:
        return {
            "type": "approval.lost",
            "source_event_id": entry_id,
            "detail": "the event left the event stream before it was audited",
        }
    kind = fields.get("type", "")
    record: dict[str, Any] = {
        "type": kind if kind.startswith("approval.") else f"approval.{kind or 'unknown'}",
        "approval_id": fields.get("approval_id", ""),
        "from": fields.get("from", ""),
        "to": fields.get("to", ""),
        "actor": fields.get("actor", ""),
        "reason": fields.get("reason", ""),
        "summary": _summary(fields.get("summary", "")),
        "source_event_id": entry_id,
    }
    raw_at = fields.get("at", "")
    at = normalise_time(raw_at)
    if at is None:
        # `at` becomes the audit time; the event's own text is kept beside it.
        record["event_at"] = raw_at
    else:
        record["at"] = at
    return record


class ApprovalEventAuditor:
    """Turns each approval event into an `approval.<kind>` record on the approvals stream.

    Runs as a thread in every server process; the consumer group `signoff-audit` shares the
    events among them. Records are appended and their events acknowledged in one atomic Lua
    step, so a crash leaves an event either audited and acknowledged or neither: an event left
    pending by a dead consumer is taken over after `claim_min_idle_ms` and audited then. The
    group starts at the beginning of the event stream, so events from before the first auditor
    ran are audited too. Duplicates are still possible when a group is recreated or rewound,
    or when an append's reply is lost and a peer takes the events over; `source_event_id`
    identifies them.
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        redis_url: str | None = None,
        client: redis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        batch_size: int = 100,
        claim_min_idle_ms: int = 30_000,
        block_ms: int = 1000,
        timeout: float = 2.0,
    ) -> None:
        if client is None and redis_url is None:
            raise ValueError("give redis_url or client")
        if batch_size < 1 or claim_min_idle_ms < 0 or block_ms < 0:
            raise ValueError("batch_size >= 1, claim_min_idle_ms >= 0 and block_ms >= 0")
        self.audit = audit
        self.stream = f"{prefix}events"
        self.group = group
        self.consumer = consumer or default_consumer()
        self.batch_size = batch_size
        self.claim_min_idle_ms = claim_min_idle_ms
        self.block_ms = block_ms
        self._owns_client = client is None
        # The socket timeout must outlast a blocking read.
        self.redis: redis.Redis = client or redis.Redis.from_url(
            str(redis_url),
            socket_timeout=block_ms / 1000 + timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            encoding_errors="replace",
        )
        self._reader = StreamGroupReader(
            self.redis,
            self.stream,
            self.group,
            self.consumer,
            start="0",  # events from before the first auditor ran are audited too
            batch_size=batch_size,
            claim_min_idle_ms=claim_min_idle_ms,
            log=log,
        )
        # Entries this consumer read but did not get audited (an error in between) are read
        # again from its own pending list before anything new.
        self._own_pending = True
        self._next_claim = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream if it does not exist."""
        self._reader.ensure_group()

    def _next_entries(self, block_ms: int) -> tuple[list[Entry], list[str]]:
        if self._own_pending:
            own = self._reader.read_own_pending()
            if own:
                return own, []
            self._own_pending = False
        now = time.monotonic()
        if now >= self._next_claim:
            # Each claim is a round trip; a quarter of the idle time is often enough.
            self._next_claim = now + max(0.05, self.claim_min_idle_ms / 4000)
            claimed, lost = self._reader.claim()
            if claimed or lost:
                if claimed:
                    log.info("auditing %d event(s) another consumer left pending", len(claimed))
                return claimed, lost
        return self._reader.read_new(block_ms), []

    def run_once(self, block_ms: int = 0) -> int:
        """Audit the next batch of events (waiting up to `block_ms` for one); how many.

        Raises redis errors and AuditUnavailable; the events then stay pending and are
        audited by a later call (or a peer).
        """
        if not self._reader.group_ready:
            self._reader.ensure_group()
        try:
            entries, lost = self._next_entries(block_ms)
        except redis.ResponseError as exc:
            # Recreated at the start of the stream: re-auditing beats silently skipping.
            self._reader.recreate_missing_group(exc)
            entries, lost = self._next_entries(block_ms)
        if not entries and not lost:
            return 0
        records = [event_record(i, f) for i, f in entries]
        records += [event_record(i, None) for i in lost]
        if lost:
            log.error("%d approval event(s) were trimmed before they were audited", len(lost))
        ack = Ack(self.stream, self.group, [i for i, _ in entries])
        try:
            return self.audit.append("approvals", records, ack=ack)
        except Exception:
            self._own_pending = True
            raise

    def run_forever(self, stop: threading.Event) -> None:
        """Loop on `run_once` until `stop` is set, waiting out Redis outages with backoff."""
        delay = 0.1
        failing = False
        while not stop.is_set():
            try:
                self.run_once(self.block_ms)
            except Exception as exc:
                # Redis outages are expected; anything else is a bug, but the thread must
                # outlive it, or approval transitions would silently stop being audited.
                if not failing:
                    # The type only, as everywhere: an exception's text may quote a record.
                    log.warning("approval event auditing paused (%s); retrying", type(exc).__name__)
                failing = True
                self._reader.group_ready = False
                self._own_pending = True
                stop.wait(delay)
                delay = min(5.0, delay * 2)
                continue
            if failing:
                log.info("approval event auditing resumed")
            failing = False
            delay = 0.1

    def start(self) -> None:
        """Run `run_forever` in a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="audit-events", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        self.stop()
        if self._owns_client:
            self.redis.close()

    def __enter__(self) -> ApprovalEventAuditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
