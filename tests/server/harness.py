"""Helpers shared by the end-to-end tests: an in-process server, request builders, status checks."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import struct_pb2

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import DEFAULT_MAX_PENDING_PER_REQUESTER, ApprovalStore
from signoff.client.masking import key_id
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.identity import NoAuthenticator
from signoff.policy.loader import load_bundle
from signoff.server import app, convert
from signoff.server.approvals import ApprovalService, Authenticator
from signoff.v1 import signoff_pb2 as pb
from signoff.views import Views
from tests.conftest import RULES, fixed_clock

# The HMAC key the tests' servers name in HASH entries (at least 32 bytes, like the real one).
KEY = b"signoff-e2e-test-hash-key-0123456789abcdef"
KEY_ID = key_id(KEY)
# Monday 2026-03-02 14:00 UTC (15:00 in Berlin): business hours, daytime everywhere.
DAY = "2026-03-02T14:00:00Z"
# Monday 23:30 UTC (Tuesday 00:30 in Berlin): night for customer data, after hours for infra.
NIGHT = "2026-03-02T23:30:00Z"
# No call in these tests should ever take this long; a hang fails instead of blocking the run.
TIMEOUT = 10.0
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# How long `signoff serve` may take to start (or to exit when it refuses to).
STARTUP_SECONDS = 20.0
LISTENING = re.compile(r"^signoff listening on (?P<host>\S+):(?P<port>\d+) ")

HUMAN = pb.PRINCIPAL_KIND_HUMAN
AGENT = pb.PRINCIPAL_KIND_AGENT
SERVICE = pb.PRINCIPAL_KIND_SERVICE


@functools.cache
def bundled(backend: str = "cel-expr") -> Bundle:
    """The bundled rules, loaded once per backend (a Bundle is immutable)."""
    return load_bundle(RULES, backend=backend)


@contextmanager
def serving(
    rules: Path | None = None,
    *,
    now: str = DAY,
    backend: str = "cel-expr",
    limits: convert.Limits | None = None,
    authenticator: Authenticator | None = None,
    redis_url: str = REDIS_URL,
    max_pending: int = DEFAULT_MAX_PENDING_PER_REQUESTER,
) -> Iterator[app.Running]:
    """Serve `rules` (default: the bundled rules) on a free port with the clock pinned at `now`,
    with approvals kept in the real Redis under a key prefix of its own."""
    bundle = bundled(backend) if rules is None else load_bundle(rules, backend=backend)
    engine = Engine(bundle, clock=fixed_clock(now))
    prefix = f"signoff:test:{uuid.uuid4().hex}:"
    store = ApprovalStore(redis_url, prefix=prefix, max_pending_per_requester=max_pending)
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    approvals = Approvals(store, digest_key=digest_key(KEY), views=views)
    running = app.start(
        engine,
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        limits=limits,
        approvals=approvals,
        approval_service=ApprovalService(approvals, authenticator or NoAuthenticator()),
    )
    try:
        yield running
    finally:
        running.stop(grace=None)
        drop_prefix(store.redis, prefix)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "signoff.cli", "serve", *args]


def serve_environment(prefix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any SIGNOFF_* variable, keys under `prefix`, plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env["SIGNOFF_REDIS_PREFIX"] = prefix
    env["SIGNOFF_HTTP_ADDRESS"] = "127.0.0.1:0"  # the default 8080 may be taken
    # One process (the default is one per core): tests of the supervisor ask for more.
    env["SIGNOFF_PROCESSES"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Served:
    process: subprocess.Popen[str]
    host: str
    port: int


@contextmanager
def serve_process(
    *args: str, prefix: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Served]:
    """Start `signoff serve`, wait for its listening line; the process is killed if still alive.
    Its Redis keys go under `prefix`, which the caller drops."""
    process = subprocess.Popen(
        serve_command(*args),
        env=serve_environment(prefix, env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = first_line(process)
        match = LISTENING.match(line)
        if match is None:
            process.kill()
            _, err = process.communicate(timeout=STARTUP_SECONDS)
            pytest.fail(f"no listening line (got {line!r}); stderr:\n{err}")
        yield Served(process, match["host"], int(match["port"]))
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=STARTUP_SECONDS)


def first_line(process: subprocess.Popen[str]) -> str:
    """The process's first line of output, or "" if none comes within STARTUP_SECONDS."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=STARTUP_SECONDS):
            return ""
    return process.stdout.readline()


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under `prefix` (tests share the machine's Redis)."""
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@contextmanager
def channel_to(port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def nested(levels: int) -> dict[str, Any]:
    """`levels` objects, each the only value of the one around it: {"d": {"d": ... {"v": 1}}}."""
    inner: dict[str, Any] = {"v": 1}
    for _ in range(levels - 1):
        inner = {"d": inner}
    return inner


def deep_path(levels: int) -> str:
    """The path, below a Struct, of the innermost object of `nested(levels)` put under "deep"."""
    return ".deep" + ".d" * (levels - 1)


def principal(
    pid: str, kind: pb.PrincipalKind.ValueType, roles: Sequence[str], **attributes: Any
) -> pb.Principal:
    return pb.Principal(id=pid, kind=kind, roles=roles, attributes=struct(attributes))


def alice() -> pb.Principal:
    """An analyst of tenant acme who is not a data steward."""
    return principal("alice@acme.io", HUMAN, ["analyst"], tenant="acme")


def dana() -> pb.Principal:
    """A data steward of tenant acme."""
    return principal("dana@acme.io", HUMAN, ["data_steward"], tenant="acme")


def eve() -> pb.Principal:
    """An analyst of another tenant (globex)."""
    return principal("eve@globex.io", HUMAN, ["analyst"], tenant="globex")


def intern() -> pb.Principal:
    """A human of tenant acme with no role that any policy grants anything to."""
    return principal("ian@acme.io", HUMAN, ["intern"], tenant="acme")


def export_bot() -> pb.Principal:
    """An AI agent with the analyst role, owned by alice who signed in with MFA."""
    return principal(
        "agent:export-bot", AGENT, ["analyst"], tenant="acme", owner="alice@acme.io", owner_mfa=True
    )


def orphan_bot(tenant: str = "acme") -> pb.Principal:
    """An AI agent nobody owns."""
    return principal("agent:orphan-bot", AGENT, ["analyst"], tenant=tenant)


def ivan() -> pb.Principal:
    """A human IAM administrator."""
    return principal("ivan@acme.io", HUMAN, ["iam_admin"], tenant="acme")


def deploy_bot() -> pb.Principal:
    """A CI/CD pipeline allowed to deploy."""
    return principal("svc:deploy-bot", SERVICE, ["deployer"], tenant="acme", owner="dana@acme.io")


def customers(tenant: str = "acme") -> pb.Resource:
    """The CRM customer table: a customer id, an email and a card number (tagged), a country."""
    return pb.Resource(
        kind="customer_table",
        id="crm.customers",
        attributes=struct({"tenant": tenant}),
        fields=[
            pb.Field(path="customers.*.id", tags=["pii.customer_id"]),
            pb.Field(path="customers.*.email", tags=["pii.email"]),
            pb.Field(path="customers.*.card_number", tags=["pci.pan"]),
            pb.Field(path="customers.*.country"),
        ],
    )


def iam_role() -> pb.Resource:
    return pb.Resource(kind="iam_role", id="roles/db-admin", attributes=struct({"tenant": "acme"}))


def deployment() -> pb.Resource:
    return pb.Resource(
        kind="infra.k8s_deployment", id="prod/checkout", attributes=struct({"tenant": "acme"})
    )


def check_request(
    who: pb.Principal,
    action: str,
    what: pb.Resource,
    *,
    environment: str = "prod",
    payload: Mapping[str, Any] | None = None,
) -> pb.CheckRequest:
    request = pb.CheckRequest(
        principal=who, action=action, resource=what, context=pb.Context(environment=environment)
    )
    if payload is not None:
        request.payload.CopyFrom(struct(payload))
    return request


def allowed_read() -> pb.CheckRequest:
    """alice reads 20 rows of customer data by day: ALLOW."""
    return check_request(alice(), "read", customers(), payload={"row_limit": 20})


def masked_export() -> pb.CheckRequest:
    """alice exports customer data in bulk: MASK (email, card number, customer id)."""
    return check_request(
        alice(), "export", customers(), payload={"target": "s3://acme-exports/customers.parquet"}
    )


def cross_tenant_read() -> pb.CheckRequest:
    """eve (globex) reads acme's customer data: DENY."""
    return check_request(eve(), "read", customers(), payload={"row_limit": 10})


def prod_grant() -> pb.CheckRequest:
    """ivan grants a role to bob in prod: REQUIRE_APPROVAL by two security engineers."""
    return check_request(
        ivan(), "grant_role", iam_role(), payload={"grantee": "bob@acme.io", "role": "db-admin"}
    )


def rpc_error(call: Callable[[], object]) -> grpc.Call:
    """Run `call`, which must fail, and return the failed call (code, details, metadata)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert isinstance(error, grpc.Call)
    return error
