"""AuthZEN request bodies over the bundled rules, the HTTP twins of tests/server/harness' requests."""

from __future__ import annotations

import copy
from typing import Any

CUSTOMERS = {
    "type": "customer_table",
    "id": "crm.customers",
    "properties": {
        "tenant": "acme",
        "fields": [
            {"path": "customers.*.id", "tags": ["pii.customer_id"]},
            {"path": "customers.*.email", "tags": ["pii.email"]},
            {"path": "customers.*.card_number", "tags": ["pci.pan"]},
            {"path": "customers.*.country"},
        ],
    },
}


def subject(pid: str, *roles: str, kind: str = "user", **properties: Any) -> dict[str, Any]:
    return {"type": kind, "id": pid, "properties": {"roles": list(roles), **properties}}


ALICE = subject("alice@acme.io", "analyst", tenant="acme")
EVE = subject("eve@globex.io", "analyst", tenant="globex")
IVAN = subject("ivan@acme.io", "iam_admin", tenant="acme")


def evaluation(
    who: dict[str, Any],
    action: str,
    resource: dict[str, Any],
    *,
    environment: str = "prod",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # A copy each time: tests change the request they get, never the shared entities.
    return copy.deepcopy(
        {
            "subject": who,
            "action": {"name": action, "properties": payload or {}},
            "resource": resource,
            "context": {"environment": environment},
        }
    )


def allowed_read() -> dict[str, Any]:
    """alice reads 20 rows of customer data by day: ALLOW."""
    return evaluation(ALICE, "read", CUSTOMERS, payload={"row_limit": 20})


def masked_export() -> dict[str, Any]:
    """alice exports customer data in bulk: MASK (email, card number, customer id)."""
    return evaluation(
        ALICE, "export", CUSTOMERS, payload={"target": "s3://acme-exports/customers.parquet"}
    )


def cross_tenant_read() -> dict[str, Any]:
    """eve (globex) reads acme's customer data: DENY."""
    return evaluation(EVE, "read", CUSTOMERS, payload={"row_limit": 10})


def prod_grant() -> dict[str, Any]:
    """ivan grants a role to bob in prod: REQUIRE_APPROVAL by two security engineers."""
    role = {"type": "iam_role", "id": "roles/db-admin", "properties": {"tenant": "acme"}}
    return evaluation(
        IVAN, "grant_role", role, payload={"grantee": "bob@acme.io", "role": "db-admin"}
    )
