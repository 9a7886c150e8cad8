"""Every transition is an event (type, from, to, actor, reason); no event carries a payload value."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from signoff.v1 import approvals_pb2 as apb
from tests.approvals.conftest import MakeServer
from tests.approvals.support import DevIdP, Server, bearer, lab_request, staff
from tests.server.harness import TIMEOUT, struct

EVENT_FIELDS = {"type", "approval_id", "from", "to", "actor", "at", "reason", "summary"}
Story = Callable[[Server, DevIdP], tuple[str, list[tuple[str, str, str, str, str]]]]


def _consumed(server: Server, idp: DevIdP) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    approval_id = server.ask(lab_request())
    server.approve(approval_id, idp.token("Rita@Acme.io", "reviewer"), "ticket CHG-1 checked")
    server.check(lab_request(), approval_id)
    return approval_id, [
        ("approval.created", "", "pending", "sam@acme.io", ""),
        ("approval.voted", "pending", "pending", "rita@acme.io", "ticket CHG-1 checked"),
        ("approval.approved", "pending", "approved", "rita@acme.io", "ticket CHG-1 checked"),
        ("approval.consumed", "approved", "consumed", "sam@acme.io", ""),
    ]


def _rejected(server: Server, idp: DevIdP) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    approval_id = server.ask(lab_request("prod"))
    server.approve(approval_id, idp.token("erin@acme.io", "security"), "fine by me")
    server.reject(approval_id, idp.token("frank@acme.io", "security"), "no change ticket")
    return approval_id, [
        ("approval.created", "", "pending", "sam@acme.io", ""),
        ("approval.voted", "pending", "pending", "erin@acme.io", "fine by me"),
        ("approval.rejected", "pending", "rejected", "frank@acme.io", "no change ticket"),
    ]


def _cancelled(server: Server, idp: DevIdP) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    approval_id = server.ask(lab_request())
    server.approve(approval_id, idp.token("rita@acme.io", "reviewer"))
    server.cancel(approval_id, idp.token("sam@acme.io"), "not needed any more")
    return approval_id, [
        ("approval.created", "", "pending", "sam@acme.io", ""),
        ("approval.voted", "pending", "pending", "rita@acme.io", "reviewed"),
        ("approval.approved", "pending", "approved", "rita@acme.io", "reviewed"),
        ("approval.cancelled", "approved", "cancelled", "sam@acme.io", "not needed any more"),
    ]


STORIES: dict[str, Story] = {"consumed": _consumed, "rejected": _rejected, "cancelled": _cancelled}


@pytest.mark.parametrize("story", list(STORIES))
def test_every_transition_appends_one_event_to_both_streams(
    lab: Server, idp: DevIdP, story: str
) -> None:
    approval_id, expected = STORIES[story](lab, idp)

    own = lab.events(approval_id)
    shared = lab.global_events(approval_id)

    assert own == shared
    assert [(e["type"], e["from"], e["to"], e["actor"], e["reason"]) for e in own] == expected
    times = []
    for event in own:
        assert set(event) == EVENT_FIELDS
        assert event["approval_id"] == approval_id
        summary = json.loads(event["summary"])
        assert summary["requester_id"] == "sam@acme.io"
        times.append(dt.datetime.fromisoformat(event["at"]))
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset() == dt.timedelta(0) for t in times)


# Values that must never reach an event, a summary or a log line.
MASKED = {
    "email": "canary-mail-7f3a",  # local part of an email-masked column
    "card": "4000-canary-card-91b2",  # a redacted column
    "id": "canary-cust-55c1",  # a hashed column
}
UNMASKED = {
    "country": "canary-country-e0d4",  # an untagged column: reviewers see it
    "target": "s3://canary-target-a9f1/out.parquet",  # a declared payload key
    "memo": "canary-memo-3b7e",  # an undeclared, nested payload key
}
ATTRIBUTES = {
    "note": "canary-note-c2d8",  # principal attribute
    "label": "canary-label-d41f",  # resource attribute
    "ticket": "canary-ticket-8e6b",  # context attribute
    "source_ip": "canary-ip-77aa",  # context source ip
}


def seeded(n: int) -> Any:
    request = lab_request(
        who=staff("sam@acme.io", note=ATTRIBUTES["note"]),
        payload={
            "target": UNMASKED["target"],
            "rows": n,
            "extra": {"memo": UNMASKED["memo"]},
            "customers": [
                {
                    "id": MASKED["id"],
                    "email": f"{MASKED['email']}@example.com",
                    "card": MASKED["card"],
                    "country": UNMASKED["country"],
                }
            ],
        },
    )
    request.resource.attributes.CopyFrom(struct({"tenant": "acme", "label": ATTRIBUTES["label"]}))
    request.context.attributes.CopyFrom(struct({"ticket": ATTRIBUTES["ticket"]}))
    request.context.source_ip = ATTRIBUTES["source_ip"]
    return request


def assert_no_canary(text: str, canaries: dict[str, str], where: str) -> None:
    found = {name: value for name, value in canaries.items() if value in text}
    assert not found, f"{where} carries {found}"


def test_no_event_summary_or_log_carries_payload_or_attribute_values(
    lab: Server, idp: DevIdP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rita = idp.token("rita@acme.io", "reviewer")
    used = lab.ask(seeded(1))
    lab.approve(used, rita)
    assert lab.check(seeded(1), used).approval_id == used
    rejected = lab.ask(seeded(2))
    lab.reject(rejected, rita)
    cancelled = lab.ask(seeded(3))
    lab.cancel(cancelled, idp.token("sam@acme.io"))
    everything = {**MASKED, **UNMASKED, **ATTRIBUTES}

    streams = [k for k in lab.all_keys() if k.endswith("events")]
    assert len(streams) == 4  # the shared stream and one per approval
    for stream in streams:
        for fields in lab.stream(stream):
            assert_no_canary(json.dumps(fields, ensure_ascii=False), everything, stream)
    for approval_id in (used, rejected, cancelled):
        assert_no_canary(lab.raw(approval_id)["summary"], everything, "summary")
    # Masked values and attributes are stored nowhere at all: the view holds them masked and
    # the digest is keyed.
    assert_no_canary(lab.dump(), {**MASKED, **ATTRIBUTES}, "Redis")
    assert_no_canary(caplog.text, everything, "the logs")
    assert caplog.records  # the server did log, in this process


def test_reviewers_see_the_payload_masked_and_no_attributes(lab: Server, idp: DevIdP) -> None:
    approval_id = lab.ask(seeded(1))

    seen = lab.approvals.GetApproval(
        apb.GetApprovalRequest(approval_id=approval_id),
        metadata=bearer(idp.token("rita@acme.io", "reviewer")),
        timeout=TIMEOUT,
    ).approval

    payload = json_format.MessageToDict(seen.request.payload)
    [row] = payload["customers"]
    assert row["email"].endswith("@example.com")
    assert MASKED["email"] not in row["email"]
    assert row["card"] == "[REDACTED]"
    assert row["id"].startswith("hmac-sha256:")
    # What no rule masks is shown as it is: that is what the reviewer signs off on.
    assert row["country"] == UNMASKED["country"]
    assert payload["target"] == UNMASKED["target"]
    assert {(f.path, f.operator) for f in seen.request.masking_plan.fields} == {
        ("customers.*.card", 2),
        ("customers.*.email", 4),
        ("customers.*.id", 3),
    }
    wire = seen.SerializeToString().decode("utf-8", "replace")
    assert_no_canary(wire, {**MASKED, **ATTRIBUTES}, "GetApproval")


def test_watch_follows_every_change_and_ends_when_final(
    make_server: MakeServer, lab_rules: Path, idp: DevIdP
) -> None:
    lab = make_server(lab_rules, watch_poll_ms=200)
    approval_id = lab.ask(lab_request("prod"))
    stream = lab.approvals.WatchApproval(
        apb.WatchApprovalRequest(approval_id=approval_id),
        metadata=bearer(idp.token("sam@acme.io")),
        timeout=TIMEOUT,
    )
    seen: list[tuple[int, int]] = []
    started = threading.Event()

    def follow() -> None:
        for message in stream:
            seen.append((message.approval.state, len(message.approval.votes)))
            started.set()

    follower = threading.Thread(target=follow)
    follower.start()
    assert started.wait(TIMEOUT)
    lab.approve(approval_id, idp.token("erin@acme.io", "security"))
    lab.approve(approval_id, idp.token("frank@acme.io", "security"))
    lab.check(lab_request("prod"), approval_id)
    follower.join(TIMEOUT)

    assert not follower.is_alive(), "the watch did not end on a final state"
    story = [
        (apb.APPROVAL_STATE_PENDING, 0),
        (apb.APPROVAL_STATE_PENDING, 1),
        (apb.APPROVAL_STATE_APPROVED, 2),
        (apb.APPROVAL_STATE_CONSUMED, 2),
    ]
    assert seen[0] == story[0]
    assert seen[-1] == story[-1]
    assert seen == [s for s in story if s in seen]  # in order, nothing invented
