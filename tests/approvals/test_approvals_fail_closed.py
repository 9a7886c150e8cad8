"""Without Redis, whatever needs an approval answers UNAVAILABLE; everything else still decides."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
import redis

from signoff.approvals.model import State
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.conftest import MakeServer
from tests.approvals.support import DevIdP, Server, bearer, code_of, details_of, first
from tests.approvals.support import refused as refused_call
from tests.server.harness import (
    REDIS_URL,
    TIMEOUT,
    allowed_read,
    check_request,
    closed_port,
    cross_tenant_read,
    drop_prefix,
    iam_role,
    ivan,
    masked_export,
    prod_grant,
)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def down(make_server: MakeServer) -> Server:
    """A server whose approval store points at a port nothing listens on."""
    return make_server(redis_url=f"redis://127.0.0.1:{closed_port()}/0")


def assert_fails_closed(error: grpc.Call) -> None:
    assert code_of(error) == UNAVAILABLE
    assert "approval store unavailable" in details_of(error)
    assert "fail closed" in details_of(error)


def test_a_check_that_needs_an_approval_fails_closed(down: Server) -> None:
    assert_fails_closed(refused_call(lambda: down.check(prod_grant())))
    # Presenting an approval id changes nothing: no record can be read, so nothing is granted.
    assert_fails_closed(refused_call(lambda: down.check(prod_grant(), "apr_" + "A" * 24)))


def test_checks_that_need_no_approval_still_answer(down: Server) -> None:
    self_grant = check_request(
        ivan(), "grant_role", iam_role(), payload={"grantee": "ivan@acme.io", "role": "db-admin"}
    )
    expected = [
        (allowed_read(), pb.VERDICT_ALLOW),
        (masked_export(), pb.VERDICT_MASK),
        (cross_tenant_read(), pb.VERDICT_DENY),
        (self_grant, pb.VERDICT_DENY),  # a deny in prod is decided before any approval
    ]
    for request, verdict in expected:
        assert down.check(request).verdict == verdict
        # An approval id on a request that needs none is ignored, not looked up.
        assert down.check(request, "apr_" + "A" * 24).verdict == verdict


def test_a_batch_fails_only_the_items_that_need_an_approval(down: Server) -> None:
    batch = pb.CheckBatchRequest(items=[allowed_read(), prod_grant(), masked_export()])

    response = down.decisions.CheckBatch(batch, timeout=TIMEOUT)

    first_, second, third = response.results
    assert first_.decision.verdict == pb.VERDICT_ALLOW
    assert second.WhichOneof("outcome") == "error"
    assert second.error.code == UNAVAILABLE.value[0]
    assert "approval store unavailable" in second.error.message
    assert third.decision.verdict == pb.VERDICT_MASK


def test_every_approval_rpc_answers_unavailable_never_ok(down: Server, idp: DevIdP) -> None:
    approval_id = "apr_" + "A" * 24
    md = bearer(idp.token("erin@acme.io", "security"))
    stub = down.approvals
    calls: list[Callable[[], Any]] = [
        lambda: stub.ListApprovals(apb.ListApprovalsRequest(), metadata=md, timeout=TIMEOUT),
        lambda: stub.GetApproval(
            apb.GetApprovalRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
        ),
        lambda: stub.Approve(
            apb.ApproveRequest(approval_id=approval_id, reason="ok"), metadata=md, timeout=TIMEOUT
        ),
        lambda: stub.Reject(
            apb.RejectRequest(approval_id=approval_id, reason="no"), metadata=md, timeout=TIMEOUT
        ),
        lambda: stub.Cancel(
            apb.CancelRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
        ),
        lambda: first(
            stub.WatchApproval(
                apb.WatchApprovalRequest(approval_id=approval_id), metadata=md, timeout=TIMEOUT
            )
        ),
    ]
    for call in calls:
        error = refused_call(call)
        assert code_of(error) == UNAVAILABLE
        assert "approval store unavailable" in details_of(error)


def test_authentication_is_still_checked_first_when_the_store_is_down(down: Server) -> None:
    error = refused_call(
        lambda: down.approvals.ListApprovals(apb.ListApprovalsRequest(), timeout=TIMEOUT)
    )
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED


class Outage:
    """A TCP relay in front of Redis that a test can cut (connections dropped, port refused)
    and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            _close(listener)  # shutdown first: it wakes the thread blocked in accept()
        for conn in conns:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def outage() -> Iterator[Outage]:
    parsed = urlparse(REDIS_URL)
    relay = Outage((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    yield relay
    relay.cut()


@pytest.fixture
def behind(outage: Outage, make_server: MakeServer) -> Iterator[Server]:
    """A server whose store reaches Redis through `outage`; its keys are dropped directly."""
    server = make_server(redis_url=outage.url)
    yield server
    direct = redis.Redis.from_url(REDIS_URL)
    drop_prefix(direct, server.prefix)  # the relay may be cut when the test ends
    direct.close()


def test_an_approval_in_flight_when_redis_goes_away_is_never_granted_and_survives(
    behind: Server, outage: Outage, idp: DevIdP
) -> None:
    server = behind
    approval_id = server.ask(prod_grant())
    server.approve(approval_id, idp.token("erin@acme.io", "security"))
    server.approve(approval_id, idp.token("frank@acme.io", "security"))

    outage.cut()
    for _ in range(3):
        assert_fails_closed(refused_call(lambda: server.check(prod_grant(), approval_id)))
    assert code_of(refused_call(lambda: server.get(approval_id, idp.token("ivan@acme.io")))) == (
        UNAVAILABLE
    )
    assert server.check(allowed_read()).verdict == pb.VERDICT_ALLOW  # needs no record

    outage.restore()
    answers = [_retry_unavailable(lambda: server.check(prod_grant(), approval_id))]
    answers += [server.check(prod_grant(), approval_id) for _ in range(2)]

    assert [a.verdict for a in answers] == [pb.VERDICT_ALLOW, pb.VERDICT_DENY, pb.VERDICT_DENY]
    assert [list(a.reasons) for a in answers[1:]] == [["approval_already_used"]] * 2
    assert server.state(approval_id) is State.CONSUMED
    types = [e["type"] for e in server.global_events(approval_id)]
    assert types.count("approval.consumed") == 1


def _retry_unavailable(call: Callable[[], pb.CheckResponse]) -> pb.CheckResponse:
    """What a client does with UNAVAILABLE: try again shortly (the pool reconnects by itself)."""
    for _ in range(20):
        try:
            return call()
        except grpc.RpcError as error:
            if code_of(error) != UNAVAILABLE:
                raise
        time.sleep(0.05)
    raise AssertionError("the service did not recover once Redis was back")
