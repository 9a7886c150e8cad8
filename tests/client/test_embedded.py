"""Embedded decisions: the service's signed bundle decided in-process, audited by the service."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.bundles.keys import generate_keys
from signoff.bundles.signing import sign_bundle
from signoff.client.embedded import EmbeddedDecider
from signoff.client.errors import InvalidInput, SignoffClientError
from signoff.client.types import Decision
from signoff.cmd.audit import register as add_audit_arguments
from signoff.engine.evaluator import Engine
from signoff.identity import NoAuthenticator
from signoff.limits import Limits
from signoff.policy.loader import load_bundle
from signoff.server import app, convert
from signoff.server.approvals import ApprovalService
from signoff.server.embedded import Embedded
from signoff.v1 import embedded_pb2 as epb
from signoff.v1 import embedded_pb2_grpc as epb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views
from tests.conftest import RULES, fixed_clock
from tests.server.harness import (
    DAY,
    KEY,
    KEY_ID,
    REDIS_URL,
    TIMEOUT,
    alice,
    allowed_read,
    check_request,
    closed_port,
    customers,
    dana,
    deploy_bot,
    deployment,
    drop_prefix,
    eve,
    export_bot,
    iam_role,
    intern,
    ivan,
    orphan_bot,
    prod_grant,
)

FIRST_SIGNED = 1_780_000_000  # 2026-05-28: before DAY, so the bundle is not from the future


@dataclass
class Service:
    running: app.Running
    channel: grpc.Channel
    audit: AuditLog
    prefix: str
    bundle: Path
    private_key: Path
    public_key: Path


def _sign(rules: Path, private_key: Path, out: Path, signed_at: int) -> Path:
    sign_bundle(rules, private_key, out, signed_at=signed_at, clock=lambda: signed_at + 60.0)
    return out


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    private_key, public_key = generate_keys(tmp_path / "keys")
    bundle = _sign(RULES, private_key, tmp_path / "served.tar.gz", FIRST_SIGNED)
    prefix = f"signoff:test:embedded:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    store = ApprovalStore(REDIS_URL, prefix=prefix)
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    approvals = Approvals(store, digest_key=digest_key(KEY), views=views)
    running = app.start(
        Engine(load_bundle(RULES), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        approvals=approvals,
        approval_service=ApprovalService(approvals, NoAuthenticator()),
        audit=audit,
        views=views,
        embedded=Embedded(bundle),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Service(running, channel, audit, prefix, bundle, private_key, public_key)
    finally:
        channel.close()
        running.stop(grace=None)
        audit.close(timeout=2.0)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def _decider(service: Service, **extra: Any) -> EmbeddedDecider:
    return EmbeddedDecider(
        service.channel,
        public_key=service.public_key,
        clock=fixed_clock(DAY),
        hash_key_id=KEY_ID,
        poll_interval=3600.0,
        timeout=TIMEOUT,
        **extra,
    )


def _records(service: Service) -> list[dict[str, Any]]:
    assert service.audit.flush(10.0)
    out = io.StringIO()
    service.audit.export("decisions", None, None, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _grid() -> list[pb.CheckRequest]:
    who = [alice(), dana(), eve(), intern(), export_bot(), orphan_bot(), ivan(), deploy_bot()]
    what = [
        (customers(), ["read", "export", "delete"]),
        (iam_role(), ["grant_role", "read"]),
        (deployment(), ["deploy", "scale"]),
    ]
    out = []
    for p, (resource, actions), env in itertools.product(who, what, ["prod", "staging"]):
        for action in actions:
            out.append(
                check_request(p, action, resource, environment=env, payload={"row_limit": 20})
            )
    return [*out, prod_grant()]


def _same_answer(local: Decision, remote: Decision) -> tuple[Any, ...]:
    return (
        local.verdict,
        local.policy_revision,
        local.matched_rules,
        local.reasons,
        local.errored_rules,
        local.masking_plan.SerializeToString(deterministic=True),
    ), (
        remote.verdict,
        remote.policy_revision,
        remote.matched_rules,
        remote.reasons,
        remote.errored_rules,
        remote.masking_plan.SerializeToString(deterministic=True),
    )


def test_embedded_answers_are_the_services_over_a_request_grid(service: Service) -> None:
    stub = pb_grpc.DecisionServiceStub(service.channel)
    verdicts = set()
    with _decider(service) as decider:
        for message in _grid():
            remote = Decision.from_proto(stub.Check(message, timeout=TIMEOUT))
            local = decider.check_message(message)
            if remote.verdict.name == "REQUIRE_APPROVAL":
                # Sent to the service: it held an approval of its own.
                assert local.verdict is remote.verdict
                assert local.approval_id
            else:
                mine, theirs = _same_answer(local, remote)
                assert mine == theirs, message
            verdicts.add(remote.verdict.name)
    assert verdicts == {"ALLOW", "DENY", "MASK", "REQUIRE_APPROVAL"}


def test_require_approval_goes_to_the_service_and_is_not_recorded_locally(
    service: Service,
) -> None:
    with _decider(service) as decider:
        decision = decider.check_message(prod_grant())
        assert decision.verdict.name == "REQUIRE_APPROVAL"
        assert decision.approval_id  # held in the service's approval store
        assert decider.stats().decided == 0
    records = _records(service)
    assert [r.get("decided_by") for r in records] == [None]  # the service's own record
    assert records[0]["approval_id"] == decision.approval_id


def test_local_decisions_reach_the_audit_trail_and_verify(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = [m for m in _grid() if m.action != "grant_role"][:20]
    with _decider(service, decider="test-host/1") as decider:
        ids = [decider.check_message(m).decision_id for m in grid]
    # close() flushed: nothing lost on a clean shutdown.
    assert decider.stats().pending == 0
    records = [r for r in _records(service) if r.get("decided_by") == "embedded"]
    assert [r["decision_id"] for r in records] == ids
    assert {r["decider"] for r in records} == {"test-host/1"}
    assert all(r["type"] == "decision" and "decided_at" in r for r in records)
    # The audit view only: ids and names, no payload value.
    assert all(r["request"].get("payload", {}) == {} for r in records)
    assert not any("row_limit" in json.dumps(r.get("request", {}).get("payload")) for r in records)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SIGNOFF_REDIS_PREFIX", service.prefix)
    monkeypatch.setenv("SIGNOFF_HASH_KEY", KEY.decode())
    monkeypatch.delenv("SIGNOFF_HASH_KEY_FILE", raising=False)
    parser = argparse.ArgumentParser(prog="signoff")
    add_audit_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "verify", "--stream", "decisions"])
    assert args.run(args) == 0
    assert "decisions: ok" in capsys.readouterr().out


def test_a_newer_signed_bundle_is_swapped_in(service: Service, tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(RULES, edited)
    (edited / "guardrails.yaml").write_text((edited / "guardrails.yaml").read_text() + "\n#\n")
    with _decider(service) as decider:
        before = decider.engine.bundle.revision
        assert not decider.refresh()  # unchanged: not fetched again
        _sign(edited, service.private_key, service.bundle, FIRST_SIGNED + 10)
        assert decider.refresh()
        after = decider.engine.bundle.revision
        assert after != before
        assert decider.check_message(check_request(alice(), "read", customers())).policy_revision
        assert decider.stats().revision == after


def test_a_tampered_bundle_is_refused_and_the_current_one_keeps_deciding(
    service: Service,
) -> None:
    with _decider(service) as decider:
        before = decider.engine.bundle.revision
        data = bytearray(service.bundle.read_bytes())
        data[len(data) // 2] ^= 0xFF
        service.bundle.write_bytes(bytes(data))
        assert not decider.refresh()
        assert decider.stats().bundle_refusals == 1
        assert decider.engine.bundle.revision == before


def test_a_bundle_signed_with_another_key_is_refused_at_start(
    service: Service, tmp_path: Path
) -> None:
    _, other_public = generate_keys(tmp_path / "other")
    before = set(Path(tempfile.gettempdir()).glob("signoff-embedded-*"))
    with pytest.raises(SignoffClientError, match="refused"):
        EmbeddedDecider(service.channel, public_key=other_public, timeout=TIMEOUT)
    # Nothing fetched is left behind.
    assert set(Path(tempfile.gettempdir()).glob("signoff-embedded-*")) <= before


def test_an_older_bundle_is_refused_as_a_rollback(service: Service, tmp_path: Path) -> None:
    with _decider(service) as decider:
        before = decider.engine.bundle.revision
        edited = tmp_path / "edited"
        shutil.copytree(RULES, edited)
        (edited / "iam.yaml").write_text((edited / "iam.yaml").read_text() + "\n#\n")
        _sign(edited, service.private_key, service.bundle, FIRST_SIGNED - 10)
        assert not decider.refresh()
        assert decider.engine.bundle.revision == before


def test_bad_input_is_refused_as_the_service_refuses_it(service: Service) -> None:
    stub = pb_grpc.DecisionServiceStub(service.channel)
    message = check_request(alice(), "read", customers())
    message.principal.attributes.update({"undeclared": "x"})
    with pytest.raises(grpc.RpcError) as remote:
        stub.Check(message, timeout=TIMEOUT)
    with _decider(service) as decider, pytest.raises(InvalidInput) as local:
        decider.check_message(message)
    assert str(local.value) == remote.value.details()


def test_a_full_buffer_counts_its_drops(service: Service) -> None:
    with _decider(service, buffer_max=3, flush_interval=3600.0) as decider:
        for _ in range(5):
            decider.check_message(check_request(alice(), "read", customers()))
        assert decider.stats().dropped == 2
        assert decider.stats().pending == 3
    assert decider.stats().shipped == 3


def test_the_service_refuses_records_that_claim_its_own_fields(service: Service) -> None:
    stub = epb_grpc.EmbeddedServiceStub(service.channel)
    record = {
        "type": "decision",
        "decision_id": "d1",
        "verdict": "ALLOW",
        "policy_verdict": "ALLOW",
        "policy_revision": "r",
        "request": {"principal": {"id": "p", "kind": "human"}, "action": "a"},
        "caller": "someone-else",
    }
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitDecisionRecords(
            epb.SubmitDecisionRecordsRequest(records=[json.dumps(record)]), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "records[0].caller" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as not_json:
        stub.SubmitDecisionRecords(epb.SubmitDecisionRecordsRequest(records=["{"]), timeout=TIMEOUT)
    assert "records[0]" in (not_json.value.details() or "")


def test_an_unchanged_bundle_is_not_sent_again(service: Service) -> None:
    stub = epb_grpc.EmbeddedServiceStub(service.channel)
    first = stub.GetBundle(epb.GetBundleRequest(), timeout=TIMEOUT)
    assert first.bundle == service.bundle.read_bytes()
    again = stub.GetBundle(epb.GetBundleRequest(known_etag=first.etag), timeout=TIMEOUT)
    assert again.not_modified
    assert not again.bundle


def test_a_service_without_a_signed_bundle_says_so(service: Service) -> None:
    running = app.start(
        Engine(load_bundle(RULES)), "127.0.0.1:0", hash_key_id=KEY_ID, embedded=Embedded(None)
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = epb_grpc.EmbeddedServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetBundle(epb.GetBundleRequest(), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "signed bundle" in (refused.value.details() or "")
    finally:
        running.stop(grace=None)


def test_records_wait_while_the_service_is_unreachable_and_are_counted_when_lost(
    service: Service,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{closed_port()}") as unreachable:
        decider = EmbeddedDecider(
            unreachable,
            public_key=service.public_key,
            bundle_file=service.bundle,
            clock=fixed_clock(DAY),
            buffer_max=2,
            flush_interval=3600.0,
            poll_interval=3600.0,
            timeout=0.5,
        )
        for _ in range(3):
            decision, _ = decider.decide(convert.to_request(allowed_read(), Limits()))
            assert decision.verdict.name == "ALLOW"
        assert decider.flush() == 0
        assert (decider.stats().pending, decider.stats().dropped) == (2, 1)
        decider.close()
        assert (decider.stats().pending, decider.stats().dropped) == (0, 3)


def test_records_keep_only_the_allowlisted_attributes(service: Service) -> None:
    with _decider(service, audit_attributes=["principal.tenant"]) as decider:
        decider.check_message(check_request(alice(), "read", customers(), payload={"x": 1}))
    [record] = [r for r in _records(service) if r.get("decided_by") == "embedded"]
    assert record["request"]["principal"]["attributes"] == {"tenant": "acme"}
    assert record["request"]["resource"]["attributes"] == {}
    assert record["request"]["payload"] == {}
    assert record["request"]["payload_keys"] == ["x"]  # by name only
