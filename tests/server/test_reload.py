"""Hot reload: atomic swaps under load, refused bundles, the watcher, SIGHUP and the admin RPC."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signoff.client.masking import key_id
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.identity import CallerAuthenticator, NoAuthenticator
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.server.reload import POLICY_HEALTH
from signoff.v1 import admin_pb2 as adb
from signoff.v1 import admin_pb2_grpc as adb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.approvals.support import DevIdP
from tests.conftest import RULES, fixed_clock
from tests.server.harness import KEY, TIMEOUT, allowed_read, channel_to, rpc_error

BROKEN = "policies:\n  - id: half-written\n    resources: [customer_table\n"
EXTRA_RULE = """
policies:
  - id: extra
    resources: [customer_table]
    actions: [read]
    rules:
      - id: always-allow-stewards
        effect: allow
        roles: [data_steward]
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    copy = tmp_path / "rules"
    shutil.copytree(RULES, copy)
    return copy


@contextmanager
def reloading_server(rules: Path, auth: CallerAuthenticator | None = None) -> Iterator[app.Running]:
    def engine(bundle: Bundle) -> Engine:
        return Engine(bundle, clock=fixed_clock("2026-03-02T14:00:00Z"))

    running = app.start(
        engine(load_bundle(rules)),
        "127.0.0.1:0",
        hash_key_id=key_id(KEY),
        reloading=app.Reloading(rules, "cel-expr", auth or NoAuthenticator(), make_engine=engine),
    )
    try:
        yield running
    finally:
        running.stop(grace=None)


def _revision(port: int) -> str:
    with channel_to(port) as channel:
        return str(
            pb_grpc.DecisionServiceStub(channel)
            .Check(allowed_read(), timeout=TIMEOUT)
            .policy_revision
        )


def _policy_health(port: int) -> int:
    with channel_to(port) as channel:
        status: int = (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=POLICY_HEALTH), timeout=TIMEOUT)
            .status
        )
    return status


def test_reload_swaps_in_a_new_revision_that_decisions_name(rules: Path) -> None:
    with reloading_server(rules) as running:
        assert running.reloader is not None
        before = _revision(running.port)
        (rules / "extra.yaml").write_text(EXTRA_RULE)
        status, changed = running.reloader.reload()
        assert changed
        assert status.revision != before
        assert _revision(running.port) == status.revision
        _, again = running.reloader.reload()
        assert not again  # same files, same revision


def test_a_broken_save_is_refused_and_the_old_revision_keeps_answering(rules: Path) -> None:
    with reloading_server(rules) as running:
        assert running.reloader is not None
        before = _revision(running.port)
        (rules / "customer_data.yaml").write_text(BROKEN)
        status, changed = running.reloader.reload()
        assert not changed
        assert status.failed
        assert status.revision == before
        problem = status.problems[0]
        assert problem.file.endswith("customer_data.yaml")
        assert problem.line > 0
        assert problem.column > 0
        assert _revision(running.port) == before
        assert _policy_health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING

        shutil.copy(RULES / "customer_data.yaml", rules / "customer_data.yaml")
        (rules / "extra.yaml").write_text(EXTRA_RULE)
        status, changed = running.reloader.reload()
        assert changed
        assert not status.failed
        assert _revision(running.port) == status.revision != before
        assert _policy_health(running.port) == health_pb2.HealthCheckResponse.SERVING


def test_reloads_under_load_never_fail_a_call_or_mix_revisions_in_a_batch(rules: Path) -> None:
    batch = pb.CheckBatchRequest(items=[allowed_read() for _ in range(20)])
    with reloading_server(rules) as running, channel_to(running.port) as channel:
        assert running.reloader is not None
        stub = pb_grpc.DecisionServiceStub(channel)
        revisions: set[str] = set()
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    out = stub.CheckBatch(batch, timeout=TIMEOUT)
                except grpc.RpcError as exc:
                    failures.append(str(exc))
                    continue
                seen = {r.decision.policy_revision for r in out.results}
                if seen != {out.policy_revision} or any(r.HasField("error") for r in out.results):
                    failures.append(f"mixed or failed batch: {seen} vs {out.policy_revision}")
                revisions.add(out.policy_revision)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        expected = {running.reloader.status.revision}
        for i in range(10):
            if i % 2 == 0:
                (rules / "extra.yaml").write_text(EXTRA_RULE)
            else:
                (rules / "extra.yaml").unlink()
            status, changed = running.reloader.reload()
            assert changed
            expected.add(status.revision)
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert len(revisions) == 2
    assert revisions <= expected


def test_the_watcher_reloads_after_a_save_and_rides_out_a_half_written_file(rules: Path) -> None:
    with reloading_server(rules) as running:
        reloader = running.reloader
        assert reloader is not None
        before = _revision(running.port)
        stop = threading.Event()
        watcher = threading.Thread(
            target=reloader.watch, args=(stop,), kwargs={"interval": 0.05, "quiet": 0.2}
        )
        watcher.start()
        try:
            target = rules / "customer_data.yaml"
            whole = target.read_text()
            target.write_text(whole[: len(whole) // 2])  # an editor mid-save
            deadline = time.monotonic() + 10
            while not reloader.status.failed and time.monotonic() < deadline:
                assert _revision(running.port) == before
                time.sleep(0.02)
            assert reloader.status.failed
            assert _revision(running.port) == before
            target.write_text(whole + "\n# edited\n")
            while reloader.status.revision == before and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not reloader.status.failed
            assert _revision(running.port) == reloader.status.revision != before
        finally:
            stop.set()
            watcher.join()


def test_the_admin_rpc_reloads_for_administrators_only(rules: Path, tmp_path: Path) -> None:
    idp = DevIdP.create(tmp_path / "idp")
    with reloading_server(rules, idp.authenticator()) as running, channel_to(running.port) as ch:
        stub = adb_grpc.PolicyAdminServiceStub(ch)
        nobody = rpc_error(
            lambda: stub.ReloadPolicies(adb.ReloadPoliciesRequest(), timeout=TIMEOUT)
        )
        assert nobody.code() == grpc.StatusCode.UNAUTHENTICATED
        analyst = (("authorization", f"Bearer {idp.token('al@acme.io', 'analyst')}"),)
        denied = rpc_error(
            lambda: stub.ReloadPolicies(
                adb.ReloadPoliciesRequest(), metadata=analyst, timeout=TIMEOUT
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        admin = (("authorization", f"Bearer {idp.token('ops@acme.io', 'signoff_admin')}"),)
        (rules / "guardrails.yaml").write_text(BROKEN)
        refused = stub.ReloadPolicies(adb.ReloadPoliciesRequest(), metadata=admin, timeout=TIMEOUT)
        assert not refused.changed
        assert refused.status.last_load_failed
        assert refused.status.problems[0].file.endswith("guardrails.yaml")
        shutil.copy(RULES / "guardrails.yaml", rules / "guardrails.yaml")
        (rules / "extra.yaml").write_text(EXTRA_RULE)
        done = stub.ReloadPolicies(adb.ReloadPoliciesRequest(), metadata=admin, timeout=TIMEOUT)
        assert done.changed
        assert not done.status.last_load_failed
        status = stub.GetPolicyStatus(adb.GetPolicyStatusRequest(), metadata=admin, timeout=TIMEOUT)
        assert status.status.revision == done.status.revision == _revision(running.port)


def test_a_vanished_rules_directory_is_a_refused_load_not_a_dead_watcher(rules: Path) -> None:
    with reloading_server(rules) as running:
        assert running.reloader is not None
        before = _revision(running.port)
        shutil.rmtree(rules)
        status, changed = running.reloader.reload()
        assert not changed
        assert status.failed
        assert _revision(running.port) == before
        shutil.copytree(RULES, rules)
        status, _ = running.reloader.reload()
        assert not status.failed


def test_the_watcher_reloads_a_same_size_edit_that_keeps_the_modification_time(
    rules: Path,
) -> None:
    with reloading_server(rules) as running:
        reloader = running.reloader
        assert reloader is not None
        before = _revision(running.port)
        first_look = reloader.status.attempted_at
        stop = threading.Event()
        watcher = threading.Thread(
            target=reloader.watch, args=(stop,), kwargs={"interval": 0.05, "quiet": 0.1}
        )
        watcher.start()
        try:
            deadline = time.monotonic() + 10
            # The watcher's first look reloads once; the edit must come after it.
            while reloader.status.attempted_at == first_look and time.monotonic() < deadline:
                time.sleep(0.02)
            target = rules / "customer_data.yaml"
            stat = target.stat()
            text = target.read_text()
            edited = text.replace("effect: allow", "effect: deny ", 1)
            assert edited != text
            assert len(edited) == len(text)
            target.write_text(edited)
            # As `cp -p` or `rsync -t` leave it: same size, same modification time.
            os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert target.stat().st_size == stat.st_size
            while reloader.status.revision == before and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not reloader.status.failed
            assert _revision(running.port) == reloader.status.revision != before
        finally:
            stop.set()
            watcher.join()
