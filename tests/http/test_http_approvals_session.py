"""The approvals JSON API accepts the web inbox's session, with its CSRF token for votes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.approvals.model import State
from signoff.engine.evaluator import Engine
from signoff.identity import NoAuthenticator
from signoff.policy.loader import load_bundle
from tests.approvals.support import Server, lab_files, serve
from tests.http.approvals_support import error_of
from tests.http.inbox_support import (
    SESSION_SECRET,
    Gateway,
    core_for,
    csrf_of,
    dev_login,
    gateway,
)
from tests.http.inbox_support import staging_read as staging

OTHER_SECRET = "another-servers-session-secret-0123456789"


@pytest.fixture(scope="module")
def lab_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("session-lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def server(lab_rules: Path) -> Iterator[Server]:
    with serve(lab_rules, auth=NoAuthenticator()) as running:
        yield running


def web_for(server: Server, lab_rules: Path, secret: str) -> Iterator[Gateway]:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    settings = {"dev_login": True, "session_secret": secret}
    with gateway(core_for(server, engine, settings)) as running:
        yield running


@pytest.fixture
def web(server: Server, lab_rules: Path) -> Iterator[Gateway]:
    yield from web_for(server, lab_rules, SESSION_SECRET)


@pytest.fixture
def other(server: Server, lab_rules: Path) -> Iterator[Gateway]:
    yield from web_for(server, lab_rules, OTHER_SECRET)


def test_a_signed_in_reviewer_lists_pending_approvals_with_the_session_cookie(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        listed = rita.get("/v1/approvals")
    assert listed.status_code == 200, listed.text
    assert approval_id in {a["id"] for a in listed.json()["approvals"]}


def test_without_a_session_or_token_the_list_is_unauthenticated(web: Gateway) -> None:
    with web.client() as anyone:
        listed = anyone.get("/v1/approvals")
    assert listed.status_code == 401


def test_a_vote_by_session_without_the_csrf_header_is_refused_and_not_counted(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        voted = rita.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ok"})
    assert voted.status_code == 403, voted.text
    assert error_of(voted)["reason"] == "csrf"
    assert server.record(approval_id).state is State.PENDING
    assert not server.record(approval_id).votes


def test_a_vote_by_session_with_a_wrong_csrf_token_is_refused(server: Server, web: Gateway) -> None:
    approval_id = server.ask(staging())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        voted = rita.post(
            f"/v1/approvals/{approval_id}/approve",
            json={"reason": "ok"},
            headers={"X-CSRF-Token": "not-this-sessions-token"},
        )
    assert voted.status_code == 403, voted.text
    assert error_of(voted)["reason"] == "csrf"
    assert server.record(approval_id).state is State.PENDING


def test_a_vote_by_session_with_the_sessions_csrf_token_is_counted(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        token = csrf_of(rita)
        voted = rita.post(
            f"/v1/approvals/{approval_id}/approve",
            json={"reason": "ticket ok"},
            headers={"X-CSRF-Token": token},
        )
    assert voted.status_code == 200, voted.text
    assert [v["approver_id"] for v in voted.json()["votes"]] == ["rita"]
    assert server.record(approval_id).state is State.APPROVED


def test_a_session_cookie_signed_with_another_servers_secret_is_unauthenticated(
    server: Server, web: Gateway, other: Gateway
) -> None:
    approval_id = server.ask(staging())
    with other.client() as elsewhere:
        dev_login(elsewhere, "rita", "reviewer")
        cookies = dict(elsewhere.cookies.items())
    assert cookies, "the other server set no session cookie"
    with web.client(cookies=cookies) as forged:
        listed = forged.get("/v1/approvals")
        voted = forged.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ok"})
    assert listed.status_code == 401, listed.text
    assert voted.status_code == 401, voted.text
    assert server.record(approval_id).state is State.PENDING
