"""The client package against a real server: typed checks, guards, masking and `signoff check`."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from signoff import cli as service_cli
from signoff.client import (
    ApprovalRequired,
    CheckItem,
    Context,
    Decision,
    Denied,
    Field,
    ItemFailure,
    MaskingError,
    Principal,
    Resource,
    SignoffClient,
    SignoffRpcError,
    Verdict,
    guard,
    guarded,
    key_id,
)
from signoff.client.cmd import check as client_cli
from signoff.v1 import signoff_pb2 as pb
from tests.server.harness import KEY, KEY_ID, bundled, closed_port, serving

ALICE = Principal("alice@acme.io", "human", ("analyst",), {"tenant": "acme"})
EVE = Principal("eve@globex.io", "human", ("analyst",), {"tenant": "globex"})
INTERN = Principal("ian@acme.io", "human", ("intern",), {"tenant": "acme"})
IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
CUSTOMERS = Resource(
    "customer_table",
    "crm.customers",
    {"tenant": "acme"},
    (
        Field("customers.*.id", ("pii.customer_id",)),
        Field("customers.*.email", ("pii.email",)),
        Field("customers.*.card_number", ("pci.pan",)),
        Field("customers.*.country"),
    ),
)
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})
PROD = Context(environment="prod")
GRANT = {"grantee": "bob@acme.io", "role": "db-admin"}
RECORD: dict[str, Any] = {
    "customers": [
        {
            "id": "c-1001",
            "email": "jane@example.com",
            "card_number": "4111 1111 1111 1111",
            "country": "DE",
        },
        {
            "id": "c-1002",
            "email": "omar@example.org",
            "card_number": "5500 0000 0000 0004",
            "country": "FR",
        },
    ]
}


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A server on the bundled rules by day (Monday 14:00 UTC), naming KEY in HASH entries."""
    with serving() as running:
        yield f"127.0.0.1:{running.port}"


@pytest.fixture
def client(address: str) -> Iterator[SignoffClient]:
    with SignoffClient(address, timeout=10.0) as opened:
        yield opened


def _pseudonym(value: str) -> str:
    return "hmac-sha256:" + hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:32]


def _export(client: SignoffClient, who: Principal = ALICE) -> Decision:
    return client.check(principal=who, action="export", resource=CUSTOMERS, context=PROD)


def test_check_returns_a_typed_allow(client: SignoffClient) -> None:
    decision = client.check(
        principal=ALICE, action="read", resource=CUSTOMERS, context=PROD, payload={"row_limit": 20}
    )

    assert decision.verdict is Verdict.ALLOW
    assert decision.allowed
    assert decision.matched_rules == ("customer-data/allow-analysts",)
    assert decision.policy_revision == bundled().revision
    assert decision.decision_id
    assert not decision.masking_plan.fields
    assert decision.approval is None


def test_check_returns_a_typed_deny_with_reasons(client: SignoffClient) -> None:
    decision = client.check(principal=EVE, action="read", resource=CUSTOMERS, context=PROD)

    assert decision.verdict is Verdict.DENY
    assert not decision.allowed
    assert decision.reasons == ("cross-tenant access is never allowed",)
    assert decision.matched_rules == ("tenant-isolation/deny-cross-tenant",)


def test_check_returns_a_typed_mask_with_its_plan(client: SignoffClient) -> None:
    decision = _export(client)

    assert decision.verdict is Verdict.MASK
    assert decision.allowed
    plan = {e.path: (e.operator, e.key_id) for e in decision.masking_plan.fields}
    assert plan == {
        "customers.*.card_number": (pb.MASK_OPERATOR_REDACT, ""),
        "customers.*.email": (pb.MASK_OPERATOR_EMAIL, ""),
        "customers.*.id": (pb.MASK_OPERATOR_HASH, KEY_ID),
    }


def test_check_returns_a_typed_approval_requirement(client: SignoffClient) -> None:
    decision = client.check(
        principal=IVAN, action="grant_role", resource=DB_ADMIN, context=PROD, payload=GRANT
    )

    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    assert not decision.allowed
    assert decision.approval is not None
    assert decision.approval.quorum == 2
    assert [list(s.roles) for s in decision.approval.approvers] == [["security"]]
    assert decision.to_dict()["approval"]["pending_ttl"] == "14400s"


def test_check_batch_returns_decisions_and_item_failures_in_order(client: SignoffClient) -> None:
    nameless = Principal("", "human", ("analyst",), {"tenant": "acme"})
    items = [
        CheckItem(ALICE, "export", CUSTOMERS, PROD),
        CheckItem(nameless, "read", CUSTOMERS, PROD),
        CheckItem(EVE, "read", CUSTOMERS, PROD),
    ]

    results = client.check_batch(items)

    assert len(results) == 3
    first, second, third = results
    assert isinstance(first, Decision)
    assert first.verdict is Verdict.MASK
    assert isinstance(second, ItemFailure)
    assert (second.code, second.code_name, second.field) == (3, "INVALID_ARGUMENT", "principal.id")
    assert isinstance(third, Decision)
    assert third.verdict is Verdict.DENY


def test_invalid_request_raises_rpc_error_with_the_status(client: SignoffClient) -> None:
    with pytest.raises(SignoffRpcError) as info:
        client.check(principal=ALICE, action="read", resource=Resource(""), context=PROD)

    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.details == "invalid request: resource.kind: is required"


def test_unreachable_service_raises_unavailable() -> None:
    with (
        SignoffClient(f"127.0.0.1:{closed_port()}", timeout=5.0) as offline,
        pytest.raises(SignoffRpcError) as info,
    ):
        offline.check(principal=ALICE, action="read", resource=CUSTOMERS)

    assert info.value.code == "UNAVAILABLE"


def test_guard_raises_denied_and_skips_the_block(client: SignoffClient) -> None:
    ran = False
    with (
        pytest.raises(Denied) as info,
        guard(client, principal=INTERN, action="read", resource=CUSTOMERS, context=PROD),
    ):
        ran = True

    assert not ran
    assert info.value.reasons == ("no_matching_rule",)
    assert info.value.decision_id == info.value.decision.decision_id != ""


def test_guard_raises_approval_required_with_the_requirement(client: SignoffClient) -> None:
    action = guard(
        client,
        principal=IVAN,
        action="grant_role",
        resource=DB_ADMIN,
        context=PROD,
        payload=GRANT,
    )
    with pytest.raises(ApprovalRequired) as info, action:
        pytest.fail("the guarded block must not run")

    assert info.value.requirement is not None
    assert info.value.requirement.quorum == 2
    assert "requires approval by 2 approver(s)" in str(info.value)


def test_guard_permit_masks_a_record_per_the_servers_plan(client: SignoffClient) -> None:
    original = copy.deepcopy(RECORD)
    action = guard(
        client,
        principal=ALICE,
        action="export",
        resource=CUSTOMERS,
        context=PROD,
        keys={KEY_ID: KEY},
    )

    with action as permit:
        masked = permit.mask(RECORD)

    assert permit.decision.verdict is Verdict.MASK
    assert masked == {
        "customers": [
            {
                "id": _pseudonym("c-1001"),
                "email": "***@example.com",
                "card_number": "[REDACTED]",
                "country": "DE",
            },
            {
                "id": _pseudonym("c-1002"),
                "email": "***@example.org",
                "card_number": "[REDACTED]",
                "country": "FR",
            },
        ]
    }
    assert original == RECORD


def test_permit_refuses_to_hash_with_a_key_the_server_did_not_name(
    client: SignoffClient,
) -> None:
    other = b"another-key-that-is-long-enough-0123456789"
    action = guard(
        client,
        principal=ALICE,
        action="export",
        resource=CUSTOMERS,
        context=PROD,
        keys={key_id(other): other},
    )

    with action as permit, pytest.raises(MaskingError):
        permit.mask(RECORD)


def test_guard_permit_on_allow_leaves_the_record_as_is(client: SignoffClient) -> None:
    action = guard(
        client,
        principal=ALICE,
        action="read",
        resource=CUSTOMERS,
        context=PROD,
        payload={"row_limit": 20},
    )

    with action as permit:
        result = permit.mask(RECORD)

    assert permit.decision.verdict is Verdict.ALLOW
    assert result == RECORD


def test_guarded_function_returns_masked_data(client: SignoffClient) -> None:
    @guarded(
        client,
        principal=ALICE,
        action="export",
        resource=CUSTOMERS,
        context=PROD,
        keys={KEY_ID: KEY},
    )
    def export() -> dict[str, Any]:
        return copy.deepcopy(RECORD)

    rows = export()["customers"]

    assert [row["email"] for row in rows] == ["***@example.com", "***@example.org"]
    assert rows[0]["id"] == _pseudonym("c-1001")


def _check_args(address: str, *extra: str) -> list[str]:
    return ["--addr", address, "--timeout", "10", "--env", "prod", *extra]


ALICE_ARGS = ("--principal", "alice@acme.io", "--role", "analyst", "--attr", "tenant=acme")
CUSTOMER_ARGS = (
    "--resource-kind",
    "customer_table",
    "--resource-id",
    "crm.customers",
    "--resource-attr",
    "tenant=acme",
    "--field",
    "customers.*.id:pii.customer_id",
    "--field",
    "customers.*.email:pii.email",
    "--field",
    "customers.*.card_number:pci.pan",
)
CLI_CASES = {
    "allow": (
        [*ALICE_ARGS, "--action", "read", *CUSTOMER_ARGS, "--payload", '{"row_limit": 20}'],
        0,
        "ALLOW",
    ),
    "deny": (
        [
            *("--principal", "eve@globex.io", "--role", "analyst", "--attr", "tenant=globex"),
            *("--action", "read", *CUSTOMER_ARGS),
        ],
        1,
        "DENY",
    ),
    "mask": ([*ALICE_ARGS, "--action", "export", *CUSTOMER_ARGS], 3, "MASK"),
    "require approval": (
        [
            *("--principal", "ivan@acme.io", "--role", "iam_admin", "--attr", "tenant=acme"),
            *("--action", "grant_role", "--resource-kind", "iam_role"),
            *("--resource-attr", "tenant=acme", "--payload", json.dumps(GRANT)),
        ],
        4,
        "REQUIRE_APPROVAL",
    ),
}


@pytest.mark.parametrize(("args", "code", "verdict"), CLI_CASES.values(), ids=list(CLI_CASES))
def test_check_cli_prints_the_verdict_and_exits_with_its_code(
    address: str, capsys: pytest.CaptureFixture[str], args: list[str], code: int, verdict: str
) -> None:
    exit_code = client_cli.main(_check_args(address, *args))

    out = capsys.readouterr().out
    assert exit_code == code
    assert out.splitlines()[0] == f"verdict:   {verdict}"
    assert f"revision:  {bundled().revision}" in out


def test_check_cli_shows_the_masking_plan_with_the_key_id(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _, _ = CLI_CASES["mask"]

    exit_code = client_cli.main(_check_args(address, *args))

    out = capsys.readouterr().out
    assert exit_code == 3
    assert f"customers.*.id → HASH (key {KEY_ID})" in out
    assert "customers.*.email → EMAIL" in out
    assert "customers.*.card_number → REDACT" in out


def test_check_cli_json_output_is_the_decision(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _, _ = CLI_CASES["require approval"]

    exit_code = client_cli.main(_check_args(address, "--json", *args))

    printed = json.loads(capsys.readouterr().out)
    assert exit_code == 4
    assert printed["verdict"] == "REQUIRE_APPROVAL"
    assert printed["approval"]["quorum"] == 2
    assert printed["policy_revision"] == bundled().revision


def test_signoff_check_subcommand_matches_the_client_cli(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, code, verdict = CLI_CASES["mask"]

    exit_code = service_cli.main(["check", *_check_args(address, *args)])

    assert exit_code == code
    assert capsys.readouterr().out.startswith(f"verdict:   {verdict}\n")


def test_check_cli_exits_5_when_the_service_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    args, _, _ = CLI_CASES["allow"]

    exit_code = client_cli.main(_check_args(address, *args))

    captured = capsys.readouterr()
    assert exit_code == 5
    assert captured.out == ""
    assert f"signoff check: {address}: " in captured.err
    assert "UNAVAILABLE" in captured.err


def test_check_cli_exits_5_on_an_rpc_error_from_the_service(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = client_cli.main(
        _check_args(address, "--principal", "", "--action", "read", *CUSTOMER_ARGS)
    )

    assert exit_code == 5
    assert "invalid request: principal.id: is required" in capsys.readouterr().err


def test_check_cli_exits_2_on_a_usage_error(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = client_cli.main(["--addr", address, "--action", "read"])

    assert exit_code == 2
    assert "--principal" in capsys.readouterr().err
