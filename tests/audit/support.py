"""Helpers for the audit tests: a test key, stream access, and rewriting a stream as an attacker."""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from signoff.audit import AuditLog, audit_key

SECRET = b"audit-test-service-secret-0123456789abcdef"
KEY = audit_key(SECRET)
Fields = dict[str, str]


def entries(r: redis.Redis, stream: str) -> list[tuple[str, Fields]]:
    got: Any = r.xrange(stream, "-", "+")
    return [(str(i), dict(f)) for i, f in got]


def records(r: redis.Redis, stream: str) -> list[dict[str, Any]]:
    out = []
    for entry_id, fields in entries(r, stream):
        rec: dict[str, Any] = json.loads(fields["record"])
        rec["hash"], rec["entry_id"] = fields["hash"], entry_id
        out.append(rec)
    return out


def rewrite(r: redis.Redis, stream: str, new: list[Fields]) -> list[str]:
    """Replace the whole stream with `new`, as someone with only Redis access would have to.

    Redis refuses XADD ids at or below a stream's last id, so a record cannot be put back
    between its neighbours in place; an attacker rebuilds the stream instead. Ids keep the
    original first entry's time, numbered in order. Head and anchor keys are left as they are.
    """
    first = entries(r, stream)[0][0]
    base = int(first.split("-")[0])
    pipe = r.pipeline(transaction=True)
    pipe.delete(stream)
    for i, fields in enumerate(new):
        data: dict[FieldT, EncodableT] = dict(fields.items())
        pipe.xadd(stream, data, id=f"{base}-{i}")
    pipe.execute()
    return [entry_id for entry_id, _ in entries(r, stream)]


def write(log: AuditLog, count: int, stream: str = "decisions", start: int = 0) -> None:
    kind = "decision" if stream == "decisions" else "approval.voted"
    for i in range(start, start + count):
        assert log.submit(
            {"type": kind, "decision_id": f"dec_{i}", "verdict": "ALLOW", "rule_ids": ["r1"]}
        )
    assert log.flush(10)
