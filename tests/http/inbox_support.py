"""Helpers for the web inbox tests: a real OpenID provider, a real gateway, a real gRPC server."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.http.app import build_app
from signoff.http.core import HttpCore
from signoff.identity import NoAuthenticator
from signoff.observability import Telemetry
from signoff.v1 import signoff_pb2 as pb
from signoff.views import Views
from tests.approvals.support import Server
from tests.server.harness import HUMAN, KEY, KEY_ID, check_request, principal, struct

PROVIDER_DIR = Path(__file__).parent / "oidc-provider"
CLIENT_ID = "signoff-inbox"
CLIENT_SECRET = "signoff-inbox-test-secret"
SESSION_SECRET = "inbox-test-session-secret-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LISTENING = re.compile(r"oidc-provider listening on (?P<issuer>http://\S+)")
# Who exists at the provider: the login name is the subject.
ACCOUNTS = {
    "rita": {"roles": ["reviewer"]},
    "sam": {"roles": ["staff"]},
    "nobody": {"roles": []},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_chromium() -> None:
    """Debian's chromium (a browser download at test time does not work here)."""
    if not CHROMIUM.exists():
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


# --- the OpenID provider --------------------------------------------------------------


@contextmanager
def oidc_provider(redirect_uri: str) -> Iterator[str]:
    """panva/oidc-provider on a free loopback port, installed from its package-lock; the issuer."""
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the test OpenID provider"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            check=True,
            capture_output=True,
        )
    env = {
        **os.environ,
        "PORT": "0",
        "REDIRECT_URIS": redirect_uri,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "SIGNOFF_OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
    }
    process = subprocess.Popen(
        ["node", "provider.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        issuer = ""
        while not issuer and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise AssertionError("the OpenID provider exited")
            found = LISTENING.search(line)
            issuer = found["issuer"] if found else ""
        assert issuer, "the OpenID provider did not start"
        yield issuer
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# --- the gateway ----------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    core: HttpCore

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **options)


def core_for(server: Server, engine: Engine, settings: Mapping[str, Any]) -> HttpCore:
    """An HTTP core over the same approval store as `server` (the gRPC side)."""
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    approvals = Approvals(server.store, digest_key=digest_key(KEY), views=views, watch_poll_ms=200)
    telemetry = Telemetry.disabled()
    return HttpCore(
        decisions=Decisions(approvals=approvals, telemetry=telemetry, views=views),
        engine=lambda: engine,
        approvals=approvals,
        authenticator=NoAuthenticator(),
        telemetry=telemetry,
        ready=lambda: True,
        hash_key_id=KEY_ID,
        settings=dict(settings),
    )


@contextmanager
def gateway(core: HttpCore, port: int = 0) -> Iterator[Gateway]:
    """The real gateway app (build_app) under uvicorn, in a thread, on a loopback port."""
    with served(build_app(core), port) as url:
        yield Gateway(url, core)


@contextmanager
def served(app: ASGIApp, port: int = 0) -> Iterator[str]:
    """`app` under uvicorn, in a thread, on a loopback port; its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- requests -------------------------------------------------------------------------


def staging_read(payload: Mapping[str, Any] | None = None, who: str = "sam") -> pb.CheckRequest:
    """A staff member's read in staging: the lab rules ask one reviewer to sign off."""
    request = check_request(
        principal(who, HUMAN, ["staff"], tenant="acme", owner=f"{who}-owner"),
        "read",
        pb.Resource(kind="doc", id="doc-7", attributes=struct({"tenant": "acme"})),
        environment="staging",
        payload=payload or {"target": "quarterly numbers", "rows": 3},
    )
    return request


def dev_login(client: httpx.Client, subject: str, *roles: str) -> None:
    """Sign `client` in through the development login."""
    reply = client.post(
        "/inbox/login/dev", data={"subject": subject, "roles": " ".join(roles), "groups": ""}
    )
    assert reply.status_code == 303, reply.text


def csrf_of(client: httpx.Client, path: str = "/inbox") -> str:
    """The session's CSRF token, as the page hands it to its forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found, "no CSRF token on the page"
    return found[1]
