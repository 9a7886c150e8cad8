"""`signoff serve` runs the HTTP gateway beside gRPC: same bundle, same Redis, off when asked."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from signoff.cli import build_parser
from signoff.cmd import serve
from signoff.errors import ConfigError
from tests.http.gateway_requests import allowed_read
from tests.server.harness import (
    REDIS_URL,
    STARTUP_SECONDS,
    drop_prefix,
    first_line,
    serve_command,
    serve_environment,
)
from tests.server.test_serve_command import _alive, _children

HTTP = re.compile(r"; HTTP on (?P<host>[^\s;]+):(?P<port>\d+)")


@contextmanager
def served(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    prefix = f"signoff:test:http-serve:{uuid.uuid4().hex}:"
    process = subprocess.Popen(
        serve_command("--address", "127.0.0.1:0", *args),
        env=serve_environment(prefix, {"SIGNOFF_HASH_KEY": "k" * 40}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, first_line(process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=STARTUP_SECONDS)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def test_serve_answers_authzen_and_health_beside_grpc_and_stops_cleanly() -> None:
    with served() as (process, line):
        found = HTTP.search(line)
        assert found is not None, line
        url = f"http://{found['host']}:{found['port']}"
        with httpx.Client(base_url=url, timeout=10.0) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            answer = client.post("/access/v1/evaluation", json=allowed_read())
        assert answer.json()["decision"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STARTUP_SECONDS) == 0


def _endpoint(port: int) -> str:
    """127.0.0.1:`port` as /proc/net/tcp spells it."""
    return f"0100007F:{port:04X}"


def _accepting_pid(server_port: int, client_port: int, pids: list[int]) -> int:
    """Which of `pids` holds the server end of the open connection from `client_port`:
    the responses are identical, so the kernel's socket table is what tells children apart."""
    wanted = (_endpoint(server_port), _endpoint(client_port))
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    inodes = {row[9] for row in rows if (row[1], row[2]) == wanted}
    assert inodes, f"no server socket for the connection from port {client_port}"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:  # closed while we looked
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise AssertionError(f"none of {pids} holds the connection from port {client_port}")


def test_processes_share_the_http_port_and_stop_together_on_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("--processes", "2", "--workers", "2", "--http-address", f"127.0.0.1:{port}")
    with served(*args) as (process, line):
        assert f"; HTTP on 127.0.0.1:{port}" in line, line
        children = _children(process.pid)
        assert len(children) == 2
        body = json.dumps(allowed_read())
        answered_by: set[int] = set()
        # The kernel spreads new connections over the SO_REUSEPORT listeners by a hash of
        # the client's port: 40 connections all landing on one child is a 2**-39 chance. All
        # 40 are sent, so a stray listener that never accepts (one held by the parent, say)
        # would leave some unanswered.
        for _ in range(40):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
            try:
                connection.request(
                    "POST",
                    "/access/v1/evaluation",
                    body,
                    {"Content-Type": "application/json"},
                )
                answer = connection.getresponse()
                assert answer.status == 200
                assert json.loads(answer.read())["decision"] is True
                assert connection.sock is not None
                client_port = connection.sock.getsockname()[1]
                answered_by.add(_accepting_pid(port, client_port, children))
            finally:
                connection.close()
        assert answered_by == set(children)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STARTUP_SECONDS) == 0
    assert not any(_alive(c) for c in children)


def test_http_address_off_serves_grpc_only() -> None:
    with served("--http-address", "off") as (_, line):
        assert line.startswith("signoff listening on ")
        assert "HTTP" not in line


def _options(*argv: str) -> serve.HttpOptions:
    args = build_parser().parse_args(["serve", *argv])
    return serve.http_options(args, None)


def test_http_beyond_loopback_without_tls_is_refused() -> None:
    with pytest.raises(ConfigError, match="without TLS"):
        _options("--http-address", "0.0.0.0:8080")
    assert _options("--http-address", "0.0.0.0:8080", "--allow-plaintext", "on").address


def test_a_malformed_http_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="host:port or off"):
        _options("--http-address", "localhost")


def test_the_default_http_address_is_loopback_8080() -> None:
    assert _options().address == "127.0.0.1:8080"


def test_a_session_started_on_one_process_is_honoured_by_every_other() -> None:
    # Each process signs sessions; without a configured secret they must still share one,
    # or a reviewer's next request, landing on another process, finds itself signed out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("--processes", "2", "--workers", "2", "--http-address", f"127.0.0.1:{port}")
    with served(*args, "--dev-login", "on") as (process, line):
        assert f"; HTTP on 127.0.0.1:{port}" in line, line
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10.0) as login:
            reply = login.post(
                "/inbox/login/dev", data={"subject": "ana@acme.io", "roles": "", "groups": ""}
            )
            assert reply.status_code == 303, reply.text
            cookies = dict(login.cookies)
        assert cookies
        signed_out = 0
        for _ in range(30):  # a new connection each: the kernel spreads them over both
            with httpx.Client(base_url=url, timeout=10.0, cookies=cookies) as client:
                page = client.get("/inbox")
            assert page.status_code == 200
            signed_out += 'name="csrf"' not in page.text
        assert signed_out == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STARTUP_SECONDS) == 0
