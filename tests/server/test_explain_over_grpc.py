"""Check with explain: each candidate rule's outcome over gRPC and in `signoff check --explain`."""

from __future__ import annotations

import argparse

import pytest

from signoff.client.cmd.check import add_check_arguments, run_check
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import (
    HUMAN,
    TIMEOUT,
    channel_to,
    check_request,
    customers,
    masked_export,
    principal,
    serving,
)


def test_explanation_lists_every_candidate_and_the_deciding_rule() -> None:
    request = masked_export()
    request.explain = True
    with serving() as running, channel_to(running.port) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        response = stub.Check(request, timeout=TIMEOUT)
        plain = stub.Check(masked_export(), timeout=TIMEOUT)
    assert response.verdict == plain.verdict == pb.VERDICT_MASK
    assert not plain.HasField("explanation")
    outcomes = {r.rule_id: r for r in response.explanation.rules}
    assert list(response.explanation.decided_by) == ["customer-data/mask-bulk-pii"]
    assert outcomes["customer-data/mask-bulk-pii"].outcome == pb.RULE_OUTCOME_MATCHED
    assert outcomes["customer-data/allow-analysts"].outcome == pb.RULE_OUTCOME_MATCHED
    assert outcomes["tenant-isolation/deny-cross-tenant"].outcome == pb.RULE_OUTCOME_NOT_MATCHED
    assert "principal.attr.tenant" in outcomes["tenant-isolation/deny-cross-tenant"].condition
    assert set(response.matched_rules) == {
        r.rule_id for r in response.explanation.rules if r.outcome == pb.RULE_OUTCOME_MATCHED
    }


def test_explanations_carry_rule_logic_not_request_values() -> None:
    canary = "zq-explain-canary"
    request = check_request(
        principal(canary + "@acme.io", HUMAN, ["analyst"], tenant=canary),
        "export",
        customers(canary),
    )
    request.explain = True
    with serving() as running, channel_to(running.port) as channel:
        response = pb_grpc.DecisionServiceStub(channel).Check(request, timeout=TIMEOUT)
    assert canary.encode() not in response.explanation.SerializeToString()


def test_check_command_prints_the_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    with serving() as running:
        args = parser.parse_args(
            [
                "--addr",
                f"127.0.0.1:{running.port}",
                "--principal",
                "eve@globex.io",
                "--role",
                "analyst",
                "--attr",
                "tenant=globex",
                "--action",
                "read",
                "--resource-kind",
                "customer_table",
                "--resource-attr",
                "tenant=acme",
                "--explain",
            ]
        )
        code = run_check(args)
    out = capsys.readouterr().out
    assert code != 0
    assert "decided by: tenant-isolation/deny-cross-tenant" in out
    assert "* tenant-isolation/deny-cross-tenant [deny]: matched" in out
    assert (
        "customer-data/allow-analysts [allow]: matched  (not counted: the verdict was already settled)"
        in out
    )
