"""Listing pages over HTTP: each approval once, in expiry order, while new ones arrive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.identity import Authenticator
from tests.approvals.support import DevIdP, lab_files
from tests.http.approvals_support import Gateway, gateway, prod_export


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gw(tmp_path_factory: pytest.TempPathFactory, idp: DevIdP) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    auth: Authenticator = idp.authenticator()
    with gateway(Path(root), auth=auth) as running:
        yield running


def ask(gw: Gateway, n: int) -> str:
    return gw.ask(prod_export(target=f"s3://acme-exports/part-{n}.parquet"))


def test_pages_continue_after_the_last_entry_while_approvals_are_added(
    gw: Gateway, idp: DevIdP
) -> None:
    first_three = [ask(gw, n) for n in range(3)]
    seen: list[str] = []
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        page = http.get("/v1/approvals", params={"page_size": 2}).json()
        assert len(page["approvals"]) == 2
        assert page["next_page_token"]
        seen += [a["id"] for a in page["approvals"]]

        # Created while the reviewer pages: later expiry, so after the page in hand.
        added = [ask(gw, n) for n in range(3, 6)]

        for _ in range(10):  # bounded: a token that restarts the list would loop forever
            if not page["next_page_token"]:
                break
            params = {"page_size": 2, "page_token": page["next_page_token"]}
            page = http.get("/v1/approvals", params=params).json()
            seen += [a["id"] for a in page["approvals"]]

        everything = http.get("/v1/approvals").json()
    assert seen == first_three + added
    assert everything["next_page_token"] == ""
    assert [a["id"] for a in everything["approvals"]] == first_three + added
    expiries = [a["pending_expires_at"] for a in everything["approvals"]]
    assert expiries == sorted(expiries)


def test_a_page_skips_nothing_when_earlier_entries_are_decided_meanwhile(
    gw: Gateway, idp: DevIdP
) -> None:
    ids = [ask(gw, n) for n in range(4)]
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        page = http.get("/v1/approvals", params={"page_size": 2}).json()
        assert [a["id"] for a in page["approvals"]] == ids[:2]
        with gw.client(idp.token("sam@acme.io", "staff")) as requester:
            assert requester.post(f"/v1/approvals/{ids[0]}/cancel").status_code == 200
        params = {"page_size": 2, "page_token": page["next_page_token"]}
        rest = http.get("/v1/approvals", params=params).json()
    assert [a["id"] for a in rest["approvals"]] == ids[2:]
