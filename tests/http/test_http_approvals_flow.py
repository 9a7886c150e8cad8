"""Approvals over HTTP/JSON end to end: a real Check, real votes over HTTP, SSE, the re-check."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.approvals.model import State
from signoff.identity import Authenticator
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import DevIdP, lab_bot, lab_files, lab_request, staff
from tests.http.approvals_support import (
    Event,
    Gateway,
    error_of,
    gateway,
    prod_export,
    sse_events,
)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def authn(idp: DevIdP) -> Authenticator:
    return idp.authenticator()


@pytest.fixture(scope="module")
def lab_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def gw(lab_rules: Path, authn: Authenticator) -> Iterator[Gateway]:
    with gateway(lab_rules, auth=authn) as running:
        yield running


class Watcher:
    """A watch over HTTP followed in a thread of its own, keeping every event it gets."""

    def __init__(self, gw: Gateway, token: str, approval_id: str) -> None:
        self.events: list[Event] = []
        self.failure: BaseException | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(
            target=self._follow, args=(gw, token, approval_id), daemon=True
        )
        self._thread.start()
        assert self._opened.wait(10), "the watch sent nothing"

    def _follow(self, gw: Gateway, token: str, approval_id: str) -> None:
        try:
            path = f"/v1/approvals/{approval_id}/watch"
            with gw.client(token) as http, http.stream("GET", path) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                for event in sse_events(response):
                    self.events.append(event)
                    self._opened.set()
        except BaseException as exc:
            self.failure = exc
            self._opened.set()

    def ended(self, timeout: float = 10) -> bool:
        self._thread.join(timeout)
        assert self.failure is None, repr(self.failure)
        return not self._thread.is_alive()

    def approvals(self) -> list[tuple[str, int]]:
        """(state, number of votes) of each approval event."""
        docs = [json.loads(e.data) for e in self.events if e.kind == "approval"]
        return [(d["state"], len(d["votes"])) for d in docs]


def test_two_approvers_approve_over_http_the_watch_sees_each_vote_and_the_recheck_is_allowed(
    gw: Gateway, idp: DevIdP
) -> None:
    request = prod_export()
    approval_id = gw.ask(request)
    alice = idp.token("alice@acme.io", "security")
    bob = idp.token("bob@acme.io", groups=["sec-oncall"])
    watcher = Watcher(gw, idp.token("sam@acme.io", "staff"), approval_id)

    with gw.client(alice) as http:
        listed = http.get("/v1/approvals").json()["approvals"]
        assert [a["id"] for a in listed] == [approval_id]
        first = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ticket ok"})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "pending"
    assert [v["approver_id"] for v in first.json()["votes"]] == ["alice@acme.io"]
    assert gw.state(approval_id) is State.PENDING

    with gw.client(bob) as http:
        second = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "seen"})
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["state"] == "approved"
    assert body["approved_at"]
    assert body["grant_expires_at"]
    assert {v["approver_id"]: v["decision"] for v in body["votes"]} == {
        "alice@acme.io": "approve",
        "bob@acme.io": "approve",
    }
    assert gw.state(approval_id) is State.APPROVED

    # Approved is not final yet: the grant is used once, by the re-check.
    assert gw.check(request, approval_id).verdict == pb.VERDICT_ALLOW
    assert gw.state(approval_id) is State.CONSUMED

    assert watcher.ended(), "the watch did not end when the approval was used"
    assert watcher.approvals() == [("pending", 0), ("pending", 1), ("approved", 2), ("consumed", 2)]
    assert watcher.events[-1].kind == "end"
    assert json.loads(watcher.events[-1].data) == {"id": approval_id, "state": "consumed"}
    # Used once: a late vote on the consumed approval is a conflict, and changes nothing.
    with gw.client(idp.token("carl@acme.io", "security")) as http:
        late = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "me too"})
    assert late.status_code == 409
    assert error_of(late)["code"] == "failed_precondition"
    assert len(gw.record(approval_id).votes) == 2


def test_reviewers_see_the_payload_masked_by_the_decisions_plan(gw: Gateway, idp: DevIdP) -> None:
    approval_id = gw.ask(lab_request("prod"))
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        body = http.get(f"/v1/approvals/{approval_id}").json()
    customers = body["request"]["payload"]["customers"]
    text = json.dumps(body)
    assert "jane.doe@example.com" not in text
    assert "4111 1111 1111 1111" not in text
    assert customers[0]["country"] == "DE"
    assert body["request"]["environment"] == "prod"
    assert body["request"]["reasons"]
    assert body["requirement"]["quorum"] == 2
    assert {m["operator"] for m in body["request"]["masking_plan"]} >= {"email", "redact"}


def test_the_requester_cannot_approve_its_own_request(gw: Gateway, idp: DevIdP) -> None:
    approval_id = gw.ask(prod_export(who=staff("sam@acme.io", "security")))
    with gw.client(idp.token("sam@acme.io", "staff", "security")) as http:
        refused = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "mine"})
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "self_approval"
    assert gw.record(approval_id).votes == ()
    assert gw.state(approval_id) is State.PENDING


def test_an_agents_owner_cannot_approve_the_agents_request(gw: Gateway, idp: DevIdP) -> None:
    approval_id = gw.ask(prod_export(who=lab_bot(owner="olivia@acme.io")))
    with gw.client(idp.token("olivia@acme.io", "security")) as http:
        refused = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "my bot"})
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "self_approval"
    assert gw.record(approval_id).votes == ()


def test_a_caller_without_the_role_can_neither_see_nor_approve(gw: Gateway, idp: DevIdP) -> None:
    approval_id = gw.ask(prod_export())
    with gw.client(idp.token("rita@acme.io", "reviewer")) as http:
        assert http.get("/v1/approvals").json()["approvals"] == []
        seen = http.get(f"/v1/approvals/{approval_id}")
        voted = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "hm"})
    assert seen.status_code == 403
    assert voted.status_code == 403
    assert error_of(voted)["reason"] == "not_eligible"
    assert gw.record(approval_id).votes == ()


def test_a_reject_ends_the_approval_and_the_recheck_is_denied(gw: Gateway, idp: DevIdP) -> None:
    request = prod_export()
    approval_id = gw.ask(request)
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        rejected = http.post(f"/v1/approvals/{approval_id}/reject", json={"reason": "no ticket"})
        again = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "changed mind"})
    assert rejected.status_code == 200
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["final_reason"] == "no ticket"
    assert again.status_code == 409
    assert gw.state(approval_id) is State.REJECTED
    response = gw.check(request, approval_id)
    assert response.verdict == pb.VERDICT_DENY
    assert "approval_rejected" in response.reasons


def test_only_the_requester_side_may_cancel(gw: Gateway, idp: DevIdP) -> None:
    approval_id = gw.ask(prod_export())
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        refused = http.post(f"/v1/approvals/{approval_id}/cancel")
    assert refused.status_code == 403
    assert error_of(refused)["reason"] == "not_requester"
    assert gw.state(approval_id) is State.PENDING
    with gw.client(idp.token("sam@acme.io", "staff")) as http:
        cancelled = http.post(f"/v1/approvals/{approval_id}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert gw.state(approval_id) is State.CANCELLED
