"""The `check` command: argument parsing, output and exit codes, against scripted servers."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2

from signoff.client import Field
from signoff.client.cmd.check import (
    add_check_arguments,
    duration_text,
    main,
    parse_assignment,
    parse_field,
    run_check,
)
from signoff.v1 import signoff_pb2 as pb

if TYPE_CHECKING:
    from tests.client.conftest import ScriptedServer

REQUIRED = ["--principal", "alice", "--action", "read", "--resource-kind", "doc"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    return parser.parse_args(argv)


def run(scripted: ScriptedServer, argv: list[str], *responses: pb.CheckResponse) -> int:
    """Run `check` with `argv` against `scripted`, which answers with `responses`."""
    scripted.answer(*responses)
    return run_check(parse(*argv, "--addr", scripted.address, "--timeout", "5"))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("team=eng", ("team", "eng")),
        ("n=3", ("n", 3)),
        ("flag=true", ("flag", True)),
        ("x=null", ("x", None)),
        ('s="3"', ("s", "3")),
        ('o={"a":[1,2]}', ("o", {"a": [1, 2]})),
        ("url=https://x.io/?a=b", ("url", "https://x.io/?a=b")),
        ("empty=", ("empty", "")),
        ("nan=NaN", ("nan", "NaN")),
        ("broken={", ("broken", "{")),
    ],
)
def test_assignment_value_is_json_or_else_a_plain_string(text: str, parsed: Any) -> None:
    assert parse_assignment(text) == parsed


@pytest.mark.parametrize("text", ["novalue", "=value", ""])
def test_assignment_without_key_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        parse_assignment(text)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("customers.*.email", Field("customers.*.email")),
        ("customers.*.email:pii.email", Field("customers.*.email", ("pii.email",))),
        ("ssn:pii.ssn,pii.gov", Field("ssn", ("pii.ssn", "pii.gov"))),
        ("ssn:", Field("ssn")),
    ],
)
def test_field_option_splits_path_and_tags(text: str, field: Field) -> None:
    assert parse_field(text) == field


def test_all_options_become_one_request(scripted: ScriptedServer) -> None:
    argv = shlex.split(
        "--principal agent:bot --kind agent --role exporter --role reader"
        " --attr team=data --attr level=3 --action export --resource-kind table"
        " --resource-id customers --resource-attr rows=120"
        " --field customers.*.email:pii.email --field customers.*.id --env prod"
        " --source-ip 10.0.0.1 --context-attr ticket=OPS-1"
        """ --payload '{"target": "s3://x"}' --approval-id apr-1"""
    )
    assert run(scripted, argv, pb.CheckResponse(verdict=pb.VERDICT_ALLOW)) == 0
    (request,) = scripted.checks
    assert request.principal.id == "agent:bot"
    assert request.principal.kind == pb.PRINCIPAL_KIND_AGENT
    assert list(request.principal.roles) == ["exporter", "reader"]
    assert dict(request.principal.attributes) == {"team": "data", "level": 3.0}
    assert request.action == "export"
    assert (request.resource.kind, request.resource.id) == ("table", "customers")
    assert dict(request.resource.attributes) == {"rows": 120.0}
    assert [(f.path, list(f.tags)) for f in request.resource.fields] == [
        ("customers.*.email", ["pii.email"]),
        ("customers.*.id", []),
    ]
    assert (request.context.environment, request.context.source_ip) == ("prod", "10.0.0.1")
    assert dict(request.context.attributes) == {"ticket": "OPS-1"}
    assert dict(request.payload) == {"target": "s3://x"}
    assert request.approval_id == "apr-1"


def test_readable_output_shows_verdict_reasons_rules_plan_approval_and_ids(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    response = pb.CheckResponse(
        verdict=pb.VERDICT_REQUIRE_APPROVAL,
        decision_id="d-1",
        policy_revision="rev-9",
        matched_rules=["r.a", "r.b"],
        reasons=["prod export"],
        masking_plan=pb.MaskingPlan(
            fields=[
                pb.FieldMask(path="customers.*.email", operator=pb.MASK_OPERATOR_EMAIL),
                pb.FieldMask(
                    path="card", operator=pb.MASK_OPERATOR_PARTIAL, keep_last=4, rule_ids=["r.b"]
                ),
            ]
        ),
        approval=pb.ApprovalRequirement(
            approvers=[pb.ApproverSet(roles=["dba"], groups=["sec"])], quorum=2
        ),
    )
    response.approval.pending_ttl.FromSeconds(3600)
    assert run(scripted, REQUIRED, response) == 4
    assert capsys.readouterr().out.splitlines() == [
        "verdict:   REQUIRE_APPROVAL",
        "reasons:",
        "  - prod export",
        "matched:   r.a, r.b",
        "masking:",
        "  customers.*.email → EMAIL",
        "  card → PARTIAL (keep first 0, last 4)  [r.b]",
        "approval:",
        "  quorum 2",
        "  each approver needs: role dba or group sec",
        "  pending ttl 1h",
        "  grant ttl 0s",
        "decision:  d-1",
        "revision:  rev-9",
    ]


def test_json_output_is_the_decision_as_json(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    response = pb.CheckResponse(verdict=pb.VERDICT_DENY, decision_id="d-2", reasons=["no"])
    assert run(scripted, [*REQUIRED, "--json"], response) == 1
    output = json.loads(capsys.readouterr().out)
    assert output["verdict"] == "DENY"
    assert output["decision_id"] == "d-2"
    assert output["reasons"] == ["no"]
    assert output["approval"] is None


def test_rpc_error_exits_5_with_a_message_and_no_traceback(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert run(scripted, REQUIRED) == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{scripted.address}: Check failed: UNAVAILABLE: connection refused" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("verdict", [pb.VERDICT_UNSPECIFIED, 17])
def test_unknown_verdict_exits_5(
    verdict: int, scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    response = pb.CheckResponse(verdict=verdict, decision_id="d-0")  # type: ignore[arg-type]
    assert run(scripted, REQUIRED, response) == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"decision 'd-0' has unusable verdict {verdict}" in captured.err


def test_duplicate_attribute_key_is_a_usage_error(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(scripted, [*REQUIRED, "--attr", "a=1", "--attr", "a=2"]) == 2
    assert scripted.calls() == 0
    assert "--attr gives 'a' more than once" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--principal", "alice", "--action", "read"],
        [*REQUIRED, "--kind", "robot"],
        [*REQUIRED, "--attr", "novalue"],
        [*REQUIRED, "--payload", "[1, 2]"],
        [*REQUIRED, "--payload", "{"],
        [*REQUIRED, "--timeout", "soon"],
        [*REQUIRED, "--timeout", "0"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--resource-kind" in capsys.readouterr().out


def test_leading_check_word_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--help"]) == 0
    assert "--principal" in capsys.readouterr().out


@pytest.mark.parametrize("entry", ["signoff.cli", "signoff.client.cmd.check"])
def test_check_into_a_pipe_its_reader_closed_ends_quietly(signoff_address: str, entry: str) -> None:
    # `signoff check ... | head -1` where head has gone before the verdict is printed.
    command = [
        sys.executable, "-c", f"import sys; from {entry} import main; sys.exit(main())",
        "check", "--addr", signoff_address, "--principal", "alice@acme.io", "--role", "analyst",
        "--attr", "tenant=acme", "--action", "read", "--resource-kind", "customer_table",
        "--resource-attr", "tenant=acme",
    ]  # fmt: skip
    check = subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert check.stdout is not None
    check.stdout.close()
    _, err = check.communicate(timeout=30)

    assert check.returncode == 141
    assert err.decode() == ""


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (14400, 0, "4h"),
        (900, 0, "15m"),
        (5400, 0, "1h30m"),
        (3725, 0, "1h2m5s"),
        (90, 0, "1m30s"),
        (45, 0, "45s"),
        (0, 0, "0s"),
        (172800, 0, "48h"),
        (1, 500_000_000, "1.500s"),
    ],
)
def test_ttls_are_shown_exactly_as_policies_write_them(seconds: int, nanos: int, text: str) -> None:
    assert duration_text(duration_pb2.Duration(seconds=seconds, nanos=nanos)) == text
