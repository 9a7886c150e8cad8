"""`signoff serve` runs the HTTP gateway beside gRPC: same bundle, same Redis, off when asked."""

from __future__ import annotations

import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
