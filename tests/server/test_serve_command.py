"""`signoff serve` as a subprocess: refusing bad bundles, serving, SIGNOFF_* config, clean stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signoff.bundles.keys import generate_keys
from signoff.bundles.signing import sign_bundle
from signoff.cli import build_parser
from signoff.client.masking import key_id
from signoff.cmd import serve
from signoff.devcerts import create_dev_certs
from signoff.engine.evaluator import Engine
from signoff.errors import ConfigError
from signoff.keys import derive
from signoff.server import app
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.conftest import RULES, WriteRules
from tests.server.harness import (
    KEY,
    LISTENING,
    REDIS_URL,
    STARTUP_SECONDS,
    TIMEOUT,
    Served,
    allowed_read,
    bundled,
    channel_to,
    drop_prefix,
    masked_export,
    rpc_error,
    serve_command,
    serve_environment,
    serve_process,
    serving,
)

PROBLEM = re.compile(
    r"^\s+(?P<file>\S+?):(?P<line>\d+):(?P<col>\d+)(?: \[(?P<rule>[^\]]+)\])?: .+$"
)

# The servers share the machine's Redis: they keep their keys (approvals, audit chain, dev
# secret) under a prefix of this module's own, dropped when the module is done.
PREFIX = f"signoff:test:serve:{uuid.uuid4().hex}:"


@pytest.fixture(scope="module", autouse=True)
def _drop_redis_keys() -> Iterator[None]:
    yield
    drop_prefix(redis.Redis.from_url(REDIS_URL), PREFIX)


def _environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return serve_environment(PREFIX, extra)


def _run(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `signoff serve` expecting it to exit by itself (it is killed after a timeout)."""
    return subprocess.run(
        serve_command(*args),
        env=_environment(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )


def _serve(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> AbstractContextManager[Served]:
    return serve_process(*args, prefix=PREFIX, env=env, cwd=cwd)


def _health(port: int, service: str = "signoff.v1.DecisionService") -> int:
    with channel_to(port) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
        )
    status: int = response.status
    return status


def _stop(served: Served) -> tuple[int, str, str]:
    served.process.send_signal(signal.SIGTERM)
    out, err = served.process.communicate(timeout=STARTUP_SECONDS)
    return served.process.returncode, out, err


BAD_SCHEMA = """
schema:
  principal: {tenant: string}
"""
BAD_POLICIES = """
policies:
  - id: docs
    resources: [doc]
    actions: [read]
    rules:
      - id: typo
        effect: allow
        when: principal.attr.tenantt == 'acme'
      - id: bad-effect
        effect: permit
"""
BAD_CEL = """
policies:
  - id: other
    resources: [doc]
    actions: [write]
    rules:
      - id: undeclared
        effect: deny
        when: resource.attr.zzz == 1
"""
BAD_YAML = """
policies:
  - id: broken: [
"""


def test_bad_bundle_exits_2_listing_every_problem_with_its_position(
    write_rules: WriteRules,
) -> None:
    root = write_rules(schema=BAD_SCHEMA, a=BAD_POLICIES, b=BAD_CEL, c=BAD_YAML)

    result = _run("--rules", str(root), "--address", "127.0.0.1:0")

    assert result.returncode == 2
    assert "listening" not in result.stdout
    assert "Traceback" not in result.stderr
    assert "signoff: refusing to start: policy bundle has 4 problem(s):" in result.stderr
    problems = [m for m in map(PROBLEM.match, result.stderr.splitlines()) if m is not None]
    found = {(Path(m["file"]).name, int(m["line"]), m["rule"]) for m in problems}
    assert found == {
        ("a.yaml", 8, "docs/typo"),
        ("a.yaml", 10, "docs/bad-effect"),
        ("b.yaml", 8, "other/undeclared"),
        ("c.yaml", 2, None),
    }
    assert all(Path(m["file"]).parent == root and int(m["col"]) >= 1 for m in problems)


def test_missing_rules_directory_exits_2(tmp_path: Path) -> None:
    result = _run("--rules", str(tmp_path / "nowhere"), "--address", "127.0.0.1:0")

    assert result.returncode == 2
    assert "rules directory not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_answers_health_and_checks_and_stops_cleanly_on_sigterm() -> None:
    with _serve("--rules", str(RULES), "--address", "127.0.0.1:0") as served:
        assert served.host == "127.0.0.1"
        assert _health(served.port) == health_pb2.HealthCheckResponse.SERVING
        with channel_to(served.port) as channel:
            response = pb_grpc.DecisionServiceStub(channel).Check(allowed_read(), timeout=TIMEOUT)
        assert response.verdict == pb.VERDICT_ALLOW
        assert response.policy_revision == bundled().revision

        started = time.monotonic()
        code, _, err = _stop(served)

    assert code == 0, err
    assert time.monotonic() - started < 10
    assert "Traceback" not in err
    with channel_to(served.port) as channel:
        gone = rpc_error(
            lambda: health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        )
    assert gone.code() == grpc.StatusCode.UNAVAILABLE


# Runs `signoff serve` in a process that sends itself SIGTERM the moment the listening line is
# written: the earliest instant a supervisor that waits for that line could stop the server.
SIGTERM_ON_LISTENING = """
import os, signal, sys
from signoff import cli

class Stdout:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        written = self._stream.write(text)
        if "signoff listening on" in text:
            self._stream.flush()
            os.kill(os.getpid(), signal.SIGTERM)
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)

sys.stdout = Stdout(sys.stdout)
sys.exit(cli.main(sys.argv[1:]))
"""


SERVE_BUNDLED = ("serve", "--rules", str(RULES), "--address", "127.0.0.1:0")


def test_sigterm_as_soon_as_the_server_says_it_listens_stops_it_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_ON_LISTENING, *SERVE_BUNDLED],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )

    assert LISTENING.match(result.stdout)
    assert result.returncode == 0, f"exit {result.returncode}; stderr:\n{result.stderr[-2000:]}"


def test_signoff_environment_variables_configure_the_server(tmp_path: Path) -> None:
    env = {
        "SIGNOFF_RULES": str(RULES),
        "SIGNOFF_ADDRESS": "127.0.0.1:0",
        "SIGNOFF_HASH_KEY": KEY.decode(),
        "SIGNOFF_MAX_BATCH_ITEMS": "2",
    }
    # Run where ./rules does not exist, so only SIGNOFF_RULES can point at the bundle.
    with _serve(env=env, cwd=tmp_path) as served:
        with channel_to(served.port) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            masked = stub.Check(masked_export(), timeout=TIMEOUT)
            at_limit = stub.CheckBatch(
                pb.CheckBatchRequest(items=[allowed_read()] * 2), timeout=TIMEOUT
            )
            over = rpc_error(
                lambda: stub.CheckBatch(
                    pb.CheckBatchRequest(items=[allowed_read()] * 3), timeout=TIMEOUT
                )
            )
        code, _, err = _stop(served)

    assert served.port != 50051  # SIGNOFF_ADDRESS asked for a free port
    hash_key_ids = [
        e.key_id for e in masked.masking_plan.fields if e.operator == pb.MASK_OPERATOR_HASH
    ]
    # The masking key is derived from the root secret, never the root itself.
    assert hash_key_ids == [key_id(derive(KEY, "masking"))]
    assert len(at_limit.results) == 2
    assert over.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code == 0
    assert "no hash key configured" not in err


def test_command_line_flags_override_environment_variables(tmp_path: Path) -> None:
    env = {"SIGNOFF_RULES": str(tmp_path / "nowhere"), "SIGNOFF_ADDRESS": "127.0.0.1:1"}

    with _serve("--rules", str(RULES), "--address", "127.0.0.1:0", env=env) as served:
        assert _health(served.port) == health_pb2.HealthCheckResponse.SERVING
        code, _, _ = _stop(served)

    assert code == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNOFF_WORKERS", "many"),
        ("SIGNOFF_MAX_BATCH_ITEMS", "lots"),
        ("SIGNOFF_LOG_LEVEL", "verbose"),
        ("SIGNOFF_CEL_BACKEND", "bogus"),
        ("SIGNOFF_WORKERS", "0"),
        ("SIGNOFF_HASH_KEY", "too-short"),
        ("SIGNOFF_MAX_MESSAGE_BYTES", "100"),
        ("SIGNOFF_MAX_MESSAGE_BYTES", "big"),
        ("SIGNOFF_MAX_CONCURRENT_RPCS", "-1"),
        ("SIGNOFF_HASH_KEY_FILE", "/nonexistent/signoff.key"),
    ],
)
def test_bad_environment_value_exits_2_with_a_message_not_a_traceback(
    variable: str, value: str
) -> None:
    result = _run("--rules", str(RULES), "--address", "127.0.0.1:0", env={variable: value})

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"^signoff\b.*: ", result.stderr, re.MULTILINE)


def test_port_already_in_use_is_a_clear_error() -> None:
    with serving() as running:
        result = _run("--rules", str(RULES), "--address", f"127.0.0.1:{running.port}")
        # The server that holds the port is untouched.
        assert _health(running.port) == health_pb2.HealthCheckResponse.SERVING

    assert result.returncode == 1
    assert f"signoff: cannot listen on 127.0.0.1:{running.port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_starting_in_process_on_a_used_port_raises_oserror() -> None:
    with serving() as running, pytest.raises(OSError, match=f"127.0.0.1:{running.port}"):
        app.start(Engine(bundled()), f"127.0.0.1:{running.port}", hash_key_id="k")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_processes_share_one_port_and_stop_together_on_sigterm() -> None:
    with _serve(*SERVE_BUNDLED[1:], "--processes", "2", "--workers", "2") as served:
        children = _children(served.process.pid)
        assert len(children) == 2
        for _ in range(6):  # each channel is a new connection, which the kernel places
            with channel_to(served.port) as channel:
                response = pb_grpc.DecisionServiceStub(channel).Check(
                    allowed_read(), timeout=TIMEOUT
                )
            assert response.verdict == pb.VERDICT_ALLOW
        code, _, err = _stop(served)
    assert code == 0, err
    assert not any(_alive(c) for c in children)


def test_a_serving_process_dying_stops_the_others_with_an_error() -> None:
    with _serve(*SERVE_BUNDLED[1:], "--processes", "2", "--workers", "2") as served:
        first, second = _children(served.process.pid)
        os.kill(first, signal.SIGKILL)
        code = served.process.wait(timeout=STARTUP_SECONDS)
        assert code != 0
        deadline = time.monotonic() + STARTUP_SECONDS
        while _alive(second) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(second)


def _free_port_pair() -> int:
    """A port p with p and p+1 both free just now."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as reply:
        return str(reply.read().decode())


def test_each_of_several_processes_serves_its_own_metrics_on_consecutive_ports() -> None:
    port = _free_port_pair()
    with _serve(
        *SERVE_BUNDLED[1:], "--processes", "2", "--metrics-address", f"127.0.0.1:{port}"
    ) as served:
        for _ in range(6):
            with channel_to(served.port) as channel:
                pb_grpc.DecisionServiceStub(channel).Check(allowed_read(), timeout=TIMEOUT)
        pages = [_metrics(port), _metrics(port + 1)]
        code, _, err = _stop(served)
    assert code == 0, err
    assert all("signoff" in page for page in pages)


def test_metrics_ports_past_the_last_port_are_refused() -> None:
    result = _run(*SERVE_BUNDLED[1:], "--processes", "2", "--metrics-address", "127.0.0.1:65535")
    assert result.returncode == 2
    assert "65535" in result.stderr


def test_processes_default_to_one_per_usable_core() -> None:
    args = build_parser().parse_args(["serve", "--rules", str(RULES)])
    assert args.processes == 0
    assert serve.from_args(args).processes == len(os.sched_getaffinity(0))
    args = build_parser().parse_args(["serve", "--rules", str(RULES), "--processes", "1"])
    assert serve.from_args(args).processes == 1


def test_watchers_have_their_own_budget_of_at_least_one() -> None:
    args = build_parser().parse_args(["serve", "--rules", str(RULES)])
    assert serve.from_args(args).max_watchers == 16
    args = build_parser().parse_args(["serve", "--rules", str(RULES), "--max-watchers", "0"])
    with pytest.raises(ConfigError, match="--max-watchers"):
        serve.from_args(args)


def test_metrics_addresses_give_each_process_its_own_port() -> None:
    assert serve.metrics_addresses("127.0.0.1:9000", 3) == [
        "127.0.0.1:9000",
        "127.0.0.1:9001",
        "127.0.0.1:9002",
    ]
    assert serve.metrics_addresses("127.0.0.1:0", 2) == ["127.0.0.1:0", "127.0.0.1:0"]


def test_a_supervised_process_stops_when_its_supervisor_is_killed() -> None:
    with _serve(*SERVE_BUNDLED[1:], "--processes", "2", "--workers", "2") as served:
        children = _children(served.process.pid)
        served.process.kill()
        served.process.wait(timeout=STARTUP_SECONDS)
        deadline = time.monotonic() + STARTUP_SECONDS
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(c) for c in children)


def test_sighup_reloads_the_bundle_and_a_refused_one_keeps_the_old(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    with _serve("--rules", str(rules), "--address", "127.0.0.1:0") as served:

        def revision() -> str:
            with channel_to(served.port) as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                return str(stub.Check(allowed_read(), timeout=TIMEOUT).policy_revision)

        def wait_for(pred: Callable[[], bool]) -> bool:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not pred() and time.monotonic() < deadline:
                time.sleep(0.05)
            return pred()

        before = revision()
        (rules / "guardrails.yaml").write_text("policies: [\n")
        served.process.send_signal(signal.SIGHUP)
        # The refusal shows as signoff.policy NOT_SERVING; waiting for it (not for a fixed
        # time) keeps a slow reload from reading the repaired file written next.
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert wait_for(lambda: _health(served.port, "signoff.policy") == not_serving)
        assert revision() == before
        (rules / "guardrails.yaml").write_text((RULES / "guardrails.yaml").read_text() + "\n#\n")
        served.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: revision() != before)
        code, _, err = _stop(served)
    assert code == 0, err
    assert "refused" in err
    assert "guardrails.yaml" in err


def test_serves_a_signed_bundle_and_reloads_a_newly_signed_one(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "keys")
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    tarball = tmp_path / "rules.tar.gz"
    signed_at = int(time.time())
    first = sign_bundle(rules, private, tarball, signed_at=signed_at - 60)
    assert first == bundled().revision
    older = tmp_path / "older.tar.gz"
    shutil.copyfile(tarball, older)
    args = ("--rules", str(tarball), "--bundle-public-key", str(public), "--address", "127.0.0.1:0")
    with _serve(*args) as served:

        def revision() -> str:
            with channel_to(served.port) as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                return str(stub.Check(allowed_read(), timeout=TIMEOUT).policy_revision)

        assert revision() == first
        (rules / "guardrails.yaml").write_text((RULES / "guardrails.yaml").read_text() + "\n#\n")
        second = sign_bundle(rules, private, tarball, signed_at=signed_at)
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + STARTUP_SECONDS
        while revision() != second and time.monotonic() < deadline:
            time.sleep(0.05)
        assert revision() == second
        # The first bundle, validly signed but older, put back: refused, the newer one serves.
        os.replace(older, tarball)
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + STARTUP_SECONDS
        serving = health_pb2.HealthCheckResponse.SERVING
        while _health(served.port, "signoff.policy") == serving and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _health(served.port, "signoff.policy") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert revision() == second
        code, _, err = _stop(served)
    assert code == 0, err
    assert "rollback refused" in err


def test_unsigned_or_tampered_bundles_are_refused_at_start(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "keys")
    _, other = generate_keys(tmp_path / "other")
    tarball = tmp_path / "rules.tar.gz"
    sign_bundle(RULES, private, tarball)
    key = ("--bundle-public-key", str(public))

    another_key = _run("--rules", str(tarball), "--bundle-public-key", str(other))
    assert another_key.returncode == 2
    assert "signature" in another_key.stderr

    directory = _run("--rules", str(RULES), *key)  # unsigned files while a key is configured
    assert directory.returncode == 2
    assert "Traceback" not in directory.stderr

    no_key = _run("--rules", str(tarball))
    assert no_key.returncode == 2
    assert "--bundle-public-key" in no_key.stderr

    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(bytes(data))
    refused = _run("--rules", str(tampered), *key)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr


def test_serves_mutual_tls_to_the_check_command(tmp_path: Path) -> None:
    certs = create_dev_certs(tmp_path)
    tls = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    serve = ["--rules", str(RULES), "--address", "127.0.0.1:0", *tls]
    with _serve(*serve, "--tls-client-ca", str(certs.ca)) as served:
        check = subprocess.run(
            [
                sys.executable, "-m", "signoff.cli", "check", "--addr", f"localhost:{served.port}",
                "--principal", "alice@acme.io", "--role", "analyst", "--attr", "tenant=acme",
                "--action", "read", "--resource-kind", "customer_table",
                "--resource-attr", "tenant=acme", "--json",
                "--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert),
                "--tls-key", str(certs.client_key),
            ],
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=STARTUP_SECONDS,
            check=False,
        )  # fmt: skip
        code, _, err = _stop(served)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["verdict"] == "ALLOW"
    assert code == 0, err


def test_plaintext_beyond_loopback_is_refused_unless_chosen() -> None:
    result = _run("--rules", str(RULES), "--address", "0.0.0.0:0")
    assert result.returncode == 2
    assert "without TLS" in result.stderr
    assert "Traceback" not in result.stderr
    with _serve(
        "--rules", str(RULES), "--address", "0.0.0.0:0", env={"SIGNOFF_ALLOW_PLAINTEXT": "on"}
    ) as served:
        assert _health(served.port) == health_pb2.HealthCheckResponse.SERVING
        assert _stop(served)[0] == 0


def test_a_bundle_refused_as_a_whole_is_named_without_a_made_up_position(
    tmp_path: Path,
) -> None:
    private, _ = generate_keys(tmp_path / "keys")
    _, other = generate_keys(tmp_path / "other")
    tarball = tmp_path / "rules.tar.gz"
    sign_bundle(RULES, private, tarball)

    refused = _run("--rules", str(tarball), "--bundle-public-key", str(other))

    assert refused.returncode == 2
    assert f"\n  {tarball}: signature does not verify" in refused.stderr
    assert ":0:0" not in refused.stderr


def test_the_start_up_log_says_whether_approvers_tokens_are_verified(tmp_path: Path) -> None:
    from signoff.devtokens import create_dev_keys

    serve = ("--rules", str(RULES), "--address", "127.0.0.1:0")
    with _serve(*serve) as served:
        _, _, off = _stop(served)
    jwks = create_dev_keys(tmp_path / "idp")
    verified = {
        "SIGNOFF_JWKS": str(jwks),
        "SIGNOFF_JWT_ISSUER": "signoff-dev",
        "SIGNOFF_JWT_AUDIENCE": "signoff",
    }
    with _serve(*serve, env=verified) as served:
        _, _, on = _stop(served)

    assert (
        "signoff.server: approver authentication: off (SIGNOFF_JWKS is unset): approval and "
        "policy admin calls answer UNAUTHENTICATED"
    ) in off
    assert (
        f"signoff.server: approver authentication: JWT verification on: keys from {str(jwks)!r}, "
        "issuer 'signoff-dev', audience 'signoff'"
    ) in on
