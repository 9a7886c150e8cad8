"""`signoff policy reload|status` against a real reloading server, and SIGNOFF_ADDRESS."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.cli import main
from signoff.client.cmd.settings import default_address
from signoff.client.masking import key_id
from signoff.engine.evaluator import Engine
from signoff.policy.loader import load_bundle
from signoff.server import app
from tests.approvals.support import DevIdP
from tests.client.conftest import ScriptedServer
from tests.conftest import RULES
from tests.server.harness import KEY

EXTRA_RULE = """
policies:
  - id: extra
    resources: [customer_table]
    actions: [read]
    rules:
      - {id: always-allow-stewards, effect: allow, roles: [data_steward]}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    copy = tmp_path / "rules"
    shutil.copytree(RULES, copy)
    return copy


@pytest.fixture
def idp(tmp_path: Path) -> DevIdP:
    return DevIdP.create(tmp_path / "idp")


@pytest.fixture
def address(rules: Path, idp: DevIdP) -> Iterator[str]:
    running = app.start(
        Engine(load_bundle(rules)),
        "127.0.0.1:0",
        hash_key_id=key_id(KEY),
        reloading=app.Reloading(rules, "cel-expr", idp.authenticator()),
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace=None)


@pytest.fixture
def admin(idp: DevIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_TOKEN", idp.token("ops@acme.io", "signoff_admin"))


@pytest.mark.usefixtures("admin")
def test_status_names_the_serving_revision_and_the_latest_load(
    address: str, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "--addr", address, "status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    bundle = load_bundle(rules)
    assert lines[:2] == [f"revision:      {bundle.revision}", f"rules:         {bundle.rule_count}"]
    assert lines[2].startswith("loaded at:     ")
    assert lines[3].startswith("last attempt:  ")
    assert lines[3].endswith(" (ok)")


@pytest.mark.usefixtures("admin")
def test_reload_serves_a_changed_bundle_and_refuses_a_broken_one(
    address: str, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "--addr", address, "reload"]) == 0
    assert capsys.readouterr().out.startswith("reloaded: unchanged\n")

    (rules / "extra.yaml").write_text(EXTRA_RULE)
    assert main(["policy", "--addr", address, "reload"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reloaded: a new revision serves\n")
    assert f"revision:      {load_bundle(rules).revision}\n" in out

    (rules / "guardrails.yaml").write_text("policies:\n  - id: half\n    resources: [x\n")
    assert main(["policy", "reload", "--addr", address, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"] is False
    assert doc["status"]["last_load_failed"] is True
    [problem] = doc["status"]["problems"]
    assert problem["file"].endswith("guardrails.yaml")
    assert (problem["line"], problem["column"]) == (3, 16)
    assert main(["policy", "--addr", address, "status"]) == 1
    out = capsys.readouterr().out
    assert "guardrails.yaml:3:16: invalid YAML: '[' is never closed" in out


def test_policy_commands_need_an_administrators_token(
    address: str, idp: DevIdP, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SIGNOFF_TOKEN", raising=False)
    assert main(["policy", "--addr", address, "status"]) == 6
    assert "not authenticated: no token" in capsys.readouterr().err

    monkeypatch.setenv("SIGNOFF_TOKEN", idp.token("al@acme.io", "analyst"))
    assert main(["policy", "--addr", address, "reload"]) == 1
    assert (
        "signoff policy: refused: permission denied (not_admin): needs the signoff_admin role"
        in (capsys.readouterr().err)
    )


@pytest.mark.usefixtures("admin")
def test_every_client_command_reads_signoff_address(
    address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIGNOFF_ADDRESS", address)

    assert main(["policy", "status"]) == 0
    assert capsys.readouterr().out.startswith("revision:  ")
    # This server has no ApprovalService: its answer shows the call went to it.
    assert main(["approvals", "list"]) == 5
    assert f"{address}: ListApprovals failed: UNIMPLEMENTED" in capsys.readouterr().err


def test_check_reads_signoff_address(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from signoff.v1 import signoff_pb2 as pb

    monkeypatch.setenv("SIGNOFF_ADDRESS", scripted.address)
    scripted.answer(pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d-1"))

    code = main(["check", "--principal", "al", "--action", "read", "--resource-kind", "doc"])

    assert code == 0
    assert len(scripted.checks) == 1
    assert capsys.readouterr().out.startswith("verdict:   ALLOW\n")


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, "127.0.0.1:50051"),
        ("", "127.0.0.1:50051"),
        ("10.1.2.3:7000", "10.1.2.3:7000"),
        # What `signoff serve` listens on, asked from this machine.
        ("0.0.0.0:7000", "127.0.0.1:7000"),
        ("[::]:7000", "[::1]:7000"),
    ],
)
def test_the_address_comes_from_signoff_address(value: str | None, address: str) -> None:
    environ = {} if value is None else {"SIGNOFF_ADDRESS": value}

    assert default_address(environ) == address
