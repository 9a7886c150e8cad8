"""Approval records in Redis; every state transition is one atomic Lua script.

Layout under a prefix (default `signoff:`):
  approval:{id}          hash: state, times, counts, `doc` (immutable JSON), `summary` (masked)
  approval:{id}:votes    hash: approver id -> vote JSON (one entry per approver)
  approval:{id}:events   stream of this approval's transitions (for WatchApproval)
  pending                zset: id -> pending expiry (ms), for listing and expiry sweeps
  grants                 zset: id -> grant expiry (ms), for expiry sweeps
  bydigest:{digest}      string: the live approval for one exact action (repeat checks reuse it)
  requester:{hash}       zset: id -> pending expiry (ms), one requester's waiting approvals (the
                         cap), under a hash of the requester's normalised identity
  events                 stream of every transition (notifiers, audit)
Keys carry TTLs covering the approval's whole life plus a retention period, so nothing
accumulates; expiry itself is decided from the stored times, never from key TTLs.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.approvals.eligibility import identity_key
from signoff.approvals.model import ApprovalRecord, ApprovalRequest, State, Vote, is_approval_id
from signoff.errors import SignoffError, StoreUnavailable

log = logging.getLogger("signoff.approvals")
DEFAULT_PREFIX = "signoff:"
DEV_SECRET_REDIS_KEY = "dev-secret"  # noqa: S105 - a key name under the prefix, not a secret
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
EVENTS_MAXLEN = 100_000
# Approvals one requester may have waiting at once: a runaway agent must not bury the
# approvers (and Redis) in requests. 0 means no limit.
DEFAULT_MAX_PENDING_PER_REQUESTER = 20


class PendingLimit(SignoffError):
    """The requester already has as many approvals waiting as it may."""

    def __init__(self, held: int, limit: int) -> None:
        super().__init__(f"{held} approvals already pending for this requester (limit {limit})")
        self.held = held
        self.limit = limit


Clock = Callable[[], int]  # milliseconds since the epoch


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


# Shared Lua: append one transition event to the global and the per-approval stream.
_EMIT = """
local function emit(prefix, id, kind, from, to, actor, at, reason, summary)
  local fields = {'type', kind, 'approval_id', id, 'from', from, 'to', to,
                  'actor', actor, 'at', at, 'reason', reason, 'summary', summary}
  redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV_MAXLEN, '*', unpack(fields))
  local own = prefix .. 'approval:' .. id .. ':events'
  redis.call('XADD', own, 'MAXLEN', '~', 64, '*', unpack(fields))
  local ttl = redis.call('PTTL', prefix .. 'approval:' .. id)
  if ttl > 0 then redis.call('PEXPIRE', own, ttl) end
end
-- No longer waiting for sign-off: out of the pending index and its requester's count.
local function unlist(prefix, id, rec)
  redis.call('ZREM', prefix .. 'pending', id)
  local mine = redis.call('HGET', rec, 'requester_key')
  if mine then redis.call('ZREM', mine, id) end
end
local function finish(prefix, id, rec, to, actor, now, at, reason)
  local from = redis.call('HGET', rec, 'state')
  redis.call('HSET', rec, 'state', to, 'final_ms', now, 'final_reason', reason)
  unlist(prefix, id, rec)
  redis.call('ZREM', prefix .. 'grants', id)
  local summary = redis.call('HGET', rec, 'summary')
  emit(prefix, id, 'approval.' .. to, from, to, actor, at, reason, summary)
end
-- Expiry is judged from stored times, so a key TTL lagging behind can never extend a window.
local function expire_if_due(prefix, id, rec, now, at)
  local state = redis.call('HGET', rec, 'state')
  if state == 'pending' and now >= tonumber(redis.call('HGET', rec, 'pending_expires_ms')) then
    finish(prefix, id, rec, 'expired', 'signoff', now, at, 'pending window ended')
    return 'expired'
  end
  if state == 'approved' and now >= tonumber(redis.call('HGET', rec, 'grant_expires_ms')) then
    finish(prefix, id, rec, 'expired', 'signoff', now, at, 'grant window ended')
    return 'expired'
  end
  return state
end
-- What a transition can change in the record, and its votes: handed back with the result, so
-- the caller shows the approval as this transition left it without reading it again.
local function as_left(rec)
  return redis.call('HMGET', rec, 'state', 'approved_ms', 'grant_expires_ms', 'final_ms',
    'final_reason'), redis.call('HGETALL', rec .. ':votes')
end
-- The record's key and its state now (expired once its window has ended); nil when absent.
local function current(prefix, id, now, at)
  local rec = prefix .. 'approval:' .. id
  if redis.call('EXISTS', rec) == 0 then return rec, nil end
  return rec, expire_if_due(prefix, id, rec, now, at)
end
"""


def _script(body: str) -> str:
    return _EMIT.replace("ARGV_MAXLEN", str(EVENTS_MAXLEN)) + body


# KEYS: none (single-instance Redis). ARGV: prefix, id, now, at, pending_expires_ms,
# grant_ttl_ms, ttl_ms, digest, doc, summary, requester, requester_key, max_pending
_CREATE = _script("""
local prefix, id, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local digest = ARGV[8]
local bydigest = prefix .. 'bydigest:' .. digest
local existing = redis.call('GET', bydigest)
if existing then
  local erec = prefix .. 'approval:' .. existing
  if redis.call('EXISTS', erec) == 1 then
    local state = expire_if_due(prefix, existing, erec, now, at)
    if state == 'pending' or state == 'approved' then return {'existing', existing} end
  end
end
-- One requester's pending approvals, by the end of their window: a window past its end no
-- longer counts even before the sweeper has marked it expired.
local mine, max_pending = ARGV[12], tonumber(ARGV[13])
redis.call('ZREMRANGEBYSCORE', mine, '-inf', now)
if max_pending > 0 then
  local held = redis.call('ZCARD', mine)
  if held >= max_pending then return {'limit', tostring(held)} end
end
local rec = prefix .. 'approval:' .. id
redis.call('HSET', rec, 'state', 'pending', 'digest', digest, 'created_ms', now,
  'pending_expires_ms', ARGV[5], 'grant_ttl_ms', ARGV[6], 'approved_ms', 0,
  'grant_expires_ms', 0, 'final_ms', 0, 'final_reason', '', 'approvals', 0,
  'doc', ARGV[9], 'summary', ARGV[10], 'requester_key', mine)
redis.call('PEXPIRE', rec, ARGV[7])
redis.call('ZADD', prefix .. 'pending', ARGV[5], id)
redis.call('ZADD', mine, ARGV[5], id)
if redis.call('PTTL', mine) < tonumber(ARGV[7]) then redis.call('PEXPIRE', mine, ARGV[7]) end
redis.call('SET', bydigest, id, 'PX', ARGV[7])
emit(prefix, id, 'approval.created', '', 'pending', ARGV[11], at, '', ARGV[10])
return {'created', id}
""")

# ARGV: prefix, id, now, at, approver, vote_json, quorum, reason
_APPROVE = _script("""
local prefix, id, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec, state = current(prefix, id, now, at)
if not state then return {'not_found'} end
if state ~= 'pending' then return {'conflict', state} end
local votes = rec .. ':votes'
if redis.call('HSETNX', votes, ARGV[5], ARGV[6]) == 0 then
  return {'duplicate', state, as_left(rec)}
end
redis.call('PEXPIRE', votes, redis.call('PTTL', rec))
local n = redis.call('HINCRBY', rec, 'approvals', 1)
local summary = redis.call('HGET', rec, 'summary')
emit(prefix, id, 'approval.voted', 'pending', 'pending', ARGV[5], at, ARGV[8], summary)
if n >= tonumber(ARGV[7]) then
  local grant_expires = now + tonumber(redis.call('HGET', rec, 'grant_ttl_ms'))
  redis.call('HSET', rec, 'state', 'approved', 'approved_ms', now,
    'grant_expires_ms', grant_expires)
  unlist(prefix, id, rec)
  redis.call('ZADD', prefix .. 'grants', grant_expires, id)
  emit(prefix, id, 'approval.approved', 'pending', 'approved', ARGV[5], at, ARGV[8], summary)
  return {'approved', tostring(n), as_left(rec)}
end
return {'voted', tostring(n), as_left(rec)}
""")

# ARGV: prefix, id, now, at, approver, vote_json, reason
_REJECT = _script("""
local prefix, id, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec, state = current(prefix, id, now, at)
if not state then return {'not_found'} end
if state ~= 'pending' then return {'conflict', state} end
-- A rejection replaces the same approver's earlier approval: it is their last word.
local votes = rec .. ':votes'
local before = redis.call('HGET', votes, ARGV[5])
redis.call('HSET', votes, ARGV[5], ARGV[6])
redis.call('PEXPIRE', votes, redis.call('PTTL', rec))
if before then redis.call('HINCRBY', rec, 'approvals', -1) end
finish(prefix, id, rec, 'rejected', ARGV[5], now, at, ARGV[7])
return {'rejected', '', as_left(rec)}
""")

# ARGV: prefix, id, now, at, actor, reason
_CANCEL = _script("""
local prefix, id, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec, state = current(prefix, id, now, at)
if not state then return {'not_found'} end
if state ~= 'pending' and state ~= 'approved' then return {'conflict', state} end
finish(prefix, id, rec, 'cancelled', ARGV[5], now, at, ARGV[6])
return {'cancelled', '', as_left(rec)}
""")

# ARGV: prefix, id, now, at, digest, actor
_CONSUME = _script("""
local prefix, id, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec = prefix .. 'approval:' .. id
if redis.call('EXISTS', rec) == 0 then return {'not_found'} end
-- Checked first and in every state: an approval never answers for another action.
if redis.call('HGET', rec, 'digest') ~= ARGV[5] then return {'mismatch'} end
local state = expire_if_due(prefix, id, rec, now, at)
if state ~= 'approved' then return {state} end
finish(prefix, id, rec, 'consumed', ARGV[6], now, at, '')
return {'ok'}
""")

# ARGV: prefix, now, at, limit
_EXPIRE_DUE = _script("""
local prefix, now, at = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = 0
for _, zset in ipairs({'pending', 'grants'}) do
  local due = redis.call('ZRANGEBYSCORE', prefix .. zset, '-inf', now,
    'LIMIT', 0, tonumber(ARGV[4]))
  for _, id in ipairs(due) do
    local rec = prefix .. 'approval:' .. id
    if redis.call('EXISTS', rec) == 1 then
      if expire_if_due(prefix, id, rec, now, at) == 'expired' then n = n + 1 end
    end
    redis.call('ZREM', prefix .. zset, id)
  end
end
return n
""")


class Result(enum.StrEnum):
    """What a transition script answered. Beside the transitions' own results, a refusal
    names the approval's state: CONFLICT for a vote or cancel, the bare state for consume."""

    CREATED = "created"
    VOTED = "voted"
    DUPLICATE = "duplicate"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    OK = "ok"  # consumed, by this caller
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    MISMATCH = "mismatch"
    PENDING = "pending"
    EXPIRED = "expired"
    CONSUMED = "consumed"


# The record's fields a transition can change, in the order the scripts' `as_left` reads them.
_CHANGING = ("state", "approved_ms", "grant_expires_ms", "final_ms", "final_reason")


@dataclass(frozen=True)
class Outcome:
    """What a transition script answered: `status` plus the state or count it reports, and
    (vote, reject, cancel) the record's changing fields and votes as the transition left them."""

    status: Result
    detail: str = ""
    left: tuple[dict[str, str], dict[str, str]] | None = field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def of(cls, result: list[Any]) -> Outcome:
        left = None
        if len(result) == 4:
            changed, votes = result[2], result[3]
            left = (
                dict(zip(_CHANGING, changed, strict=True)),
                dict(zip(votes[::2], votes[1::2], strict=True)),
            )
        return cls(Result(str(result[0])), str(result[1]) if len(result) > 1 else "", left)


class ApprovalStore:
    """Atomic approval transitions on one Redis; safe to share between threads and processes."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = wall_clock_ms,
        retention_ms: int = DEFAULT_RETENTION_MS,
        timeout: float = 2.0,
        max_pending_per_requester: int = DEFAULT_MAX_PENDING_PER_REQUESTER,
    ) -> None:
        # Fail fast instead of retrying inside a request: the caller gets UNAVAILABLE now and
        # the pool reconnects on the next call once Redis is back.
        self.redis: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=5,
            decode_responses=True,
        )
        self.prefix = prefix
        self.clock = clock
        self.retention_ms = retention_ms
        self.max_pending_per_requester = max_pending_per_requester
        self._scripts = {
            name: self.redis.register_script(body)
            for name, body in (
                ("create", _CREATE),
                ("approve", _APPROVE),
                ("reject", _REJECT),
                ("cancel", _CANCEL),
                ("consume", _CONSUME),
                ("expire_due", _EXPIRE_DUE),
            )
        }

    @contextmanager
    def _available(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"approval store unavailable: {type(exc).__name__}") from None
        except redis.ResponseError as exc:
            # e.g. a replica in read-only mode or an OOM refusal: still never a permission.
            # Redis' text names scripts and keys: it goes to the log, not to the caller.
            log.error("approval store refused an operation: %s", str(exc)[:200])
            raise StoreUnavailable("approval store refused the operation") from None

    def _run(self, name: str, *args: Any) -> Any:
        with self._available():
            return self._scripts[name](keys=[], args=[self.prefix, *args])

    def shared_dev_secret(self) -> bytes:
        """A secret created once in Redis and shared by every process on it.

        Development only: whoever reads Redis reads this secret too, so production sets
        SIGNOFF_HASH_KEY instead. It keeps approvals and pseudonyms stable across restarts
        and processes when no key is configured.
        """
        key = f"{self.prefix}{DEV_SECRET_REDIS_KEY}"
        with self._available():
            self.redis.set(key, secrets.token_hex(32), nx=True)
            value = self.redis.get(key)
        return bytes.fromhex(str(value))

    def pending_count(self) -> int | None:
        """Approvals waiting for sign-off, or None when the store cannot be asked."""
        try:
            return int(self.redis.zcard(f"{self.prefix}pending"))
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}events"

    def approval_events_stream(self, approval_id: str) -> str:
        return f"{self.prefix}approval:{approval_id}:events"

    # --- transitions ------------------------------------------------------------------

    def create(
        self,
        *,
        digest: str,
        requester: str,
        pending_ttl_ms: int,
        grant_ttl_ms: int,
        doc: dict[str, Any],
        summary: dict[str, Any],
    ) -> tuple[str, bool]:
        """Store a pending approval; returns (id, created). A live approval for the same
        exact action is returned instead of creating a second one. Raises PendingLimit when
        `requester` already has `max_pending_per_requester` approvals waiting."""
        now = self.clock()
        approval_id = "apr_" + secrets.token_urlsafe(18)
        ttl = pending_ttl_ms + grant_ttl_ms + self.retention_ms
        result = self._run(
            "create",
            approval_id,
            now,
            iso(now),
            now + pending_ttl_ms,
            grant_ttl_ms,
            ttl,
            digest,
            json.dumps(doc, separators=(",", ":"), sort_keys=True),
            json.dumps(summary, separators=(",", ":"), sort_keys=True),
            requester,
            self._requester_key(requester),
            self.max_pending_per_requester,
        )
        if result[0] == "limit":
            raise PendingLimit(int(result[1]), self.max_pending_per_requester)
        return str(result[1]), result[0] == Result.CREATED

    def _requester_key(self, requester: str) -> str:
        """The key counting `requester`'s pending approvals: one per identity however it is
        spelled (as self-approval compares them), hashed so the key name carries no id."""
        return f"{self.prefix}requester:{_requester_hash(requester)}"

    def approve(self, approval_id: str, approver: str, reason: str, quorum: int) -> Outcome:
        now = self.clock()
        vote = _vote_json(approve=True, reason=reason, now=now)
        result = self._run("approve", approval_id, now, iso(now), approver, vote, quorum, reason)
        return Outcome.of(result)

    def reject(self, approval_id: str, approver: str, reason: str) -> Outcome:
        now = self.clock()
        vote = _vote_json(approve=False, reason=reason, now=now)
        result = self._run("reject", approval_id, now, iso(now), approver, vote, reason)
        return Outcome.of(result)

    def cancel(self, approval_id: str, actor: str, reason: str) -> Outcome:
        now = self.clock()
        result = self._run("cancel", approval_id, now, iso(now), actor, reason)
        return Outcome.of(result)

    def consume(self, approval_id: str, digest: str, actor: str) -> Outcome:
        """Use an approval for the action with `digest`.

        Exactly one caller ever gets status 'ok'; every other caller gets why not: 'mismatch',
        'not_found', or the current state ('consumed' meaning already used, 'pending',
        'expired', 'rejected', 'cancelled').
        """
        now = self.clock()
        result = self._run("consume", approval_id, now, iso(now), digest, actor)
        # 'ok' is the one winning transition; any state name is why this caller did not win.
        return Outcome.of(result)

    def expire_due(self, limit: int = 500) -> int:
        now = self.clock()
        return int(self._run("expire_due", now, iso(now), limit))

    def as_left(self, before: ApprovalRecord, outcome: Outcome) -> ApprovalRecord | None:
        """`before` (read ahead of the transition) as `outcome`'s transition left it, or None
        when the script handed nothing back (a refusal)."""
        if outcome.left is None:
            return None
        changed, votes = outcome.left
        return replace(before, **_changing(changed, votes, before.pending_expires_ms, self.clock()))

    # --- reads ------------------------------------------------------------------------

    def last_event_id(self, stream: str) -> str:
        with self._available():
            entries: Any = self.redis.xrevrange(stream, count=1)
        return str(entries[0][0]) if entries else "0-0"

    def wait_for_event(self, stream: str, last: str, block_ms: int) -> str:
        """Block until an entry after `last` arrives (or `block_ms` passes); the newest id."""
        with self._available():
            got: Any = self.redis.xread({stream: last}, count=16, block=block_ms)
        return str(got[0][1][-1][0]) if got else last

    def get(self, approval_id: str) -> ApprovalRecord | None:
        """The record as stored; a window that has ended reads as expired even before the
        sweeper has written it."""
        if not is_approval_id(approval_id):
            return None
        return self._fetch([approval_id])[0]

    def pending(self, limit: int, chunk: int = 100) -> Iterator[ApprovalRecord]:
        """Pending approvals whose window is still open, soonest to expire first. Read `chunk`
        at a time, each chunk one transaction: a long list never holds Redis (and the checks
        waiting on it) for long, and a caller that has enough stops the reading."""
        now = self.clock()
        with self._available():
            ids = self.redis.zrangebyscore(f"{self.prefix}pending", now, "+inf", start=0, num=limit)
        for start in range(0, len(ids), chunk):
            records = self._fetch([str(i) for i in ids[start : start + chunk]])
            yield from (r for r in records if r is not None and r.state is State.PENDING)

    def _fetch(self, ids: list[str]) -> list[ApprovalRecord | None]:
        """Records and votes of `ids` in one round trip, each record read consistently."""
        if not ids:
            return []
        with self._available():
            pipe = self.redis.pipeline(transaction=True)
            for approval_id in ids:
                key = f"{self.prefix}approval:{approval_id}"
                pipe.hgetall(key)
                pipe.hgetall(f"{key}:votes")
            raw = pipe.execute()
        now = self.clock()
        return [
            _record(approval_id, fields, votes, now) if fields else None
            for approval_id, fields, votes in zip(ids, raw[::2], raw[1::2], strict=True)
        ]


# An agent asks for many approvals under one name: its key is worked out once, not per request.
@functools.lru_cache(maxsize=4096)
def _requester_hash(requester: str) -> str:
    return hashlib.sha256(identity_key(requester).encode()).hexdigest()[:32]


def _vote_json(*, approve: bool, reason: str, now: int) -> str:
    return json.dumps({"approve": approve, "reason": reason, "at_ms": now}, separators=(",", ":"))


def _record(approval_id: str, f: dict[str, str], votes: dict[str, str], now: int) -> ApprovalRecord:
    request = ApprovalRequest.from_doc(json.loads(f["doc"]))
    pending_expires = int(f["pending_expires_ms"])
    return ApprovalRecord(
        id=approval_id,
        digest=f["digest"],
        requester_id=request.requester_id,
        requester_kind=request.requester_kind,
        requester_ids=request.requester_ids,
        requirement=request.requirement,
        view=request.view,
        created_ms=int(f["created_ms"]),
        pending_expires_ms=pending_expires,
        grant_ttl_ms=int(f["grant_ttl_ms"]),
        policy_revision=request.policy_revision,
        decision_id=request.decision_id,
        **_changing(f, votes, pending_expires, now),
    )


def _changing(
    f: dict[str, str], votes: dict[str, str], pending_expires: int, now: int
) -> dict[str, Any]:
    """The record's members a transition can change, from its stored fields and votes; a
    window that has ended reads as expired even before the sweeper has written it."""
    state = State(f["state"])
    grant_expires = int(f["grant_expires_ms"])
    final_ms = int(f["final_ms"])
    final_reason = f["final_reason"]
    if state is State.PENDING and now >= pending_expires:
        state, final_ms, final_reason = State.EXPIRED, pending_expires, "pending window ended"
    elif state is State.APPROVED and now >= grant_expires:
        state, final_ms, final_reason = State.EXPIRED, grant_expires, "grant window ended"
    parsed = []
    for approver, raw in sorted(votes.items()):
        v = json.loads(raw)
        parsed.append(Vote(approver, bool(v["approve"]), str(v["reason"]), int(v["at_ms"])))
    return {
        "state": state,
        "approved_ms": int(f["approved_ms"]),
        "grant_expires_ms": grant_expires,
        "final_ms": final_ms,
        "final_reason": final_reason,
        "votes": tuple(parsed),
    }
