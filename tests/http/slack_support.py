"""A local stand-in for Slack's Web API, requests signed as Slack signs them, a gateway on Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.http.app import build_app
from signoff.http.core import HttpCore
from signoff.http.slack import SlackSettings
from signoff.http.slack_directory import RoleSource
from signoff.identity import NoAuthenticator
from signoff.observability import Telemetry
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, bundled, drop_prefix

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret of Slack's documentation
BOT_TOKEN = "xoxb-test-token"
TEAM = "T0SIGNOFF"
SECURITY_GROUP = "S0SECURITY"


# --- Slack's Web API, as documented (https://docs.slack.dev/reference/methods) ----------------


@dataclass
class SlackUser:
    id: str
    email: str
    confirmed: bool = True
    is_bot: bool = False
    team_id: str = TEAM

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.email.split("@")[0],
            "deleted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "is_email_confirmed": self.confirmed,
            "profile": {"email": self.email, "real_name": self.email},
        }


@dataclass
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class SlackStandIn:
    """What the Web API methods signoff uses answer, over real HTTP; every call is recorded."""

    users: dict[str, SlackUser] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _ts: int = 1_700_000_000

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def answer(self, method: str, args: dict[str, Any], token: str) -> dict[str, Any]:
        if token != BOT_TOKEN:
            return {"ok": False, "error": "invalid_auth"}
        self.calls.append(Call(method, args))
        if method == "users.info":
            user = self.users.get(str(args.get("user")))
            return {"ok": True, "user": user.doc()} if user else _error("user_not_found")
        if method == "usergroups.users.list":
            group = self.usergroups.get(str(args.get("usergroup")))
            return {"ok": True, "users": group} if group is not None else _error("no_such_subteam")
        if method in ("chat.postMessage", "chat.update"):
            if not args.get("channel"):
                return _error("channel_not_found")
            if method == "chat.update" and not args.get("ts"):
                return _error("message_not_found")
            self._ts += 1
            ts = args.get("ts") if method == "chat.update" else f"{self._ts}.000100"
            return {"ok": True, "channel": args["channel"], "ts": ts, "message": {"text": ""}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{self._ts}.000200"}
        if method == "views.open":
            if not args.get("trigger_id"):
                return _error("invalid_trigger_id")
            return {"ok": True, "view": {"id": "V0MODAL", **_view(args.get("view"))}}
        return _error("unknown_method")


def _error(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


def _view(view: Any) -> dict[str, Any]:
    return json.loads(view) if isinstance(view, str) else dict(view or {})


def _handler(stand_in: SlackStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, args: dict[str, Any]) -> None:
            method = urllib.parse.urlsplit(self.path).path.removeprefix("/api/")
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            body = json.dumps(stand_in.answer(method, args, token)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            query = urllib.parse.urlsplit(self.path).query
            self._serve({k: v[0] for k, v in urllib.parse.parse_qs(query).items()})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Type", "").startswith("application/json"):
                args = json.loads(raw or b"{}")
            else:
                args = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            self._serve(args)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def slack_api(stand_in: SlackStandIn) -> Iterator[SlackStandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stand_in))
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


# --- signing, as Slack documents it (https://docs.slack.dev/authentication/verifying-requests-from-slack/)


def signed_headers(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """Written out by hand, not with the SDK, so the gateway is checked against the spec."""
    timestamp = str(int(time.time()) if at is None else at)
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(payload: dict[str, Any]) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def click(user: str, action_id: str, approval_id: str, *, channel: str = "C0APPROVALS") -> bytes:
    """A block_actions payload as Slack sends it when a message button is clicked."""
    return form(
        {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "acme"},
            "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0SIGNOFF",
            "trigger_id": f"trigger-{uuid.uuid4().hex[:8]}",
            "container": {"type": "message", "channel_id": channel, "message_ts": "1.000100"},
            "channel": {"id": channel},
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "b1",
                    "value": approval_id,
                    "action_ts": str(time.time()),
                }
            ],
        }
    )


def submission(user: str, metadata: str, reason: str) -> bytes:
    """A view_submission payload for the reason modal."""
    return form(
        {
            "type": "view_submission",
            "team": {"id": TEAM},
            "user": {"id": user, "team_id": TEAM},
            "view": {
                "id": "V0MODAL",
                "callback_id": "signoff_reason",
                "private_metadata": metadata,
                "state": {
                    "values": {
                        "reason": {"reason_input": {"type": "plain_text_input", "value": reason}}
                    }
                },
            },
        }
    )


# --- the gateway on real Redis -------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    approvals: Approvals
    store: ApprovalStore
    engine: Engine

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/slack/interactions", content=body, headers=headers)


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def uvicorn_serving(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, in a thread, until the block ends."""
    sock = free_socket()
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def gateway(
    stand_in: SlackStandIn, *, prefix: str | None = None, **settings: Any
) -> Iterator[Gateway]:
    """The HTTP gateway with the Slack surface on, over the bundled rules and real Redis, under
    a fresh key prefix (or `prefix`: another replica of a gateway, which drops it)."""
    store = ApprovalStore(
        REDIS_URL, prefix=prefix or f"signoff:test:http-slack:{uuid.uuid4().hex}:"
    )
    approvals = Approvals(
        store, digest_key=digest_key(KEY), views=Views(hash_key=KEY, hash_key_id=KEY_ID)
    )
    engine = Engine(bundled(), clock=fixed_clock(DAY))
    slack = SlackSettings(
        signing_secret=SECRET,
        bot_token=BOT_TOKEN,
        api_url=stand_in.url,
        team_id=TEAM,
        role_source=RoleSource(roles={SECURITY_GROUP: frozenset({"security"})}),
        **settings,
    )
    core = HttpCore(
        decisions=Decisions(approvals=approvals),
        engine=lambda: engine,
        approvals=approvals,
        authenticator=NoAuthenticator(),
        telemetry=Telemetry.disabled(),
        ready=lambda: True,
        hash_key_id=KEY_ID,
        settings={"slack": slack},
    )
    try:
        with uvicorn_serving(build_app(core)) as url:
            yield Gateway(url, approvals, store, engine)
    finally:
        if prefix is None:
            drop_prefix(store.redis, store.prefix)
        store.redis.close()
