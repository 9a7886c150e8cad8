"""The OpenAPI document: served as committed, covering every route, describing real answers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from signoff.http.api_openapi import undocumented
from signoff.identity import Authenticator
from tests.approvals.support import DevIdP, lab_files, lab_request
from tests.http.approvals_support import Gateway, gateway, prod_export

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# Set to write the served document over the committed one (then review the diff and commit).
UPDATE = "SIGNOFF_UPDATE_OPENAPI"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, idp: DevIdP) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    auth: Authenticator = idp.authenticator()
    with gateway(root, auth=auth) as running:
        yield running


@pytest.fixture(scope="module")
def served(gw: Gateway) -> dict[str, Any]:
    with gw.client() as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def test_the_served_document_is_the_committed_one(served: dict[str, Any]) -> None:
    if os.environ.get(UPDATE):
        COMMITTED.write_text(json.dumps(served, indent=2, sort_keys=True) + "\n", "utf-8")
    committed = json.loads(COMMITTED.read_text("utf-8"))
    assert served == committed, (
        f"docs/openapi.json differs from what the server serves; rerun this test with "
        f"{UPDATE}=1 to rewrite it, and commit the result"
    )


def test_every_route_has_an_operation_in_the_document(gw: Gateway, served: dict[str, Any]) -> None:
    missing = [f"{e.http_method.upper()} {e.path}" for e in undocumented(gw.asgi.routes)]
    assert missing == [], "routes without an OpenAPI operation (YAML after --- in the docstring)"
    for path, method in [
        ("/v1/approvals", "get"),
        ("/v1/approvals/{approval_id}", "get"),
        ("/v1/approvals/{approval_id}/approve", "post"),
        ("/v1/approvals/{approval_id}/reject", "post"),
        ("/v1/approvals/{approval_id}/cancel", "post"),
        ("/v1/approvals/{approval_id}/watch", "get"),
    ]:
        assert method in served["paths"][path], (method, path)


def validator(served: dict[str, Any], name: str) -> Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": served["components"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def test_real_answers_match_the_documents_schemas(
    gw: Gateway, idp: DevIdP, served: dict[str, Any]
) -> None:
    approval_id = gw.ask(lab_request("prod"))
    gw.ask(prod_export())
    with gw.client(idp.token("alice@acme.io", "security")) as http:
        page = http.get("/v1/approvals", params={"page_size": 1}).json()
        voted = http.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ok"}).json()
        refused = http.post(f"/v1/approvals/{approval_id}/reject", json={}).json()
    validator(served, "ApprovalPage").validate(page)
    assert page["next_page_token"]
    validator(served, "Approval").validate(voted)
    assert voted["votes"]
    validator(served, "Error").validate(refused)
