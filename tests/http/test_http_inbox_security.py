"""The web inbox over real HTTP: CSRF, escaping, headers, cookies and eligibility."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from signoff.approvals.model import State
from signoff.engine.evaluator import Engine
from signoff.http import inbox
from signoff.http.security import SecureHeaders, session_identity, sessions_for
from signoff.identity import NoAuthenticator
from signoff.policy.loader import load_bundle
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import Server, lab_files, serve
from tests.http.inbox_support import (
    SESSION_SECRET,
    Gateway,
    core_for,
    csrf_of,
    dev_login,
    gateway,
    served,
    staging_read,
)
from tests.server.harness import closed_port

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def lab_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inbox-lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def server(lab_rules: Path) -> Iterator[Server]:
    with serve(lab_rules, auth=NoAuthenticator()) as running:
        yield running


@pytest.fixture
def web(server: Server, lab_rules: Path) -> Iterator[Gateway]:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    settings = {"dev_login": True, "session_secret": SESSION_SECRET}
    with gateway(core_for(server, engine, settings)) as running:
        yield running


def vote(client: httpx.Client, approval_id: str, **form: str) -> httpx.Response:
    return client.post(f"/inbox/a/{approval_id}/vote", data=form)


def test_reviewer_approves_from_the_inbox_and_the_recheck_is_allowed(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        assert approval_id in rita.get("/inbox").text
        reply = vote(
            rita, approval_id, csrf=csrf_of(rita), decision="approve", reason="looks right"
        )
        assert reply.status_code == 303
        assert "approved" in rita.get(f"/inbox/a/{approval_id}").text
    assert server.state(approval_id) is State.APPROVED
    assert server.check(staging_read(), approval_id).verdict == pb.VERDICT_ALLOW


def test_vote_without_the_csrf_token_is_refused(server: Server, web: Gateway) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        missing = vote(rita, approval_id, decision="approve", reason="forged")
        wrong = vote(rita, approval_id, csrf="not-the-token", decision="approve", reason="x")
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert server.state(approval_id) is State.PENDING
    assert server.record(approval_id).votes == ()


def test_vote_from_another_origin_is_refused_even_with_the_token(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        token = csrf_of(rita)
        reply = rita.post(
            f"/inbox/a/{approval_id}/vote",
            data={"csrf": token, "decision": "approve", "reason": "x"},
            headers={"origin": "https://evil.example"},
        )
    assert reply.status_code == 403
    assert server.state(approval_id) is State.PENDING


def test_attacker_controlled_values_are_escaped_in_list_and_page(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging_read({"target": XSS, "rows": 1}, who=f"sam{XSS}"))
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        pages = [rita.get("/inbox").text, rita.get(f"/inbox/a/{approval_id}").text]
    for html in pages:
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert" in html
    # The payload is shown, escaped, inside the page: the reviewer still sees what will run.
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1]


def test_pages_carry_a_strict_content_security_policy(web: Gateway) -> None:
    with web.client() as anyone:
        reply = anyone.get("/inbox")
    csp = reply.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in reply.text
    assert " style=" not in reply.text


def test_session_cookie_is_httponly_and_samesite(web: Gateway) -> None:
    with web.client() as rita:
        reply = rita.post("/inbox/login/dev", data={"subject": "rita", "roles": "reviewer"})
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


def test_secure_cookie_with_host_prefix_behind_https(server: Server, lab_rules: Path) -> None:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    settings = {
        "dev_login": True,
        "session_secret": SESSION_SECRET,
        "public_url": "https://signoff.example",
    }
    with gateway(core_for(server, engine, settings)) as web, web.client() as rita:
        reply = rita.post("/inbox/login/dev", data={"subject": "rita", "roles": "reviewer"})
    cookie = reply.headers["set-cookie"].lower()
    assert cookie.startswith("__host-signoff_session=")
    assert "; secure" in cookie
    assert "strict-transport-security" in reply.headers


def test_a_tampered_session_cookie_is_no_session(server: Server, web: Gateway) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as mallory:
        dev_login(mallory, "mallory")
        value = mallory.cookies["signoff_session"]
        mallory.cookies.clear()
        mallory.cookies.set("signoff_session", value[:-3] + "AAA")
        page = mallory.get(f"/inbox/a/{approval_id}")
    assert page.status_code == 401
    assert "Sign in" in page.text


def test_reviewer_without_the_role_sees_nothing_and_cannot_vote(
    server: Server, web: Gateway
) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as nora:
        dev_login(nora, "nora", "staff")
        assert approval_id not in nora.get("/inbox").text
        assert nora.get(f"/inbox/a/{approval_id}").status_code == 403
        reply = vote(nora, approval_id, csrf=csrf_of(nora), decision="approve", reason="me")
    assert reply.status_code == 403
    assert server.state(approval_id) is State.PENDING


def test_the_requester_cannot_approve_its_own_request(server: Server, web: Gateway) -> None:
    approval_id = server.ask(staging_read(who="sam"))
    with web.client() as sam:
        dev_login(sam, "sam", "reviewer")
        reply = vote(sam, approval_id, csrf=csrf_of(sam), decision="approve", reason="mine")
    assert reply.status_code == 403
    assert "requester" in reply.text
    assert server.state(approval_id) is State.PENDING


@pytest.mark.parametrize(
    ("form", "field"),
    [({"decision": "approve", "reason": "  "}, "reason"), ({"decision": "maybe"}, "decision")],
)
def test_bad_vote_input_is_a_4xx_naming_the_field(
    server: Server, web: Gateway, form: dict[str, str], field: str
) -> None:
    approval_id = server.ask(staging_read())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        reply = vote(rita, approval_id, csrf=csrf_of(rita), **form)
    assert reply.status_code == 400
    assert f"<code>{field}</code>" in reply.text
    assert server.state(approval_id) is State.PENDING


def test_the_dev_login_is_off_unless_asked_for(server: Server, lab_rules: Path) -> None:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    core = core_for(server, engine, {"session_secret": SESSION_SECRET})
    with gateway(core) as web, web.client() as anyone:
        refused = anyone.post("/inbox/login/dev", data={"subject": "root", "roles": "x"})
        login_page = anyone.get("/inbox")
    assert login_page.status_code == 200
    assert "Sign in to review" in login_page.text
    assert "Development login" not in login_page.text
    assert refused.status_code == 404
    assert "set-cookie" not in refused.headers


def test_an_unreachable_provider_is_a_503_page_not_a_traceback(
    server: Server, lab_rules: Path
) -> None:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    settings = {
        "session_secret": SESSION_SECRET,
        "oidc_issuer": f"http://127.0.0.1:{closed_port()}",
        "oidc_client_id": "signoff-inbox",
    }
    with gateway(core_for(server, engine, settings)) as web, web.client() as anyone:
        reply = anyone.get("/inbox/login")
    assert reply.status_code == 503
    assert "Traceback" not in reply.text
    assert "unavailable" in reply.text


def test_session_identity_gives_other_routes_the_signed_in_reviewer(
    server: Server, lab_rules: Path
) -> None:
    engine = Engine(load_bundle(lab_rules, backend="cel-expr"))
    core = core_for(server, engine, {"dev_login": True, "session_secret": SESSION_SECRET})

    async def me(request: Request) -> JSONResponse:
        who = session_identity(request)
        return JSONResponse(None if who is None else [who.subject, sorted(who.roles)])

    app = Starlette(
        routes=[*inbox.routes(core), Route("/me", me)],
        middleware=[Middleware(SecureHeaders, sessions=sessions_for(core.settings))],
    )
    with served(app) as url, httpx.Client(base_url=url) as rita:
        assert rita.get("/me").json() is None
        dev_login(rita, "rita", "reviewer")
        assert rita.get("/me").json() == ["rita", ["reviewer"]]
