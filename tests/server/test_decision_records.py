"""Every decision is recorded and every batch decided on one bundle, whatever the cache holds."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import grpc
import redis
from google.protobuf import struct_pb2

from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, Request
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import AuditSelection, Views
from tests.conftest import RULES, fixed_clock
from tests.server.harness import (
    DAY,
    KEY,
    KEY_ID,
    REDIS_URL,
    TIMEOUT,
    allowed_read,
    bundled,
    channel_to,
    drop_prefix,
    rpc_error,
)


def test_a_batch_keeps_its_bundle_when_a_reload_lands_mid_batch_with_no_cache() -> None:
    old, new = bundled(), load_bundle(RULES, backend="cel-python")
    assert old.revision == new.revision  # same files: tell the engines apart by identity
    swapped: list[Engine] = []
    calls: list[Request] = []

    class SwapOnFirstDecision(Engine):
        def decide(self, request: Request, at: dt.datetime | None = None) -> Decision:
            calls.append(request)
            if not swapped:
                swapped.append(Engine(new, clock=fixed_clock(DAY)))
                running.decisions.engine = swapped[0]
            return super().decide(request, at)

    running = app.start(
        SwapOnFirstDecision(old, clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        decision_cache=0,
    )
    try:
        with channel_to(running.port) as channel:
            out = pb_grpc.DecisionServiceStub(channel).CheckBatch(
                pb.CheckBatchRequest(items=[allowed_read() for _ in range(3)]), timeout=TIMEOUT
            )
        assert [r.decision.verdict for r in out.results] == [pb.VERDICT_ALLOW] * 3
        # The swap happened during item 0; items 1 and 2 still used the batch's engine.
        assert running.decisions.engine is swapped[0]
        assert len(calls) == 3
    finally:
        running.stop(grace=None)


def test_a_non_json_number_kept_for_audit_is_refused_before_any_record() -> None:
    # NaN used to reach the audit writer (which records a placeholder for what it cannot
    # encode, see tests/audit); the edge now refuses it, so records only ever hold JSON.
    prefix = f"signoff:test:records:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    views = Views(hash_key=KEY, hash_key_id=KEY_ID, audit=AuditSelection.parse([], ["note"]))
    running = app.start(
        Engine(bundled(), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        audit=audit,
        views=views,
    )
    request = allowed_read()
    # An undeclared payload key: ignored by the policy, kept by the audit allowlist.
    request.payload.fields["note"].CopyFrom(struct_pb2.Value(number_value=float("nan")))
    try:
        with channel_to(running.port) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            error = rpc_error(lambda: stub.Check(request, timeout=TIMEOUT))
            stub.Check(allowed_read(), timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("invalid request: payload.note: ")
        assert audit.flush(10.0)
        out = io.StringIO()
        audit.export("decisions", None, None, out)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [r["type"] for r in records] == ["decision"]
    finally:
        running.stop(grace=None)
        audit.close(timeout=1.0)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)
