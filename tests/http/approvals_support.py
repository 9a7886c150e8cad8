"""A real gateway for the approvals API tests: gRPC Check and uvicorn HTTP over one Approvals."""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvicorn
from starlette.applications import Starlette

from signoff.approvals.digest import digest_key
from signoff.approvals.model import ApprovalRecord, State
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.decisions import Decisions
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.http.app import build_app
from signoff.http.core import HttpCore
from signoff.identity import Authenticator
from signoff.observability import Telemetry
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.server.approvals import ApprovalService
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views
from tests.approvals.support import lab_request
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, TIMEOUT, drop_prefix, struct

STARTUP_SECONDS = 10.0


@functools.cache
def _load(rules: Path) -> Bundle:
    return load_bundle(rules, backend="cel-expr")


@contextmanager
def uvicorn_on_free_port(asgi: Any) -> Iterator[str]:
    """Serve `asgi` with uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Gateway:
    """gRPC (for Checks) and HTTP (for reviewers) over the same approvals, on real Redis."""

    url: str
    store: ApprovalStore
    channel: grpc.Channel
    approvals: Approvals
    asgi: Starlette

    def check(self, request: pb.CheckRequest, approval_id: str = "") -> pb.CheckResponse:
        if approval_id:
            copy = pb.CheckRequest()
            copy.CopyFrom(request)
            copy.approval_id = approval_id
            request = copy
        stub = pb_grpc.DecisionServiceStub(self.channel)
        response: pb.CheckResponse = stub.Check(request, timeout=TIMEOUT)
        return response

    def ask(self, request: pb.CheckRequest) -> str:
        """Check `request`, which must need an approval; the pending approval's id."""
        response = self.check(request)
        assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL, response
        return response.approval_id

    def client(self, token: str = "", **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT, **options)

    def record(self, approval_id: str) -> ApprovalRecord:
        found = self.store.get(approval_id)
        assert found is not None, f"no approval {approval_id}"
        return found

    def state(self, approval_id: str) -> State:
        return self.record(approval_id).state


@contextmanager
def gateway(
    rules: Path,
    *,
    auth: Authenticator,
    now: str = DAY,
    heartbeat_seconds: float = 0.2,
    watch_max_seconds: float = 30.0,
    max_watchers: int = 4,
) -> Iterator[Gateway]:
    """Serve `rules` over gRPC and HTTP with one Approvals under a fresh Redis key prefix,
    dropped when the block ends."""
    engine = Engine(_load(rules), clock=fixed_clock(now))
    store = ApprovalStore(REDIS_URL, prefix=f"signoff:test:http-approvals:{uuid.uuid4().hex}:")
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    approvals = Approvals(
        store,
        digest_key=digest_key(KEY),
        views=views,
        watch_poll_ms=100,
        watch_max_seconds=watch_max_seconds,
        max_watchers=max_watchers,
    )
    running = app.start(
        engine,
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        approvals=approvals,
        approval_service=ApprovalService(approvals, auth),
    )
    core = HttpCore(
        decisions=Decisions(approvals=approvals, views=views),
        engine=lambda: engine,
        approvals=approvals,
        authenticator=auth,
        telemetry=Telemetry.disabled(),
        ready=lambda: True,
        hash_key_id=KEY_ID,
        settings={"approvals_api": {"heartbeat_seconds": heartbeat_seconds}},
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        asgi = build_app(core)
        with uvicorn_on_free_port(asgi) as url:
            yield Gateway(url, store, channel, approvals, asgi)
    finally:
        channel.close()
        running.stop(grace=None)
        drop_prefix(store.redis, store.prefix)
        store.redis.close()


def error_of(response: httpx.Response) -> dict[str, str]:
    """The JSON error body of a refused call (which must not be a 5xx)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, dict[str, str]] = response.json()
    return body["error"]


@dataclass
class Event:
    kind: str  # "approval", "end", "error", or "comment" for a keep-alive line
    data: str


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a text/event-stream response as they arrive (comments included)."""
    kind, data = "message", ""
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Event("comment", line[1:].strip())
        elif line.startswith("event:"):
            kind = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data = line[len("data:") :].strip()
        elif line == "" and data:
            yield Event(kind, data)
            kind, data = "message", ""


# --- requests ------------------------------------------------------------------------------


def plain_doc(doc_id: str = "doc-1") -> pb.Resource:
    """A lab document without tagged fields: nothing to mask, so a granted Check is ALLOW."""
    return pb.Resource(kind="doc", id=doc_id, attributes=struct({"tenant": "acme"}))


def prod_export(target: str = "s3://acme-exports/q1.parquet", **options: Any) -> pb.CheckRequest:
    """A staff export in prod: needs two approvers with role security or group sec-oncall."""
    options.setdefault("resource", plain_doc())
    return lab_request("prod", payload={"target": target, "rows": 2}, **options)
