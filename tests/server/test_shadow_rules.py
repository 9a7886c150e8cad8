"""Shadow rules over gRPC: enforced verdict unchanged; would-be verdict in the trace and audit."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path

import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.engine.evaluator import Engine
from signoff.observability import Telemetry
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views
from tests.conftest import RULES, fixed_clock
from tests.server.harness import (
    DAY,
    KEY,
    KEY_ID,
    REDIS_URL,
    TIMEOUT,
    allowed_read,
    channel_to,
    drop_prefix,
)

# A stricter rule being rolled out: reads by day must carry a ticket.
SHADOW = """
policies:
  - id: rollout
    resources: [customer_table]
    actions: [read]
    rules:
      - id: ticket-required
        effect: deny
        shadow: true
        when: "!has(context.attr.ticket)"
        reason: reads need a ticket
"""


def test_a_shadow_rule_is_traced_and_audited_but_not_enforced(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "rollout.yaml").write_text(SHADOW)
    schema = (rules / "schema.yaml").read_text()
    if "ticket" not in schema:
        (rules / "schema.yaml").write_text(schema + "  context:\n    ticket: string\n")
    spans = InMemorySpanExporter()
    telemetry = Telemetry.for_tests(spans)
    prefix = f"signoff:test:shadow:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    running = app.start(
        Engine(load_bundle(rules), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        telemetry=telemetry,
        audit=audit,
        views=Views(hash_key=KEY, hash_key_id=KEY_ID),
    )
    try:
        with channel_to(running.port) as channel:
            response = pb_grpc.DecisionServiceStub(channel).Check(allowed_read(), timeout=TIMEOUT)
        assert response.verdict == pb.VERDICT_ALLOW
        assert "rollout/ticket-required" not in response.matched_rules
        assert audit.flush(10.0)
        out = io.StringIO()
        audit.export("decisions", None, None, out)
        (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
        assert record["verdict"] == "ALLOW"
        assert record["shadow"] == {
            "verdict": "DENY",
            "matched_rules": ["rollout/ticket-required"],
            "errored_rules": [],
            "reasons": ["reads need a ticket"],
            "changes_verdict": True,
        }
        decision_span = next(s for s in spans.get_finished_spans() if s.name.endswith("/Check"))
        assert decision_span.attributes is not None
        assert decision_span.attributes["signoff.shadow.verdict"] == "deny"
        assert list(decision_span.attributes["signoff.shadow.rules"]) == ["rollout/ticket-required"]  # type: ignore[arg-type]
    finally:
        running.stop(grace=None)
        audit.close(timeout=1.0)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)
