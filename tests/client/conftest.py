"""Fixtures for the client tests: real gRPC servers, scripted ones and the signoff server itself."""

from __future__ import annotations

import textwrap
import threading
from collections import deque
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import grpc
import pytest

from signoff.client import SignoffClient
from signoff.devtokens import DEV_AUDIENCE, DEV_ISSUER, JWKS_FILE, create_dev_keys, mint
from signoff.identity import Authenticator, IdentityConfig
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.server.harness import NIGHT, closed_port, serving

# A stalled call is held at most this long, so a test that gives no timeout fails instead of hangs.
STALL_LIMIT = 10.0

Method = Literal["Check", "CheckBatch"]
_Response = TypeVar("_Response", pb.CheckResponse, pb.CheckBatchResponse)


@dataclass(frozen=True)
class _Abort:
    code: grpc.StatusCode
    details: str


class _Stall:
    pass


class ScriptedServer(pb_grpc.DecisionServiceServicer):
    """A DecisionService on a real gRPC server that answers each call with the next scripted
    outcome for its method, and records every request as it came off the wire.

    A call with nothing scripted for it fails with INTERNAL, so a test never waits on a reply.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._check_script: deque[pb.CheckResponse | _Abort | _Stall] = deque()
        self._batch_script: deque[pb.CheckBatchResponse | _Abort | _Stall] = deque()
        self._clients: list[SignoffClient] = []
        self.checks: list[pb.CheckRequest] = []
        self.batches: list[pb.CheckBatchRequest] = []
        # Seconds each call (Check or CheckBatch, in arrival order) had left before its deadline.
        self.time_remaining: list[float | None] = []
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._pool, options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_DecisionServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def answer(self, *responses: pb.CheckResponse) -> None:
        """Answer the next Check calls with `responses`, in order."""
        self._check_script.extend(responses)

    def answer_batch(self, *responses: pb.CheckBatchResponse) -> None:
        """Answer the next CheckBatch calls with `responses`, in order."""
        self._batch_script.extend(responses)

    def abort(self, code: grpc.StatusCode, details: str, method: Method = "Check") -> None:
        """Fail the next call of `method` with this status."""
        self._script(method).append(_Abort(code, details))

    def stall(self, method: Method = "Check") -> None:
        """Hold the next call of `method` unanswered until the client gives up on it."""
        self._script(method).append(_Stall())

    def client(self, *, timeout: float = 5.0) -> SignoffClient:
        """A client that opens its own channel to this server; closed when the server stops."""
        opened = SignoffClient(self.address, timeout=timeout)
        self._clients.append(opened)
        return opened

    def calls(self) -> int:
        with self._lock:
            return len(self.checks) + len(self.batches)

    def stop(self) -> None:
        for opened in self._clients:
            opened.close()
        self._server.stop(grace=None).wait()
        self._pool.shutdown(wait=True)

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        with self._lock:
            self.checks.append(request)
            self.time_remaining.append(context.time_remaining())
        return self._play("Check", self._check_script, context)

    def CheckBatch(
        self, request: pb.CheckBatchRequest, context: grpc.ServicerContext
    ) -> pb.CheckBatchResponse:
        with self._lock:
            self.batches.append(request)
            self.time_remaining.append(context.time_remaining())
        return self._play("CheckBatch", self._batch_script, context)

    def _script(
        self, method: Method
    ) -> deque[pb.CheckResponse | _Abort | _Stall] | deque[pb.CheckBatchResponse | _Abort | _Stall]:
        return self._check_script if method == "Check" else self._batch_script

    def _play(
        self,
        method: Method,
        script: deque[_Response | _Abort | _Stall],
        context: grpc.ServicerContext,
    ) -> _Response:
        with self._lock:
            outcome = script.popleft() if script else None
        if outcome is None:
            context.abort(grpc.StatusCode.INTERNAL, f"the test scripted no answer to {method}")
        if isinstance(outcome, _Stall):
            # Ends when the call does: the client's deadline passes, it cancels, or we stop.
            ended = threading.Event()
            if context.add_callback(ended.set):
                ended.wait(STALL_LIMIT)
            context.abort(grpc.StatusCode.INTERNAL, f"{method} stalled and was given up on")
        if isinstance(outcome, _Abort):
            context.abort(outcome.code, outcome.details)
        return outcome


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A fresh scripted server on a free loopback port, stopped after the test."""
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def signoff_address() -> Iterator[str]:
    """The real signoff server on the bundled rules (see tests/server/harness.py)."""
    # Shared by the whole session, where one requester asks far more than the pending limit.
    with serving(max_pending=0) as running:
        yield f"127.0.0.1:{running.port}"


@pytest.fixture
def unreachable() -> str:
    """The address of a loopback port nothing listens on."""
    return f"127.0.0.1:{closed_port()}"


# --- approvals: a dev identity provider, servers that verify its tokens, and its tokens -------

# A small bundle whose approvals are easy to drive: `publish` waits an hour for an editor,
# `rush` only one second, and emails in the payload are masked for writers.
APPROVAL_RULES = {
    "schema.yaml": """
        schema:
          payload:
            customers: dyn
            title: string
    """,
    "reports.yaml": """
        policies:
          - id: reports
            resources: [report]
            actions: [publish, rush]
            rules:
              - id: allow-writers
                effect: allow
                roles: [writer]
                reason: writers publish reports
              - id: mask-emails
                effect: mask
                roles: [writer]
                reason: reviewers never see customer emails
                mask:
                  - tags: [pii.email]
                    operator: email
              - id: editor-signs-off
                effect: require_approval
                roles: [writer]
                when: action == 'publish'
                reason: an editor signs off every report
                approval:
                  approvers: {roles: [editor]}
                  quorum: 1
                  pending_ttl: 1h
                  grant_ttl: 10m
              - id: rush-expires-fast
                effect: require_approval
                roles: [writer]
                when: action == 'rush'
                reason: a rushed report needs an editor within a second
                approval:
                  approvers: {roles: [editor]}
                  quorum: 1
                  pending_ttl: 1s
                  grant_ttl: 10m
    """,
}


@dataclass(frozen=True)
class DevIdentity:
    """Development signing keys the approval servers trust, and a way to mint their tokens."""

    keys: Path

    def token(
        self,
        subject: str,
        *,
        kind: str = "human",
        roles: tuple[str, ...] = (),
        groups: tuple[str, ...] = (),
    ) -> str:
        return mint(self.keys, subject=subject, kind=kind, roles=roles, groups=groups)

    def authenticator(self) -> Authenticator:
        config = IdentityConfig(
            jwks=str(self.keys / JWKS_FILE), issuer=DEV_ISSUER, audience=DEV_AUDIENCE
        )
        return Authenticator(config)


@pytest.fixture(scope="session")
def dev_identity(tmp_path_factory: pytest.TempPathFactory) -> DevIdentity:
    """A fresh dev key pair (see `signoff dev-keys`) for this test run."""
    keys = tmp_path_factory.mktemp("dev-keys")
    create_dev_keys(keys)
    return DevIdentity(keys)


@pytest.fixture(scope="session")
def approvals_address(dev_identity: DevIdentity) -> Iterator[str]:
    """The real server on the bundled rules at night (when agents' exports need sign-off),
    with approvals on the real Redis and tokens from `dev_identity` verified."""
    with serving(now=NIGHT, authenticator=dev_identity.authenticator(), max_pending=0) as running:
        yield f"127.0.0.1:{running.port}"


@pytest.fixture(scope="session")
def reports_address(
    dev_identity: DevIdentity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real server on APPROVAL_RULES, with approvals and tokens as `approvals_address`."""
    root = tmp_path_factory.mktemp("approval-rules")
    for name, text in APPROVAL_RULES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    with serving(root, authenticator=dev_identity.authenticator(), max_pending=0) as running:
        yield f"127.0.0.1:{running.port}"
