"""`signoff approvals ...` against the real server: output, exit codes and token hygiene."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from signoff.client import Context, Field, Principal, Resource, SignoffClient, Verdict
from signoff.client.cmd.approvals import main, register
from signoff.client.cmd.check import main as check_main
from tests.client.conftest import DevIdentity

IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
DB_ADMIN = Resource("iam_role", "roles/db-admin", {"tenant": "acme"})
WES = Principal("wes@acme.io", "human", ("writer",))


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Cli:
    """Runs `signoff approvals` against one server, as one person (a token file each)."""

    address: str
    capsys: pytest.CaptureFixture[str]
    files: dict[str, Path]
    # Kept out of the repr, so a failing test's report does not print the tokens either.
    tokens: dict[str, str] = field(repr=False)

    def __call__(self, who: str | None, *argv: str, address: str | None = None) -> Ran:
        credential = ["--token-file", str(self.files[who])] if who else []
        self.capsys.readouterr()
        code = main([*argv, "--addr", address or self.address, *credential])
        captured = self.capsys.readouterr()
        # Whatever the command did, no token ever reaches its output.
        for token in self.tokens.values():
            assert token not in captured.out
            assert token not in captured.err
        return Ran(code, captured.out, captured.err)


PEOPLE = {
    "ivan": ("ivan@acme.io", ("iam_admin",)),
    "sam": ("sam@acme.io", ("security",)),
    "sue": ("sue@acme.io", ("security",)),
    "ian": ("ian@acme.io", ("intern",)),
    "eda": ("eda@acme.io", ("editor",)),
}


@pytest.fixture
def tokens(dev_identity: DevIdentity) -> dict[str, str]:
    return {name: dev_identity.token(sub, roles=roles) for name, (sub, roles) in PEOPLE.items()}


@pytest.fixture
def token_files(tmp_path: Path, tokens: dict[str, str]) -> dict[str, Path]:
    files = {}
    for name, token in tokens.items():
        path = tmp_path / f"{name}.jwt"
        # Surrounding whitespace, as an editor or `echo` leaves it, is ignored.
        path.write_text(f"  {token}\n", encoding="utf-8")
        files[name] = path
    return files


@pytest.fixture
def cli(
    approvals_address: str,
    capsys: pytest.CaptureFixture[str],
    token_files: dict[str, Path],
    tokens: dict[str, str],
) -> Cli:
    return Cli(approvals_address, capsys, token_files, tokens)


@pytest.fixture
def requester(approvals_address: str) -> Iterator[SignoffClient]:
    with SignoffClient(approvals_address, timeout=10.0) as client:
        yield client


def held_grant(client: SignoffClient) -> str:
    """ivan asks to grant db-admin to a fresh grantee in prod; returns the approval id."""
    decision = client.check(
        principal=IVAN,
        action="grant_role",
        resource=DB_ADMIN,
        context=Context(environment="prod"),
        payload={"grantee": f"bob-{uuid.uuid4().hex[:8]}@acme.io", "role": "db-admin"},
    )
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    return decision.approval_id


def test_list_prints_one_line_per_pending_approval(cli: Cli, requester: SignoffClient) -> None:
    approval_id = held_grant(requester)

    ran = cli("sam", "list", "--limit", "500")

    assert ran.code == 0
    (line,) = [line for line in ran.out.splitlines() if line.startswith(approval_id)]
    assert line == (
        f"{approval_id}  0/2  grant_role iam_role roles/db-admin in prod  by ivan@acme.io"
        "  expires in 3h59m"
    )


def test_list_with_nothing_to_decide_says_so(cli: Cli) -> None:
    ran = cli("ian", "list")

    assert (ran.code, ran.out) == (0, "no pending approvals you can decide\n")


def test_list_json_is_an_array_of_approvals(cli: Cli, requester: SignoffClient) -> None:
    approval_id = held_grant(requester)

    ran = cli("sam", "list", "--limit", "500", "--json")

    listed = {item["id"]: item for item in json.loads(ran.out)}
    assert listed[approval_id]["state"] == "PENDING"
    assert listed[approval_id]["requirement"]["quorum"] == 2
    assert listed[approval_id]["request"]["requester_id"] == "ivan@acme.io"
    assert listed[approval_id]["pending_expires_at"].endswith("Z")


def test_show_prints_state_requester_action_payload_needs_votes_and_times(
    cli: Cli, requester: SignoffClient
) -> None:
    approval_id = held_grant(requester)

    ran = cli("sam", "show", approval_id)

    assert ran.code == 0
    lines = ran.out.splitlines()
    assert lines[:7] == [
        f"approval:       {approval_id}",
        "state:          PENDING, 0/2 approvals, expires in 3h59m",
        "requester:      ivan@acme.io (human; roles iam_admin)",
        "action:         grant_role",
        "resource:       iam_role roles/db-admin",
        "environment:    prod",
        "reasons:",
    ]
    assert (
        "rules:          iam-grants/allow-human-admins, iam-grants/prod-needs-two-security-approvers"
        in lines
    )
    (payload,) = [line for line in lines if line.startswith("payload:")]
    assert json.loads(payload.removeprefix("payload:"))["role"] == "db-admin"
    assert "needs:          2 distinct approver(s), each with role security" in lines
    assert "cannot approve: ivan@acme.io" in lines
    assert "votes:          (none yet)" in lines
    assert any(line.startswith("created:        20") and line.endswith(" ago)") for line in lines)
    assert any(line.startswith("pending until:") and "(in 3h59m)" in line for line in lines)


def test_show_prints_the_masked_payload_and_the_fields(
    reports_address: str, cli: Cli, tokens: dict[str, str]
) -> None:
    report = Resource(
        "report", f"q-{uuid.uuid4().hex[:8]}", fields=(Field("customers.*.email", ("pii.email",)),)
    )
    with SignoffClient(reports_address) as writer:
        decision = writer.check(
            principal=WES,
            action="publish",
            resource=report,
            payload={"customers": [{"email": "jane@example.com"}]},
        )

    ran = cli("eda", "show", decision.approval_id, address=reports_address)

    assert ran.code == 0
    assert "jane" not in ran.out
    assert "@example.com" in ran.out
    lines = ran.out.splitlines()
    assert lines[lines.index("fields:") + 1] == "  - customers.*.email [pii.email]"
    assert lines[lines.index("masked:") + 1] == "  - customers.*.email → EMAIL"


def test_approve_records_the_vote_and_the_quorum_approves(
    cli: Cli, requester: SignoffClient
) -> None:
    approval_id = held_grant(requester)

    first = cli("sam", "approve", approval_id, "--reason", "ticket SEC-9")
    second = cli("sue", "approve", approval_id, "--reason", "agreed", "--json")

    assert first.code == 0
    assert "state:          PENDING, 1/2 approvals" in first.out
    (vote,) = [line for line in first.out.splitlines() if line.startswith("  - sam@acme.io")]
    assert vote.startswith("  - sam@acme.io approved at 20")
    assert vote.endswith("Z: ticket SEC-9")
    assert second.code == 0
    document = json.loads(second.out)
    assert document["state"] == "APPROVED"
    assert [vote["approver_id"] for vote in document["votes"]] == ["sam@acme.io", "sue@acme.io"]


def test_reject_ends_it_and_a_later_approve_is_refused_with_the_servers_message(
    cli: Cli, requester: SignoffClient
) -> None:
    approval_id = held_grant(requester)

    rejected = cli("sam", "reject", approval_id, "--reason", "no ticket")
    late = cli("sue", "approve", approval_id, "--reason", "ok")

    assert rejected.code == 0
    assert "state:          REJECTED: no ticket" in rejected.out
    assert (late.code, late.out) == (1, "")
    assert late.err == "signoff approvals: refused: approval is rejected, not pending\n"


def test_requester_cancels_and_others_are_refused(cli: Cli, requester: SignoffClient) -> None:
    approval_id = held_grant(requester)

    refused = cli("sam", "cancel", approval_id)
    cancelled = cli("ivan", "cancel", approval_id)

    assert refused.code == 1
    assert "refused: permission denied (not_requester)" in refused.err
    assert cancelled.code == 0
    assert "state:          CANCELLED: cancelled by the requester" in cancelled.out


@pytest.mark.parametrize(
    ("who", "argv", "code", "says"),
    [
        (
            "ivan",
            ["approve", "{id}", "--reason", "mine"],
            1,
            "refused: permission denied (self_approval)",
        ),
        ("ian", ["show", "{id}"], 1, "refused: permission denied (not_eligible)"),
        ("sam", ["show", "apr_doesnotexist"], 4, "not found: no such approval"),
        ("sam", ["watch", "apr_doesnotexist"], 4, "not found: no such approval"),
        (None, ["list"], 6, "not authenticated: no token"),
        ("sam", ["approve", "{id}"], 2, "--reason"),
        ("sam", ["approve", "{id}", "--reason", "  "], 2, "reason is required"),
        ("sam", ["list", "--limit", "0"], 2, "--limit"),
        ("sam", ["watch", "{id}", "--timeout", "-1"], 2, "--timeout"),
        ("sam", ["frobnicate"], 2, "invalid choice"),
    ],
)
def test_exit_codes(
    cli: Cli, requester: SignoffClient, who: str | None, argv: list[str], code: int, says: str
) -> None:
    approval_id = held_grant(requester)

    ran = cli(who, *(arg.replace("{id}", approval_id) for arg in argv))

    assert ran.code == code
    assert says in ran.err
    assert "Traceback" not in ran.err


def test_a_token_that_does_not_verify_exits_6(cli: Cli, tmp_path: Path) -> None:
    forged = tmp_path / "forged.jwt"
    forged.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJtZSJ9.", encoding="utf-8")

    ran = cli(None, "list", "--token-file", str(forged))

    assert ran.code == 6
    assert ran.err.startswith("signoff approvals: not authenticated: unauthenticated:")
    assert "eyJ" not in ran.err


def test_unreachable_service_exits_5(cli: Cli, unreachable: str) -> None:
    ran = cli("sam", "list", "--timeout", "1", address=unreachable)

    assert ran.code == 5
    assert f"signoff approvals: {unreachable}: ListApprovals failed: UNAVAILABLE" in ran.err


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: ["--token-file", str(p / "missing.jwt")], "cannot read token file"),
        (lambda p: ["--token-file", str(p / "empty.jwt")], "is empty"),
        (lambda p: ["--token", "abc", "--token-file", str(p / "sam.jwt")], "not both"),
    ],
)
def test_bad_token_options_are_usage_errors(
    cli: Cli, tmp_path: Path, make: Callable[[Path], list[str]], says: str
) -> None:
    (tmp_path / "empty.jwt").write_text("\n", encoding="utf-8")
    options = make(tmp_path)

    ran = cli(None, "list", *options)

    assert ran.code == 2
    assert says in ran.err


def test_token_comes_from_the_flag_the_file_or_the_environment(
    cli: Cli, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    by_flag = cli(None, "list", "--token", tokens["sam"])
    by_file = cli("sam", "list")
    monkeypatch.setenv("SIGNOFF_TOKEN", f"{tokens['sam']}\n")
    by_env = cli(None, "list")
    # A flag wins over the environment: ian's list is another person's list.
    flag_over_env = cli(None, "list", "--token", tokens["ian"])

    assert [r.code for r in (by_flag, by_file, by_env, flag_over_env)] == [0, 0, 0, 0]
    assert by_flag.out == by_file.out == by_env.out
    assert flag_over_env.out == "no pending approvals you can decide\n"


def test_options_may_come_before_the_subcommand(
    cli: Cli, requester: SignoffClient, approvals_address: str, token_files: dict[str, Path]
) -> None:
    approval_id = held_grant(requester)

    token_file = str(token_files["sam"])
    code = main(
        ["--addr", approvals_address, "--token-file", token_file, "--json", "show", approval_id]
    )

    assert code == 0
    assert json.loads(cli.capsys.readouterr().out)["id"] == approval_id


def test_misplaced_token_is_not_echoed_in_usage_errors(cli: Cli, tokens: dict[str, str]) -> None:
    for argv in (
        ["list", "--tokn", tokens["sam"]],
        ["list", "--token", tokens["sam"], "--bogus"],
        ["list", "extra", f"--token={tokens['sam']}"],
        ["show", "--timeout", tokens["sam"], "apr_x"],
    ):
        ran = cli(None, *argv)
        assert ran.code == 2
        assert ran.err


def test_watch_prints_each_change_and_exits_0_when_approved(
    cli: Cli, requester: SignoffClient, approvals_address: str, tokens: dict[str, str]
) -> None:
    approval_id = held_grant(requester)

    def approve() -> None:
        # Vote only once the watch has printed the state it started from (a fixed sleep lost
        # that race on a loaded machine, and the first change went unseen): the output the
        # command writes is captured in sys.stdout, read here without consuming it.
        deadline = time.monotonic() + 10
        captured: Any = sys.stdout  # pytest's capture buffer while the command runs
        while "0/2 approvals" not in captured.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        for name in ("sam", "sue"):
            with SignoffClient(approvals_address, token=tokens[name]) as approver:
                approver.approve(approval_id, "ok")

    worker = threading.Thread(target=approve)
    worker.start()
    ran = cli("ivan", "watch", approval_id, "--timeout", "10")
    worker.join(10)

    assert ran.code == 0
    states = [line.split("  ", 2)[2] for line in ran.out.splitlines()]
    assert [line.split("  ", 2)[1] for line in ran.out.splitlines()] == [approval_id] * 3
    assert states[0] == "PENDING, 0/2 approvals, expires in 3h59m"
    assert states[1] == "PENDING, 1/2 approvals, expires in 3h59m"
    assert states[2].startswith("APPROVED, 2/2 approvals, usable for 14m")


def test_watch_exits_1_when_rejected(cli: Cli, requester: SignoffClient) -> None:
    approval_id = held_grant(requester)
    assert cli("sam", "reject", approval_id, "--reason", "no").code == 0

    ran = cli("ivan", "watch", approval_id, "--json")

    assert ran.code == 1
    (line,) = ran.out.splitlines()
    assert json.loads(line)["state"] == "REJECTED"


def test_watch_exits_3_when_time_runs_out(cli: Cli, requester: SignoffClient) -> None:
    approval_id = held_grant(requester)
    started = time.monotonic()

    ran = cli("ivan", "watch", approval_id, "--timeout", "0.3")

    assert ran.code == 3
    assert len(ran.out.splitlines()) == 1
    assert f"{approval_id} still pending" in ran.err
    assert time.monotonic() - started < 3


def test_another_cli_can_mount_the_approvals_command(
    cli: Cli, requester: SignoffClient, approvals_address: str, token_files: dict[str, Path]
) -> None:
    approval_id = held_grant(requester)
    parser = argparse.ArgumentParser(prog="signoff")
    register(parser.add_subparsers(dest="command", required=True))

    token_file = str(token_files["sam"])
    args = parser.parse_args(
        ["approvals", "show", approval_id, "--addr", approvals_address, "--token-file", token_file]
    )

    assert args.run(args) == 0
    assert approval_id in cli.capsys.readouterr().out


def test_check_command_prints_the_pending_approval_id(
    approvals_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    grantee = f"bob-{uuid.uuid4().hex[:8]}@acme.io"
    argv = [
        "--addr", approvals_address, "--principal", "ivan@acme.io", "--role", "iam_admin",
        "--attr", "tenant=acme", "--action", "grant_role", "--resource-kind", "iam_role",
        "--resource-id", "roles/db-admin", "--resource-attr", "tenant=acme", "--env", "prod",
        "--payload", json.dumps({"grantee": grantee, "role": "db-admin"}),
    ]  # fmt: skip

    assert check_main(argv) == 4
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "approval id" in line]
    assert line.startswith("approval id: apr_")
    assert check_main([*argv, "--json"]) == 4
    assert json.loads(capsys.readouterr().out)["approval_id"] == line.removeprefix("approval id: ")
