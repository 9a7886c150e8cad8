"""The web inbox in a real browser: OIDC login at a real provider, live list, approve, re-check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from signoff.approvals.model import State
from signoff.engine.evaluator import Engine
from signoff.identity import NoAuthenticator
from signoff.policy.loader import load_bundle
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.support import Server, lab_files, serve
from tests.http.inbox_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CLIENT_ID,
    CLIENT_SECRET,
    SESSION_SECRET,
    Gateway,
    core_for,
    ensure_chromium,
    free_port,
    gateway,
    oidc_provider,
    staging_read,
)

# `SIGNOFF_SCREENSHOTS=docs/img` refreshes the screenshots the docs show.
SHOTS = os.environ.get("SIGNOFF_SCREENSHOTS", "")
PAYLOAD = {"target": "quarterly numbers for the board", "rows": 1200}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    rule = "      - id: staging-needs-a-reviewer\n"
    for name, text in lab_files().items():
        # With the compliance impact declared, so the page (and its screenshot) shows it.
        text = text.replace(rule, rule + "        labels: {compliance: [soc2, gdpr]}\n")
        (tmp_path / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    with serve(tmp_path, auth=NoAuthenticator()) as running:
        yield running


@pytest.fixture
def web(server: Server, tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with oidc_provider(f"{base}/inbox/login/callback") as issuer:
        settings = {
            "public_url": base,
            "session_secret": SESSION_SECRET,
            "oidc_issuer": issuer,
            "oidc_client_id": CLIENT_ID,
            "oidc_client_secret": CLIENT_SECRET,
            "oidc_scopes": "openid email signoff",
        }
        engine = Engine(load_bundle(tmp_path, backend="cel-expr"))
        with gateway(core_for(server, engine, settings), port) as running:
            yield running


def shot(tmp_path: Path, name: str) -> str:
    return str(Path(SHOTS) / name if SHOTS else tmp_path / name)


def test_reviewer_signs_in_with_oidc_approves_and_the_caller_is_allowed(
    server: Server, web: Gateway, browser: Browser, tmp_path: Path
) -> None:
    first = server.ask(staging_read(PAYLOAD))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{web.url}/inbox")
    page.click("#oidc-login")
    # The provider's own login page (any password; the login name is the subject).
    page.fill("input[name=login]", "rita")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/inbox")
    expect(page.locator(f"a[href='/inbox/a/{first}']")).to_be_visible()

    # Live: a request made while the inbox is open appears without a reload, on top.
    second = server.ask(staging_read({"target": "the churn report", "rows": 40}, who="tom"))
    expect(page.locator(f"a[href='/inbox/a/{second}']")).to_be_visible(timeout=10_000)
    assert page.locator(".row a").first.get_attribute("href") == f"/inbox/a/{second}"
    page.screenshot(path=shot(tmp_path, "inbox.png"), full_page=True)

    page.click(f"a[href='/inbox/a/{first}']")
    expect(page.locator("#payload")).to_contain_text("quarterly numbers for the board")
    expect(page.locator("#labels")).to_contain_text("soc2")
    page.screenshot(path=shot(tmp_path, "approval.png"), full_page=True)
    page.fill("#reason", "matches the board request")
    page.click("#approve")
    expect(page.locator("#state")).to_have_text("approved")
    page.close()

    record = server.record(first)
    assert record.state is State.APPROVED
    assert [(v.approver_id, v.reason) for v in record.votes] == [
        ("rita", "matches the board request")
    ]
    assert server.check(staging_read(PAYLOAD), first).verdict == pb.VERDICT_ALLOW


def test_the_approval_page_fits_a_phone(
    server: Server, web: Gateway, browser: Browser, tmp_path: Path
) -> None:
    approval_id = server.ask(staging_read(PAYLOAD))
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(f"{web.url}/inbox/login?next=/inbox/a/{approval_id}")
    page.fill("input[name=login]", "rita")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    expect(page.locator("#approve")).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling on a phone.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.screenshot(path=shot(tmp_path, "approval-phone.png"), full_page=True)
    page.close()


def test_a_callback_for_a_login_not_started_here_is_refused(web: Gateway) -> None:
    with web.client() as mallory:
        reply = mallory.get("/inbox/login/callback", params={"state": "guessed", "code": "stolen"})
        assert reply.status_code == 401
        assert "signoff_session" not in mallory.cookies
        assert "Sign in to review" in mallory.get("/inbox").text


def test_after_login_the_browser_never_leaves_for_another_site(
    web: Gateway, browser: Browser
) -> None:
    page = browser.new_page()
    page.goto(f"{web.url}/inbox/login?next=//evil.example/steal")
    page.fill("input[name=login]", "nobody")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/inbox")
    # Signed in, with no role that may decide anything: an empty inbox.
    expect(page.locator(".empty")).to_be_visible()
    page.close()
