"""`signoff replay`: recorded decisions decided again with a changed bundle, and the report."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import struct_pb2

from signoff.audit import AuditLog, audit_key
from signoff.audit.record import DecisionRecord
from signoff.client.masking import key_id
from signoff.cmd.replay import register as add_replay_arguments
from signoff.engine.evaluator import Engine
from signoff.engine.model import (
    Context,
    FieldRef,
    Principal,
    PrincipalKind,
    Request,
    Resource,
    Verdict,
)
from signoff.policy.loader import load_bundle
from signoff.replay import MalformedRecord, Missing, cel_reads, replay
from signoff.server import app
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import AuditSelection, Views
from tests.conftest import WriteRules, fixed_clock

KEY = b"replay-test-service-secret-0123456789abcdef"
# What the audit records keep: these attributes and payload keys; everything else by name only.
SELECTION = AuditSelection.parse(["principal.team", "resource.tenant"], ["rows", "note"])
VIEWS = Views(hash_key=KEY, hash_key_id=key_id(KEY), audit=SELECTION)
DAY = "2026-03-02T14:00:00Z"
DAY_MS = "2026-03-02T14:00:00.000Z"

SCHEMA = """
schema:
  principal: {team: string, owner: string, clearance: int}
  resource: {tenant: string}
  context: {ticket: string}
  payload: {rows: int, note: string, target: string}
"""

OLD = """
policies:
  - id: data
    resources: [table]
    actions: [read, export]
    rules:
      - {id: allow-analysts, effect: allow, roles: [analyst]}
      - id: mask-pii
        effect: mask
        roles: [analyst]
        when: "resource.tags.exists(t, t == 'pii')"
        mask: [{tags: [pii], operator: redact}]
  - id: notes
    resources: [notebook]
    actions: [write]
    rules:
      - {id: allow-writers, effect: allow, roles: [writer]}
      - id: mask-private
        effect: mask
        roles: [writer]
        when: "resource.tags.exists(t, t == 'private')"
        mask: [{tags: [private], operator: redact}]
  - id: buckets
    resources: [bucket]
    actions: [delete]
    rules:
      - {id: allow-admins, effect: allow, roles: [admin]}
  - id: clock
    resources: [clock]
    actions: [ping]
    rules:
      - {id: allow-all, effect: allow}
"""

# OLD plus: phone numbers masked too, bulk exports denied, ops exports need approval, shouted
# notes denied (a payload value), foreign owners denied (an attribute records do not keep), and
# stale callers denied (context.time, which records never keep).
NEW = """
policies:
  - id: data
    resources: [table]
    actions: [read, export]
    rules:
      - {id: allow-analysts, effect: allow, roles: [analyst]}
      - id: mask-pii
        effect: mask
        roles: [analyst]
        when: "resource.tags.exists(t, t == 'pii' || t == 'phone')"
        mask: [{tags: [pii, phone], operator: redact}]
      - id: deny-bulk
        effect: deny
        when: "action == 'export' && has(payload.rows) && payload.rows > 1000"
        reason: bulk exports are not allowed
      - id: ops-exports-need-approval
        effect: require_approval
        roles: [analyst]
        when: "action == 'export' && has(principal.attr.team) && principal.attr.team == 'ops-7731'"
        approval: {approvers: {roles: [boss]}}
  - id: notes
    resources: [notebook]
    actions: [write]
    rules:
      - {id: allow-writers, effect: allow, roles: [writer]}
      - id: mask-private
        effect: mask
        roles: [writer]
        when: "resource.tags.exists(t, t == 'private')"
        mask: [{tags: [private], operator: redact}]
      - id: deny-shouting
        effect: deny
        when: "has(payload.note) && payload.note.startsWith('!')"
  - id: buckets
    resources: [bucket]
    actions: [delete]
    rules:
      - {id: allow-admins, effect: allow, roles: [admin]}
      - id: deny-foreign-owner
        effect: deny
        when: "has(principal.attr.owner) && principal.attr.owner != principal.id"
  - id: clock
    resources: [clock]
    actions: [ping]
    rules:
      - {id: allow-all, effect: allow}
      - id: deny-stale
        effect: deny
        when: "has(context.time) && now - context.time > duration('5m')"
"""

# Values the requests carry; no report may ever show one of them.
SECRET_VALUES = ("ops-7731", "data-9", "987654", "TOPSECRET", "SHOUT-XYZ", "OWNER-VALUE-42")


def analyst(team: str = "data-9", **attributes: Any) -> Principal:
    return Principal(
        "alice@acme.io", PrincipalKind.HUMAN, ("analyst",), {"team": team, **attributes}
    )


def writer() -> Principal:
    return Principal("walt@acme.io", PrincipalKind.HUMAN, ("writer",), {"team": "data-9"})


def table(*fields: FieldRef) -> Resource:
    return Resource("table", "crm.customers", {"tenant": "acme"}, fields)


def notebook(*fields: FieldRef) -> Resource:
    return Resource("notebook", "nb-1", {"tenant": "acme"}, fields)


def ask(
    who: Principal, action: str, what: Resource, payload: dict[str, Any] | None = None
) -> Request:
    return Request(who, action, what, Context(environment="prod"), payload or {})


PHONE = FieldRef("phone", ("phone",))
EMAIL = FieldRef("email", ("pii",))
PRIVATE_NOTE = FieldRef("note", ("private",))

# The recorded traffic, by decision id.
CASES: dict[str, Request] = {
    # clearance is carried and not kept, but no rule reads it: still replayable.
    "d-read-plain": ask(analyst(clearance=3), "read", table(FieldRef("name"))),
    "d-read-phone": ask(analyst(), "read", table(PHONE)),
    "d-read-pii-phone": ask(analyst(), "read", table(EMAIL, PHONE)),
    "d-export-small": ask(analyst(), "export", table(), {"rows": 10, "target": "s3://x"}),
    "d-export-bulk-1": ask(analyst(), "export", table(), {"rows": 987654}),
    "d-export-bulk-2": ask(analyst(), "export", table(), {"rows": 987654, "target": "s3://y"}),
    "d-export-ops": ask(analyst("ops-7731"), "export", table(), {"rows": 10}),
    "d-note-private": ask(writer(), "write", notebook(PRIVATE_NOTE), {"note": "TOPSECRET"}),
    "d-note-plain": ask(writer(), "write", notebook(), {"note": "hello"}),
    "d-note-shout": ask(writer(), "write", notebook(), {"note": "!SHOUT-XYZ"}),
    "d-delete-by-agent": ask(
        Principal("agent:cleaner", PrincipalKind.AGENT, ("admin",), {"owner": "OWNER-VALUE-42"}),
        "delete",
        Resource("bucket", "logs"),
    ),
    "d-delete-by-admin": ask(
        Principal("ivan@acme.io", PrincipalKind.HUMAN, ("admin",)),
        "delete",
        Resource("bucket", "x"),
    ),
    "d-ping": ask(Principal("svc:probe", PrincipalKind.SERVICE), "ping", Resource("clock", "c")),
}

EXPECTED_CHANGES = {
    "ALLOW -> DENY": ["d-export-bulk-1", "d-export-bulk-2", "d-note-shout"],
    "ALLOW -> MASK": ["d-read-phone"],
    "MASK -> MASK": ["d-read-pii-phone"],
    "ALLOW -> REQUIRE_APPROVAL": ["d-export-ops"],
}
EXPECTED_MISSING = {
    Missing("payload.note", "masked"): 1,
    Missing("principal.attr.owner", "not_kept"): 1,
    Missing("context.time", "never_recorded"): 1,
}


def record_for(
    engine: Engine, decision_id: str, request: Request, *, at: str = DAY_MS, seq: int = 1
) -> dict[str, Any]:
    """The record the decision core writes for a decision without approval flow, as
    `signoff audit export` prints it (with the chain fields)."""
    decision = engine.decide(request)
    written = DecisionRecord.of(
        decision_id, decision, decision, "", "0" * 32, "", VIEWS.audit_view(request, decision)
    )
    return {
        **written.doc(),
        "at": at,
        "seq": seq,
        "prev": "0" * 64,
        "hash": "1" * 64,
        "entry_id": f"1772460000000-{seq}",
        "stream": "decisions",
    }


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def cli(*argv: str) -> int:
    # cli.py mounts add_replay_arguments on `signoff`; a bare parser runs the same functions.
    parser = argparse.ArgumentParser(prog="signoff")
    add_replay_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", *argv])
    code: int = args.run(args)
    return code


@pytest.fixture
def old_rules(write_rules: WriteRules) -> Path:
    return write_rules(schema=SCHEMA, policies=OLD)


@pytest.fixture
def new_rules(write_rules: WriteRules) -> Path:
    return write_rules(schema=SCHEMA, policies=NEW)


@pytest.fixture
def records(old_rules: Path) -> list[dict[str, Any]]:
    """The CASES decided by the old bundle and recorded, between records of other types."""
    engine = Engine(load_bundle(old_rules), clock=fixed_clock(DAY))
    out: list[dict[str, Any]] = [
        {"type": "audit.dropped", "count": 2, "at": DAY_MS, "seq": 1, "stream": "decisions"}
    ]
    for seq, (decision_id, request) in enumerate(CASES.items(), start=2):
        out.append(record_for(engine, decision_id, request, seq=seq))
    out.append({"type": "approval.created", "approval_id": "apr_1", "stream": "approvals"})
    out.append({"entry_id": "1-1", "stream": "decisions", "malformed": True, "fields": {}})
    return out


@pytest.fixture
def decisions(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    return write_lines(tmp_path / "decisions.jsonl", records)


def test_records_keep_what_the_scenario_assumes(records: list[dict[str, Any]]) -> None:
    by_id = {r["decision_id"]: r for r in records if r.get("type") == "decision"}
    assert by_id["d-read-pii-phone"]["masked_fields"] == ["email"]
    assert by_id["d-note-private"]["request"]["payload"] == {"note": "[REDACTED]"}
    assert "owner" not in by_id["d-delete-by-agent"]["request"]["principal"]["attributes"]
    assert by_id["d-delete-by-agent"]["request"]["attribute_names"]["principal"] == ["owner"]


def test_replay_reports_exactly_the_changed_decisions_per_transition(
    records: list[dict[str, Any]], new_rules: Path
) -> None:
    report = replay(records, load_bundle(new_rules))

    assert report.total == len(CASES)
    assert report.not_replayable == 3
    assert report.replayed == len(CASES) - 3
    assert report.changed == 6
    assert report.unchanged == 4  # read-plain, export-small, note-plain, delete-by-admin
    assert report.changed_ids == EXPECTED_CHANGES
    assert dict(report.transitions) == {k: len(v) for k, v in EXPECTED_CHANGES.items()}


def test_replay_counts_the_deciding_new_rules_and_the_old_matched_rules(
    records: list[dict[str, Any]], new_rules: Path
) -> None:
    report = replay(records, load_bundle(new_rules))

    assert {rule: dict(c) for rule, c in report.decided_by.items()} == {
        "data/deny-bulk": {"ALLOW -> DENY": 2},
        "notes/deny-shouting": {"ALLOW -> DENY": 1},
        "data/mask-pii": {"ALLOW -> MASK": 1, "MASK -> MASK": 1},
        "data/ops-exports-need-approval": {"ALLOW -> REQUIRE_APPROVAL": 1},
    }
    assert {rule: dict(c) for rule, c in report.old_matched.items()} == {
        "data/allow-analysts": {
            "ALLOW -> DENY": 2,
            "ALLOW -> MASK": 1,
            "MASK -> MASK": 1,
            "ALLOW -> REQUIRE_APPROVAL": 1,
        },
        "data/mask-pii": {"MASK -> MASK": 1},
        "notes/allow-writers": {"ALLOW -> DENY": 1},
    }


def test_masking_plan_changes_are_reported_by_field_path(
    records: list[dict[str, Any]], new_rules: Path
) -> None:
    report = replay(records, load_bundle(new_rules))

    [both] = report.examples["MASK -> MASK"]
    assert (both.masked_added, both.masked_removed) == (("phone",), ())
    [newly] = report.examples["ALLOW -> MASK"]
    assert newly.masked_added == ("phone",)


def test_decisions_reading_what_records_do_not_keep_are_not_replayable_and_named(
    records: list[dict[str, Any]], new_rules: Path
) -> None:
    report = replay(records, load_bundle(new_rules))

    assert dict(report.missing) == EXPECTED_MISSING
    assert {d for d, _ in report.unreplayable_examples} == {
        "d-note-private",  # payload.note is kept, but masked by the decision's plan
        "d-delete-by-agent",  # owner was carried, and the record keeps only its name
    } | {"d-ping"}  # context.time is never kept
    changed = {d for ids in report.changed_ids.values() for d in ids}
    assert not changed & {"d-note-private", "d-delete-by-agent", "d-ping"}


def test_attributes_the_request_did_not_carry_replay_as_absent(
    records: list[dict[str, Any]], new_rules: Path
) -> None:
    # deny-foreign-owner reads principal.attr.owner: ivan carried none, so has() is false now
    # as it was then, and the decision replays (unchanged) instead of being given up.
    report = replay(
        [r for r in records if r.get("decision_id") == "d-delete-by-admin"], load_bundle(new_rules)
    )

    assert (report.replayed, report.unchanged, report.not_replayable) == (1, 1, 0)


def test_unchanged_bundle_changes_nothing(records: list[dict[str, Any]], old_rules: Path) -> None:
    report = replay(records, load_bundle(old_rules))

    assert (report.total, report.replayed, report.unchanged) == (len(CASES), len(CASES), len(CASES))
    assert report.changed == 0


def test_examples_show_ids_and_rules_never_values(
    decisions: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli("--rules", str(new_rules), "--decisions", str(decisions), "--max-changes", "99")
    text = capsys.readouterr().out
    cli("--rules", str(new_rules), "--decisions", str(decisions), "--json", "--max-changes", "99")
    doc = json.loads(capsys.readouterr().out)

    assert "d-export-bulk-1  human alice@acme.io  export table/crm.customers" in text
    assert "decided by data/deny-bulk; was data/allow-analysts" in text
    example = doc["examples"]["ALLOW -> DENY"][0]
    assert example == {
        "decision_id": "d-export-bulk-1",
        "principal": {"id": "alice@acme.io", "kind": "human"},
        "action": "export",
        "resource": {"kind": "table", "id": "crm.customers"},
        "old": "ALLOW",
        "new": "DENY",
        "decided_by": ["data/deny-bulk"],
        "old_matched_rules": ["data/allow-analysts"],
        "masked_added": [],
        "masked_removed": [],
        "masked_changed": [],
        "invalid_field": "",
    }
    for value in (*SECRET_VALUES, "[REDACTED]", "hello", "s3://"):
        assert value not in text
        assert value not in json.dumps(doc)


def test_json_report_has_counts_rules_and_missing_attributes(
    decisions: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("--rules", str(new_rules), "--decisions", str(decisions), "--json")
    doc = json.loads(capsys.readouterr().out)

    assert code == 1
    assert (doc["total"], doc["replayed"], doc["not_replayable"]) == (13, 10, 3)
    assert (doc["unchanged"], doc["changed"], doc["change_rate"]) == (4, 6, 0.6)
    assert {k: v["decision_ids"] for k, v in doc["transitions"].items()} == EXPECTED_CHANGES
    assert doc["not_replayable_by_attribute"] == [
        {"attribute": "context.time", "why": "never_recorded", "count": 1},
        {"attribute": "payload.note", "why": "masked", "count": 1},
        {"attribute": "principal.attr.owner", "why": "not_kept", "count": 1},
    ]
    assert doc["rules_changed"]["decided_by"]["data/deny-bulk"] == {"ALLOW -> DENY": 2}
    assert doc["budget"]["exceeded"] == ["6 changed decision(s) > --max-changes 0"]
    assert doc["exit_code"] == 1


def test_examples_are_limited_per_transition(
    decisions: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli("--rules", str(new_rules), "--decisions", str(decisions), "--json", "--examples", "1")
    doc = json.loads(capsys.readouterr().out)

    assert [e["decision_id"] for e in doc["examples"]["ALLOW -> DENY"]] == ["d-export-bulk-1"]
    assert len(doc["transitions"]["ALLOW -> DENY"]["decision_ids"]) == 3


@pytest.mark.parametrize(
    ("budget", "code"),
    [
        ((), 1),  # the default budget is no change at all
        (("--max-changes", "6"), 0),
        (("--max-changes", "5"), 1),
        (("--max-change-rate", "0.6"), 0),  # 6 of 10 replayed
        (("--max-change-rate", "0.5"), 1),
        (("--max-changes", "6", "--max-change-rate", "0.5"), 1),
        (("--max-changes", "6", "--max-unreplayable", "3"), 0),
        (("--max-changes", "6", "--max-unreplayable", "2"), 1),
    ],
)
def test_exit_code_follows_the_change_budget(
    decisions: Path,
    new_rules: Path,
    budget: tuple[str, ...],
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli("--rules", str(new_rules), "--decisions", str(decisions), *budget) == code
    out = capsys.readouterr().out
    assert ("over budget:" in out) is (code == 1)


def test_text_report_lists_transitions_missing_attributes_and_budget(
    decisions: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("--rules", str(new_rules), "--decisions", str(decisions)) == 1
    out = capsys.readouterr().out

    assert "13 decision record(s)" in out
    assert "  ALLOW -> DENY: 3\n" in out
    assert "  MASK -> MASK: 1 (masked fields differ)\n" in out
    assert "  principal.attr.owner: 1 (carried by the request, value not kept" in out
    assert "  payload.note: 1 (value masked in the record" in out
    assert "  context.time: 1 (audit records never keep it)" in out
    assert "  data/deny-bulk: 2 (ALLOW -> DENY: 2)\n" in out
    assert "over budget: 6 changed decision(s) > --max-changes 0" in out


def test_bad_json_line_exits_2_naming_the_line(
    decisions: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = decisions.read_text().splitlines(keepends=True)
    lines.insert(3, '{"type": "decision", "decision_id": \n')
    decisions.write_text("".join(lines))

    assert cli("--rules", str(new_rules), "--decisions", str(decisions)) == 2
    captured = capsys.readouterr()
    assert f"{decisions}:4: not valid JSON" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_malformed_decision_record_exits_2_naming_the_line(
    tmp_path: Path,
    records: list[dict[str, Any]],
    new_rules: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del records[2]["request"]["principal"]
    path = write_lines(tmp_path / "d.jsonl", records)

    assert cli("--rules", str(new_rules), "--decisions", str(path)) == 2
    assert f"{path}:3: request.principal is not an object" in capsys.readouterr().err


def test_non_object_line_and_unreadable_file_exit_2(
    tmp_path: Path, new_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = tmp_path / "list.jsonl"
    listed.write_text("\n[1, 2]\n")
    assert cli("--rules", str(new_rules), "--decisions", str(listed)) == 2
    assert f"{listed}:2: not a JSON object" in capsys.readouterr().err

    assert cli("--rules", str(new_rules), "--decisions", str(tmp_path / "nope.jsonl")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bundle_that_fails_to_load_exits_2_listing_every_problem(
    decisions: Path, write_rules: WriteRules, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: p
            resources: [table]
            actions: [read]
            rules:
              - {id: a, effect: allow, when: "principal.attr.nope == 1"}
              - {id: b, effect: permit}
        """,
    )

    assert cli("--rules", str(broken), "--decisions", str(decisions)) == 2
    err = capsys.readouterr().err
    assert "policy bundle has 2 problem(s)" in err
    assert "policies.yaml:" in err
    assert "[p/a]" in err
    assert "[p/b]" in err


def test_records_before_policy_verdict_compare_with_the_approval_the_policy_asked_for(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: iam
            resources: [role]
            actions: [grant]
            rules:
              - id: two-eyes
                effect: require_approval
                roles: [admin]
                approval: {approvers: {roles: [security]}}
        """,
    )
    engine = Engine(load_bundle(rules), clock=fixed_clock(DAY))
    request = ask(
        Principal("ivan@acme.io", PrincipalKind.HUMAN, ("admin",)), "grant", Resource("role")
    )
    base = record_for(engine, "d-pending", request)
    del base["policy_verdict"]
    consumed = {
        **base,
        "decision_id": "d-consumed",
        "verdict": "ALLOW",
        "approval_id": "apr_0123",
        "reasons": ["approved: apr_0123"],
    }
    refused = {
        **base,
        "decision_id": "d-refused",
        "verdict": "DENY",
        "approval_id": "apr_0456",
        "reasons": ["approval_expired"],
    }
    pending = {**base, "approval_id": "apr_0789"}

    report = replay([consumed, refused, pending], engine.bundle)

    assert (report.replayed, report.unchanged, report.changed) == (3, 3, 0)


def test_record_without_attribute_names_replays_only_on_kept_values(
    write_rules: WriteRules,
) -> None:
    old = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: p
            resources: [table]
            actions: [read]
            rules: [{id: allow, effect: allow}]
        """,
    )
    new = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: p
            resources: [table]
            actions: [read]
            rules:
              - {id: allow, effect: allow}
              - {id: ops-only, effect: deny, when: "principal.attr.team != 'ops-7731'"}
          - id: q
            resources: [table]
            actions: [export]
            rules:
              - {id: allow, effect: allow, when: "!has(principal.attr.clearance)"}
        """,
    )
    engine = Engine(load_bundle(old), clock=fixed_clock(DAY))
    reads = record_for(engine, "d-read", ask(analyst(), "read", table()))
    exports = record_for(engine, "d-export", ask(analyst(), "export", table()))
    for legacy in (reads, exports):
        del legacy["request"]["attribute_names"]

    report = replay([reads, exports], load_bundle(new))

    # team is kept, so its value is known; clearance is not, and without attribute_names an
    # absent clearance cannot be told from one the record did not keep.
    assert report.changed_ids == {"ALLOW -> DENY": ["d-read"]}
    assert dict(report.missing) == {Missing("principal.attr.clearance", "no_attribute_names"): 1}


def test_attribute_the_new_schema_no_longer_declares_is_reported_as_rejected(
    records: list[dict[str, Any]], write_rules: WriteRules
) -> None:
    narrower = write_rules(
        schema=SCHEMA.replace(", clearance: int", ""),
        policies=OLD.replace("[read, export]", "[read]"),
    )

    report = replay(
        [r for r in records if r.get("decision_id") == "d-read-plain"], load_bundle(narrower)
    )

    [change] = report.examples["ALLOW -> INVALID_REQUEST"]
    assert change.invalid_field == "principal.attributes.clearance"
    assert dict(report.decided_by) == {"(request rejected)": {"ALLOW -> INVALID_REQUEST": 1}}


def test_decisions_are_replayed_at_their_recorded_time(write_rules: WriteRules) -> None:
    old = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: doors
            resources: [door]
            actions: [open]
            rules: [{id: allow, effect: allow}]
        """,
    )
    new = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: doors
            resources: [door]
            actions: [open]
            rules:
              - {id: allow, effect: allow}
              - {id: closed-at-night, effect: deny, when: "now.getHours('UTC') >= 22"}
        """,
    )
    engine = Engine(load_bundle(old), clock=fixed_clock(DAY))
    request = ask(Principal("a", PrincipalKind.HUMAN), "open", Resource("door", "front"))
    day = record_for(engine, "d-day", request, at="2026-03-02T14:00:00.000Z")
    night = record_for(engine, "d-night", request, at="2026-03-02T23:30:00.000Z")

    report = replay([day, night], load_bundle(new))

    assert report.changed_ids == {"ALLOW -> DENY": ["d-night"]}
    assert report.examples["ALLOW -> DENY"][0].decided_by == ("doors/closed-at-night",)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        (
            "has(principal.attr.owner) && principal.attr.owner != principal.id",
            {"principal.attr.owner"},
        ),
        (
            "resource.attr.tenant == context.attr.ticket",
            {"resource.attr.tenant", "context.attr.ticket"},
        ),
        (
            "payload.spec.replicas > 3 && payload.items[0] == 1",
            {"payload.spec.replicas", "payload.items"},
        ),
        ("principal.attr.?team.orValue('') == ''", {"principal.attr.team"}),
        (
            "now - context.time > duration('5m') && context.source_ip != ''",
            {"context.time", "context.source_ip"},
        ),
        ("principal.attr['team'] == 'x'", {"principal.attr"}),
        ("has(principal.attr)", {"principal.attr"}),
        ("[principal].exists(p, p.attr.team == 'x')", {"principal"}),
        ("size(payload) > 0", {"payload"}),
        (".principal.attr.team == 'x'", {"principal.attr.team"}),  # leading dot: the root
        ("f(x).principal == 1", set()),  # a member of something else
        ("principal.roles[0] == 'admin' || size(principal.roles) > 1", {"principal.roles"}),
        # Text in strings and comments reads nothing.
        ("'principal.attr.secret' == resource.id // principal.attr.comment", set()),
        (r"r'C:\' == principal.id", set()),
        ("'admin' in principal.roles && principal.roles.exists(r, r == 'x')", set()),
        ("resource.fields.exists(f, f.payload == 'x') && resource.tags.size() > 0", set()),
    ],
)
def test_cel_reads_finds_every_attribute_a_condition_reads(source: str, reads: set[str]) -> None:
    assert {r.label for r in cel_reads(source)} == reads


def test_unresolvable_access_makes_the_decision_not_replayable(
    records: list[dict[str, Any]], write_rules: WriteRules
) -> None:
    sneaky = write_rules(
        schema=SCHEMA,
        policies="""
        policies:
          - id: data
            resources: [table]
            actions: [read]
            rules:
              - {id: allow, effect: allow}
              - {id: odd, effect: deny, when: "[principal].exists(p, p.attr.team == 'x')"}
        """,
    )

    report = replay(
        [r for r in records if r.get("decision_id") == "d-read-plain"], load_bundle(sneaky)
    )

    assert dict(report.missing) == {Missing("principal", "unresolved"): 1}
    assert report.replayed == 0


# --- genuinely recorded: a real server with the audit log on, exported by `audit export` -----


def to_proto(request: Request) -> pb.CheckRequest:
    def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        out.update(values)
        return out

    p, r = request.principal, request.resource
    kinds = {
        PrincipalKind.HUMAN: pb.PRINCIPAL_KIND_HUMAN,
        PrincipalKind.AGENT: pb.PRINCIPAL_KIND_AGENT,
        PrincipalKind.SERVICE: pb.PRINCIPAL_KIND_SERVICE,
    }
    return pb.CheckRequest(
        principal=pb.Principal(
            id=p.id, kind=kinds[p.kind], roles=p.roles, attributes=struct(p.attributes)
        ),
        action=request.action,
        resource=pb.Resource(
            kind=r.kind,
            id=r.id,
            attributes=struct(r.attributes),
            fields=[pb.Field(path=f.path, tags=f.tags) for f in r.fields],
        ),
        context=pb.Context(environment=request.context.environment),
        payload=struct(request.payload),
    )


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the recorded replay test needs a real Redis at {url}: {exc}")
    prefix = f"signoff-test:{uuid.uuid4().hex}:"
    yield url, prefix
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
    client.close()


def test_replay_of_a_genuinely_recorded_export(
    old_rules: Path,
    new_rules: Path,
    tmp_path: Path,
    redis_prefix: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from signoff.cli import main as signoff_main

    url, prefix = redis_prefix
    audit = AuditLog(url, audit_key(KEY), prefix=prefix)
    running = app.start(
        Engine(load_bundle(old_rules), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=VIEWS.hash_key_id,
        audit=audit,
        views=VIEWS,
    )
    ids: dict[str, str] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for name, request in CASES.items():
                ids[name] = stub.Check(to_proto(request), timeout=10).decision_id
        assert audit.flush(10)
    finally:
        running.stop(grace=None)
        audit.close(timeout=5)
    export = tmp_path / "export.jsonl"
    argv = ["audit", "export", "--redis-url", url, "--redis-prefix", prefix, "-o", str(export)]
    assert signoff_main(argv) == 0
    capsys.readouterr()

    code = cli("--rules", str(new_rules), "--decisions", str(export), "--json")
    doc = json.loads(capsys.readouterr().out)

    assert code == 1
    expected = {k: [ids[name] for name in names] for k, names in EXPECTED_CHANGES.items()}
    assert {k: v["decision_ids"] for k, v in doc["transitions"].items()} == expected
    assert (doc["total"], doc["replayed"], doc["not_replayable"]) == (13, 10, 3)
    assert {m["attribute"]: m["why"] for m in doc["not_replayable_by_attribute"]} == {
        m.attribute: m.why for m in EXPECTED_MISSING
    }
    assert Verdict.MASK.name in doc["examples"]["MASK -> MASK"][0]["old"]


def test_masked_payload_values_no_rule_reads_do_not_break_replay(old_rules: Path) -> None:
    # rows is an int the record keeps, here redacted to a string by the plan; no rule of the
    # bundle reads it, so the masked stand-in must not reach the schema check as a value.
    engine = Engine(load_bundle(old_rules), clock=fixed_clock(DAY))
    request = ask(analyst(), "read", table(FieldRef("rows", ("pii",))), {"rows": 5})
    recorded = record_for(engine, "d-masked-rows", request)
    assert recorded["request"]["payload"] == {"rows": "[REDACTED]"}

    report = replay([recorded], load_bundle(old_rules))

    assert (report.replayed, report.unchanged, report.changed) == (1, 1, 0)


def test_replay_reads_standard_input_and_decides_on_the_backend_asked_for(
    decisions: Path,
    new_rules: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(decisions.read_bytes())))

    argv = ("--rules", str(new_rules), "--decisions", "-", "--backend", "cel-python", "--json")
    assert cli(*argv, "--max-changes", "6") == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: v["decision_ids"] for k, v in doc["transitions"].items()} == EXPECTED_CHANGES


# --- masking operators and their options -------------------------------------------------

CARDS_SCHEMA = """
schema:
  payload: {card: string}
"""
CARDS = """
policies:
  - id: cards
    resources: [table]
    actions: [export]
    rules:
      - {id: allow-all, effect: allow}
      - id: mask-pan
        effect: mask
        mask: [{tags: [pci], operator: OPERATOR}]
"""
REDACT = "redact"
# As strong as redact by path, yet leaves 12 of a 16-digit card number readable.
WEAKER = "partial, keep_last: 12"
CARD_EXPORT = Request(
    Principal("alice@acme.io", PrincipalKind.HUMAN, ("analyst",)),
    "export",
    Resource("table", "crm.cards", {}, (FieldRef("customers.*.card_number", ("pci",)),)),
    Context(environment="prod"),
    {},
)


def cards(write_rules: WriteRules, operator: str) -> Path:
    return write_rules(schema=CARDS_SCHEMA, policies=CARDS.replace("OPERATOR", operator))


def test_weakening_a_masking_operator_on_the_same_path_is_a_change(
    write_rules: WriteRules,
    tmp_path: Path,
    redis_prefix: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from signoff.cli import main as signoff_main

    url, prefix = redis_prefix
    audit = AuditLog(url, audit_key(KEY), prefix=prefix)
    running = app.start(
        Engine(load_bundle(cards(write_rules, REDACT)), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=VIEWS.hash_key_id,
        audit=audit,
        views=VIEWS,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            pb_grpc.DecisionServiceStub(channel).Check(to_proto(CARD_EXPORT), timeout=10)
        assert audit.flush(10)
    finally:
        running.stop(grace=None)
        audit.close(timeout=5)
    export = tmp_path / "export.jsonl"
    argv = ["audit", "export", "--redis-url", url, "--redis-prefix", prefix, "-o", str(export)]
    assert signoff_main(argv) == 0
    capsys.readouterr()
    weaker = cards(write_rules, WEAKER)

    code = cli("--rules", str(weaker), "--decisions", str(export), "--json")
    doc = json.loads(capsys.readouterr().out)
    cli("--rules", str(weaker), "--decisions", str(export))
    text = capsys.readouterr().out

    assert code == 1
    assert (doc["replayed"], doc["changed"]) == (1, 1)
    [example] = doc["examples"]["MASK -> MASK"]
    assert example["masked_changed"] == [
        {
            "path": "customers.*.card_number",
            "old": "redact",
            "new": "partial(first 0, last 12)",
        }
    ]
    assert "masked differently customers.*.card_number redact -> partial(first 0, last 12)" in text
    assert cli("--rules", str(cards(write_rules, REDACT)), "--decisions", str(export)) == 0


def test_records_from_before_masking_operators_still_replay_by_path(
    write_rules: WriteRules,
) -> None:
    engine = Engine(load_bundle(cards(write_rules, REDACT)), clock=fixed_clock(DAY))
    old = record_for(engine, "d-card", CARD_EXPORT)
    del old["masking"]

    report = replay([old], load_bundle(cards(write_rules, WEAKER)))

    # Such a record cannot tell redact from partial: the same paths count as unchanged.
    assert (report.replayed, report.unchanged, report.changed) == (1, 1, 0)


def test_a_malformed_masking_entry_is_named(write_rules: WriteRules) -> None:
    engine = Engine(load_bundle(cards(write_rules, REDACT)), clock=fixed_clock(DAY))
    bad = record_for(engine, "d-card", CARD_EXPORT)
    bad["masking"][0]["keep_last"] = "12"

    with pytest.raises(MalformedRecord, match=r"masking\[0\] keep_first and keep_last"):
        replay([bad], load_bundle(cards(write_rules, REDACT)))
