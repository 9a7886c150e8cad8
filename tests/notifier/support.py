"""Test doubles that are real: a Redis server and an HTTP webhook receiver on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

SLACK_PATH = "/services/T000/B000/SLACKSECRET"
TEAMS_PATH = "/workflows/hook/TEAMSSECRET?sig=TEAMSSIG"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Webhooks:
    """A threaded HTTP server recording every request; statuses are scripted per path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._answer("POST")

            def do_GET(self) -> None:
                # A client following a redirect as urllib does turns the POST into a GET:
                # recorded and answered 200, so a test sees it and the client thinks it worked.
                self._answer("GET")

            def _answer(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hooks._arrived:
                    hooks.requests.append(
                        Received(method, self.path, dict(self.headers.items()), raw)
                    )
                    queue = hooks._script.get(self.path) or []
                    status, headers = queue.pop(0) if queue else (200, {})
                    hooks._arrived.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Webhooks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def respond(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests to `path` with `statuses`, then 200."""
        with self._lock:
            self._script.setdefault(path, []).extend((s, headers or {}) for s in statuses)

    def to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """REDIS_URL (or the local default) when it answers, else a throwaway redis-server."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"no Redis at {url} and no redis-server to start")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while not _reachable(url):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def summary(**overrides: Any) -> dict[str, Any]:
    """A masked summary as the producer writes it."""
    base: dict[str, Any] = {
        "requester_id": "agent-7",
        "requester_kind": "agent",
        "action": "payments.refund",
        "resource_kind": "payment",
        "resource_id": "pay_123",
        "environment": "prod",
        "fields": [{"path": "card.number", "tags": ["pci"]}],
        "reasons": ["refunds over 500 EUR need a finance lead"],
        "matched_rules": ["refund-large"],
        "requirement": {
            "approvers": [{"roles": ["finance-lead"], "groups": ["finance"]}],
            "quorum": 2,
            "pending_ttl_seconds": 3600,
            "grant_ttl_seconds": 900,
        },
        "pending_expires_at": "2025-03-03T15:00:00Z",
    }
    return {**base, **overrides}


def event(
    type: str = "approval.created",
    approval_id: str = "apr_01",
    summary_data: dict[str, Any] | None = None,
    **fields: str,
) -> dict[str, str]:
    """Stream entry fields for one transition, all strings as on the wire."""
    to = {"approval.created": "pending"}.get(type, type.rsplit(".", 1)[-1])
    return {
        "type": type,
        "approval_id": approval_id,
        "from": "" if type == "approval.created" else "pending",
        "to": to,
        "actor": "agent-7",
        "at": "2025-03-03T14:00:00Z",
        "reason": "",
        "summary": json.dumps(summary() if summary_data is None else summary_data),
        **fields,
    }


def pending_count(r: redis.Redis, stream: str, group: str = "signoff-notifier") -> int:
    info: dict[str, Any] = r.xpending(stream, group)
    count: int = info["pending"]
    return count


def publish(r: redis.Redis, stream: str, fields: dict[str, str]) -> str:
    """Append one event as the producer would."""
    data: dict[FieldT, EncodableT] = {key: value for key, value in fields.items()}
    return str(r.xadd(stream, data))
