"""Browser security for the HTTP gateway: signed session cookies, CSRF tokens, strict headers."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff.approvals.model import Identity
from signoff.errors import ConfigError, PermissionDenied

DEFAULT_SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 600
MIN_SECRET_BYTES = 32
# Nothing but our own files: no inline script or style, no framing, no plugins, forms and
# fetches only to ourselves. Payloads shown in pages are attacker-controlled; this is the
# second wall behind escaping.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True)
class Session:
    """A signed-in reviewer: the identity the login proved, and this session's CSRF token."""

    identity: Identity
    csrf: str
    name: str  # how the reviewer is shown (the email the provider vouched for, or the subject)
    dev: bool = False  # made by the development login, shown as such on every page


class Sessions:
    """Issues and reads the session and login-state cookies, signed with one server secret.

    The cookie holds the identity itself (signed, not encrypted: it carries no secret), so any
    gateway replica with the same secret reads it without shared storage.
    """

    def __init__(self, secret: str, *, secure: bool, ttl_seconds: int = DEFAULT_SESSION_SECONDS):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"session secret must be at least {MIN_SECRET_BYTES} bytes")
        self._signer = URLSafeTimedSerializer(secret, salt="signoff.session")
        self._login_signer = URLSafeTimedSerializer(secret, salt="signoff.login")
        self.secure = secure
        self.ttl = ttl_seconds
        # `__Host-` pins the cookie to this host and path `/`; browsers accept it only with Secure.
        self.cookie = "__Host-signoff_session" if secure else "signoff_session"
        self.login_cookie = "__Host-signoff_login" if secure else "signoff_login"

    # --- the session --------------------------------------------------------------------

    def start(
        self, response: Response, identity: Identity, name: str, *, dev: bool = False
    ) -> None:
        doc = {
            "sub": identity.subject,
            "kind": identity.kind,
            "roles": sorted(identity.roles),
            "groups": sorted(identity.groups),
            "iss": identity.issuer,
            "name": name,
            "csrf": secrets.token_urlsafe(32),
            "dev": dev,
        }
        self._set(response, self.cookie, self._signer.dumps(doc), self.ttl)

    def read(self, conn: HTTPConnection) -> Session | None:
        doc = _loads(self._signer, conn.cookies.get(self.cookie), self.ttl)
        if doc is None:
            return None
        try:
            identity = Identity(
                subject=str(doc["sub"]),
                kind=str(doc["kind"]),
                roles=frozenset(map(str, doc["roles"])),
                groups=frozenset(map(str, doc["groups"])),
                issuer=str(doc["iss"]),
            )
            return Session(identity, str(doc["csrf"]), str(doc["name"]), bool(doc["dev"]))
        except (KeyError, TypeError):
            return None

    def end(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True)

    # --- the login in flight (state, PKCE verifier, where to go after) -------------------

    def start_login(self, response: Response, doc: Mapping[str, str]) -> None:
        self._set(response, self.login_cookie, self._login_signer.dumps(dict(doc)), LOGIN_SECONDS)

    def finish_login(self, conn: HTTPConnection, response: Response) -> dict[str, Any] | None:
        response.delete_cookie(self.login_cookie, path="/", secure=self.secure, httponly=True)
        return _loads(self._login_signer, conn.cookies.get(self.login_cookie), LOGIN_SECONDS)

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        # Lax, not Strict: the provider's redirect back to the callback is a cross-site
        # navigation, and it must carry the login-state cookie. State changes are guarded by
        # CSRF tokens, not by SameSite alone.
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )


def _loads(
    signer: URLSafeTimedSerializer, value: str | None, max_age: int
) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        doc: object = signer.loads(value, max_age=max_age)
    except BadSignature:  # SignatureExpired is one too
        return None
    return doc if isinstance(doc, dict) else None


SESSIONS_KEY = "signoff.sessions"


def session_of(conn: HTTPConnection) -> Session | None:
    """The signed-in session of this request, if the app has sessions and the cookie verifies."""
    sessions = conn.scope.get("state", {}).get(SESSIONS_KEY)
    return sessions.read(conn) if isinstance(sessions, Sessions) else None


def session_identity(conn: HTTPConnection) -> Identity | None:
    """The reviewer signed in through the web login, or None; for any surface that accepts a
    browser session besides a bearer JWT (the JSON approvals API)."""
    session = session_of(conn)
    return session.identity if session else None


def check_csrf(conn: HTTPConnection, session: Session, token: str) -> None:
    """Refuses a state change whose form token is not this session's, or that comes from
    another origin (a second check, for browsers that send Origin)."""
    if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise PermissionDenied("csrf", "the form is stale or not ours: reload the page")
    origin = conn.headers.get("origin")
    if origin and origin != "null" and _origin(origin) != _origin(str(conn.base_url)):
        raise PermissionDenied("csrf", "cross-origin form submission refused")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class SecureHeaders:
    """ASGI middleware: puts `sessions` where `session_of` finds it and adds the strict
    security headers to every response of the app it wraps."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[SESSIONS_KEY] = self.sessions

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
                if self.sessions.secure:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, headed)


def sessions_for(settings: Mapping[str, Any]) -> Sessions:
    """The gateway's session signer, from `public_url`, `session_secret`, `session_seconds`.

    Without a configured secret each `signoff serve` makes its own (its `--processes` are
    handed one by their supervisor; sessions end on restart and are not shared between
    replicas). Cookies are Secure when the public URL is https.
    """
    secret = str(settings.get("session_secret", "")) or secrets.token_urlsafe(48)
    secure = str(settings.get("public_url", "")).lower().startswith("https://")
    ttl = int(settings.get("session_seconds", DEFAULT_SESSION_SECONDS))
    return Sessions(secret, secure=secure, ttl_seconds=ttl)
