"""Real processes for the durability tests: a private redis-server and `signoff serve` instances."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.devtokens import DEV_AUDIENCE, DEV_ISSUER, mint
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.conftest import RULES
from tests.server.harness import check_request, iam_role, ivan

T = TypeVar("T")

STARTUP_SECONDS = 20.0
# No single call should take this long; a hang fails the test instead of blocking the run.
RPC_TIMEOUT = 10.0
# How long a service may take to notice that Redis is back.
RECONNECT_SECONDS = 15.0
# The hash key the services share when a test configures one (32+ bytes, like a real one).
HASH_KEY = "signoff-durability-test-hash-key-0123456789"
LISTENING = re.compile(r"^signoff listening on (?P<host>\S+):(?P<port>\d+) ")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not on PATH: the durability tests need Redis 7 installed "
            "(a project requirement on this machine kind; e.g. apt-get install redis-server)"
        )
    return binary


class RedisServer:
    """A private redis-server on a fixed port and directory; can be stopped, killed, restarted."""

    def __init__(
        self, directory: Path, *, appendonly: bool, fsync_always: bool = True, port: int = 0
    ) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.fsync_always = fsync_always
        self.port = port or free_port()
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.log),
        ]
        if self.appendonly and self.fsync_always:
            command += ["--appendfsync", "always"]
        return command

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.ping():
            if self.process.poll() is not None:
                pytest.fail(
                    f"redis-server on port {self.port} exited with {self.process.returncode}; "
                    f"log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} never answered PING")
            time.sleep(0.02)

    def ping(self) -> bool:
        # No retries: redis-py's default backoff would turn one refused connection into seconds.
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def stop(self) -> None:
        """SIGTERM: Redis closes its clients and flushes the AOF before exiting."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all; only what was already fsynced survives."""
        self._end(signal.SIGKILL)

    def restart(self, *, kill: bool = False) -> None:
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def _end(self, signum: signal.Signals) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STARTUP_SECONDS)

    def close(self) -> None:
        self.kill()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def service_environment(
    jwks: Path, hash_key: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without SIGNOFF_* or REDIS_URL, plus the dev identity provider."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIGNOFF_") and k not in ("REDIS_URL",)
    }
    env.update(
        {
            "SIGNOFF_JWKS": str(jwks),
            "SIGNOFF_JWT_ISSUER": DEV_ISSUER,
            "SIGNOFF_JWT_AUDIENCE": DEV_AUDIENCE,
            "SIGNOFF_HTTP_ADDRESS": "127.0.0.1:0",  # the default 8080 may be taken
        }
    )
    if hash_key is not None:
        env["SIGNOFF_HASH_KEY"] = hash_key
    env.update(extra or {})
    return env


@dataclass
class Service:
    """One `signoff serve` process; its stderr goes to a file so it can never block on a pipe."""

    name: str
    process: subprocess.Popen[str]
    log: Path
    port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill9(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STARTUP_SECONDS)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STARTUP_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return "(no log)"


@dataclass
class Services:
    """Starts `signoff serve` processes on one Redis and stops every one of them at the end."""

    directory: Path
    jwks: Path
    started: list[Service] = field(default_factory=list)

    def start(
        self,
        redis_url: str,
        *,
        name: str = "",
        hash_key: str | None = HASH_KEY,
        prefix: str = "signoff:",
        env: dict[str, str] | None = None,
    ) -> Service:
        return self.start_many(
            redis_url, 1, names=[name], hash_key=hash_key, prefix=prefix, env=env
        )[0]

    def start_many(
        self,
        redis_url: str,
        count: int,
        *,
        names: list[str] | None = None,
        hash_key: str | None = HASH_KEY,
        prefix: str = "signoff:",
        env: dict[str, str] | None = None,
    ) -> list[Service]:
        """Launch `count` processes at once, then wait for each one's listening line."""
        labels = names or [""] * count
        launched = []
        for label in labels:
            name = label or f"service{len(self.started) + 1}"
            log = self.directory / f"{name}-{len(self.started)}.log"
            with log.open("w") as err:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "signoff.cli",
                        "serve",
                        "--address",
                        "127.0.0.1:0",
                        "--rules",
                        str(RULES),
                        "--redis-url",
                        redis_url,
                        "--redis-prefix",
                        prefix,
                    ],
                    env=service_environment(self.jwks, hash_key, env),
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            service = Service(name, process, log)
            self.started.append(service)
            launched.append(service)
        for service in launched:
            service.port = _listening_port(service)
        return launched

    def close(self) -> None:
        for service in self.started:
            service.close()


def _listening_port(service: Service) -> int:
    stdout = service.process.stdout
    assert stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=STARTUP_SECONDS)
    line = stdout.readline() if ready else ""
    match = LISTENING.match(line)
    if match is None:
        service.close()
        pytest.fail(
            f"{service.name} printed no listening line (got {line!r}); "
            f"stderr:\n{service.log_text()}"
        )
    return int(match["port"])


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approvers:
    """Bearer tokens minted with the dev key for two distinct security engineers."""

    sam: str
    sue: str


def approvers(keys: Path) -> Approvers:
    return Approvers(
        sam=mint(keys, subject="sam@acme.io", roles=["security"]),
        sue=mint(keys, subject="sue@acme.io", roles=["security"]),
    )


# --- requests and calls ---------------------------------------------------------------------


def grant(role: str = "db-admin", approval_id: str = "") -> pb.CheckRequest:
    """ivan grants `role` to bob in prod: REQUIRE_APPROVAL by two distinct security engineers."""
    request = check_request(
        ivan(), "grant_role", iam_role(), payload={"grantee": "bob@acme.io", "role": role}
    )
    request.approval_id = approval_id
    return request


class Client:
    """One channel to one service, with the calls the tests make; close it (or use `with`)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.channel = grpc.insecure_channel(service.target)
        self.decisions = pb_grpc.DecisionServiceStub(self.channel)
        self.approvals = apb_grpc.ApprovalServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def check(self, request: pb.CheckRequest) -> pb.CheckResponse:
        return self.decisions.Check(request, timeout=RPC_TIMEOUT)

    def approve(self, approval_id: str, token: str, reason: str = "reviewed") -> apb.Approval:
        response = self.approvals.Approve(
            apb.ApproveRequest(approval_id=approval_id, reason=reason),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=RPC_TIMEOUT,
        )
        return response.approval

    def get(self, approval_id: str, token: str) -> apb.Approval:
        response = self.approvals.GetApproval(
            apb.GetApprovalRequest(approval_id=approval_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=RPC_TIMEOUT,
        )
        return response.approval

    def pending(self, role: str = "db-admin") -> str:
        """Check a grant that needs approval; returns the approval id it is held under."""
        response = self.check(grant(role))
        assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL, response
        assert response.approval_id.startswith("apr_"), response
        return response.approval_id


@contextlib.contextmanager
def clients(*services: Service) -> Iterator[list[Client]]:
    opened = [Client(s) for s in services]
    try:
        yield opened
    finally:
        for c in opened:
            c.close()


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Run `call`, which must fail with an RPC error, and return that error."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    code: grpc.StatusCode = error.code()
    return code


def details_of(error: grpc.RpcError) -> str:
    assert isinstance(error, grpc.Call)
    return str(error.details())


def until_available(call: Callable[[], T], *, seconds: float = RECONNECT_SECONDS) -> T:
    """Repeat `call` while it answers UNAVAILABLE, up to a deadline; its first real answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if code_of(exc) != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def state_of(approval: apb.Approval) -> str:
    return apb.ApprovalState.Name(approval.state)


def verdict_of(response: pb.CheckResponse) -> str:
    return pb.Verdict.Name(response.verdict)
