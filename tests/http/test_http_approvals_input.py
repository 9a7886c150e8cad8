"""Bad input, missing credentials and unknown approvals get a 4xx JSON error naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.approvals.model import State
from signoff.identity import Authenticator
from tests.approvals.support import DevIdP, lab_files
from tests.http.approvals_support import Gateway, error_of, gateway, prod_export

UNKNOWN = "apr_" + "A" * 24


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def authn(idp: DevIdP) -> Authenticator:
    return idp.authenticator()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, authn: Authenticator) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    with gateway(Path(root), auth=authn) as running:
        yield running


@pytest.fixture(scope="module")
def pending(gw: Gateway) -> str:
    return gw.ask(prod_export(target="s3://acme-exports/input.parquet"))


@pytest.fixture(scope="module")
def alice(idp: DevIdP) -> str:
    return idp.token("alice@acme.io", "security")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/approvals"),
        ("GET", "/v1/approvals/{id}"),
        ("POST", "/v1/approvals/{id}/approve"),
        ("POST", "/v1/approvals/{id}/reject"),
        ("POST", "/v1/approvals/{id}/cancel"),
        ("GET", "/v1/approvals/{id}/watch"),
    ],
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Basic YWxpY2U6cHc=", "Bearer not.a.jwt"]
)
def test_every_route_refuses_a_missing_or_bad_credential_with_401(
    gw: Gateway, pending: str, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with gw.client() as http:
        response = http.request(
            method, path.format(id=pending), headers=headers, json={"reason": "x"}
        )
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert gw.record(pending).votes == ()


def test_an_agent_token_cannot_vote(gw: Gateway, pending: str, idp: DevIdP) -> None:
    with gw.client(idp.token("agent:helper", "security", kind="agent")) as http:
        response = http.post(f"/v1/approvals/{pending}/approve", json={"reason": "ok"})
    assert response.status_code == 403
    assert error_of(response)["reason"] == "not_human"
    assert gw.record(pending).votes == ()


@pytest.mark.parametrize("approval_id", [UNKNOWN, "nope", "apr_short", "%2e%2e"])
@pytest.mark.parametrize("action", ["", "/approve", "/watch"])
def test_an_unknown_approval_is_404(gw: Gateway, alice: str, approval_id: str, action: str) -> None:
    method = "POST" if action == "/approve" else "GET"
    with gw.client(alice) as http:
        response = http.request(
            method, f"/v1/approvals/{approval_id}{action}", json={"reason": "ok"}
        )
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_vote_body_past_64_kib_is_413_before_it_is_read(
    gw: Gateway, pending: str, alice: str, verb: str
) -> None:
    content = b'{"reason": "' + b"x" * 70_000 + b'"}'
    with gw.client(alice) as http:
        response = http.post(
            f"/v1/approvals/{pending}/{verb}",
            content=content,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413, response.text
    assert error_of(response)["field"] == "body"
    assert gw.state(pending) is State.PENDING


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b'{"reason": ""}', "application/json", "reason"),
        (b'{"reason": "   "}', "application/json", "reason"),
        (b"{}", "application/json", "reason"),
        (b'{"reason": 7}', "application/json", "reason"),
        (b'{"reason": "x" ', "application/json", "body"),
        (b"\xff\xfe", "application/json", "body"),
        (b'["reason"]', "application/json", "body"),
        (b'{"reason": "ok", "approver": "bob"}', "application/json", "approver"),
        (b"reason=ok", "application/x-www-form-urlencoded", "content-type"),
        (b'{"reason": "ok"}', "text/plain", "content-type"),
        (b'{"reason": "' + b"x" * 2001 + b'"}', "application/json", "reason"),
    ],
)
@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_bad_vote_body_is_400_naming_the_field(
    gw: Gateway,
    pending: str,
    alice: str,
    verb: str,
    content: bytes,
    content_type: str,
    field: str,
) -> None:
    with gw.client(alice) as http:
        response = http.post(
            f"/v1/approvals/{pending}/{verb}",
            content=content,
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_argument"
    assert error["field"] == field
    assert gw.record(pending).votes == ()
    assert gw.state(pending) is State.PENDING


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=abc", "page_size"),
        ("page_size=-1", "page_size"),
        ("page_size=1.5", "page_size"),
        ("page_size=99999999999", "page_size"),
        ("page_size=1&page_size=2", "page_size"),
        ("page_token=garbage", "page_token"),
        ("page_token=" + "A" * 300, "page_token"),
        ("page_token=WzEsIm5vcGUiXQ", "page_token"),  # [1,"nope"]
        ("page_token=WyJ4IiwiYXByX0FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQSJd", "page_token"),
    ],
)
def test_a_bad_list_query_is_400_naming_the_parameter(
    gw: Gateway, alice: str, query: str, field: str
) -> None:
    with gw.client(alice) as http:
        response = http.get(f"/v1/approvals?{query}")
    assert response.status_code == 400, response.text
    assert error_of(response)["field"] == field
