"""The web inbox: pending approvals a reviewer may decide, each page with Approve / Reject.

A thin adapter like every surface: the reviewer's identity comes from the OIDC login (or the
development login of `signoff serve --dev`), and listing, viewing and voting all go through
`Approvals`, whose eligibility rule decides; the page only shows what it is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from signoff.approvals.eligibility import check_approver, voter_key
from signoff.approvals.model import ApprovalRecord, Identity, State
from signoff.approvals.service import MAX_PAGE, Approvals
from signoff.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SignoffError,
    Unauthenticated,
)
from signoff.http.core import HttpCore
from signoff.http.errors import error_for
from signoff.http.oidc import OidcConfig, OidcLogin
from signoff.http.security import SESSIONS_KEY, Session, Sessions, check_csrf, session_of
from signoff.safetext import escape_line

log = logging.getLogger("signoff.http.inbox")
HERE = Path(__file__).parent
PREFIX = "/inbox"
# How often an open inbox re-reads the pending list, and how long one event stream lives
# (the browser's EventSource reconnects by itself).
LIVE_POLL_SECONDS = 2.0
LIVE_MAX_SECONDS = 600.0
DEV_ISSUER = "signoff-dev-login"

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    # Every value is escaped: payloads and reasons are attacker-controlled.
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def routes(core: HttpCore) -> list[BaseRoute]:
    inbox = Inbox(core)
    return [
        Route(PREFIX, inbox.index, methods=["GET"], include_in_schema=False),
        Route(PREFIX + "/events", inbox.events, methods=["GET"], include_in_schema=False),
        Route(
            PREFIX + "/a/{approval_id}", inbox.approval, methods=["GET"], include_in_schema=False
        ),
        Route(
            PREFIX + "/a/{approval_id}/vote", inbox.vote, methods=["POST"], include_in_schema=False
        ),
        Route(PREFIX + "/login", inbox.login, methods=["GET"], include_in_schema=False),
        Route(PREFIX + "/login/callback", inbox.callback, methods=["GET"], include_in_schema=False),
        Route(PREFIX + "/login/dev", inbox.dev_login, methods=["POST"], include_in_schema=False),
        Route(PREFIX + "/logout", inbox.logout, methods=["POST"], include_in_schema=False),
        Mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="inbox-static"),
    ]


class Inbox:
    def __init__(self, core: HttpCore) -> None:
        self.core = core
        self.dev_login_enabled = bool(core.settings.get("dev_login", False))
        base = str(core.settings.get("public_url", "")).rstrip("/")
        self._oidc_config = OidcConfig.from_settings(
            core.settings, base + PREFIX + "/login/callback" if base else ""
        )
        self._oidc = OidcLogin(self._oidc_config) if self._oidc_config else None

    @property
    def approvals(self) -> Approvals:
        if self.core.approvals is None:
            raise NotFound("approvals are not configured on this server")
        return self.core.approvals

    # --- pages ------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return self._login_page(request)
        try:
            rows = await run_in_threadpool(self._rows, session.identity)
        except SignoffError as exc:
            return self._error(request, exc)
        return self._page(request, "inbox.html", session, rows=rows)

    async def approval(self, request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return self._login_page(request, status=401)
        approval_id = request.path_params["approval_id"]
        try:
            record = await run_in_threadpool(self.approvals.get, approval_id, session.identity)
        except SignoffError as exc:
            return self._error(request, exc, session)
        return self._page(
            request, "approval.html", session, a=_detail(record, session.identity, _now_ms())
        )

    async def vote(self, request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return self._error(request, Unauthenticated("sign in first"))
        approval_id = request.path_params["approval_id"]
        try:
            form = await request.form(max_files=0, max_fields=8, max_part_size=8 * 1024)
            check_csrf(request, session, str(form.get("csrf", "")))
            choice = str(form.get("decision", ""))
            if choice not in ("approve", "reject"):
                raise InvalidRequest("decision", "must be approve or reject")
            await run_in_threadpool(
                self.approvals.vote,
                approval_id,
                session.identity,
                str(form.get("reason", "")),
                approve=choice == "approve",
            )
        except SignoffError as exc:
            return self._error(request, exc, session)
        return RedirectResponse(f"{PREFIX}/a/{approval_id}", status_code=303)

    async def events(self, request: Request) -> Response:
        """Server-Sent Events: the inbox list, re-rendered whenever what it shows changes."""
        session = session_of(request)
        if session is None:
            return self._error(request, Unauthenticated("sign in first"))
        who = session.identity

        async def stream() -> AsyncIterator[str]:
            last = ""
            deadline = time.monotonic() + LIVE_MAX_SECONDS
            yield "retry: 3000\n\n"
            while time.monotonic() < deadline and not await request.is_disconnected():
                try:
                    rows = await run_in_threadpool(self._rows, who)
                except SignoffError:
                    rows = None  # the store is away: keep showing what the page has
                if rows is not None:
                    html = _templates.get_template("_rows.html").render(rows=rows, prefix=PREFIX)
                    if html != last:
                        last = html
                        yield (
                            "event: inbox\n"
                            + "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                            + "\n"
                        )
                await asyncio.sleep(LIVE_POLL_SECONDS)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # --- login ------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if self._oidc is None:
            return self._error(request, NotFound("no OpenID provider is configured"))
        try:
            url, doc = await self._oidc.begin()
        except SignoffError as exc:
            return self._error(request, exc)
        response = RedirectResponse(url, status_code=303)
        sessions(request).start_login(response, {**doc, "next": _local(request, "next")})
        return response

    async def callback(self, request: Request) -> Response:
        if self._oidc is None:
            return self._error(request, NotFound("no OpenID provider is configured"))
        response = RedirectResponse(PREFIX, status_code=303)
        doc = sessions(request).finish_login(request, response)
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        try:
            if doc is None or not state or state != doc.get("state"):
                raise Unauthenticated("the login expired or was not started here: sign in again")
            if not code:
                raise Unauthenticated("the identity provider sent no code")
            identity = await self._oidc.finish(code, str(doc["verifier"]))
        except SignoffError as exc:
            return self._error(request, exc)
        response.headers["location"] = str(doc.get("next") or PREFIX)
        sessions(request).start(response, identity, identity.subject)
        log.info("inbox login: %s", escape_line(identity.subject))
        return response

    async def dev_login(self, request: Request) -> Response:
        """`signoff serve --dev` only: sign in as anyone, with any roles, for a walkthrough."""
        if not self.dev_login_enabled:
            return self._error(request, NotFound("the development login is off"))
        form = await request.form(max_files=0, max_fields=4, max_part_size=1024)
        subject = str(form.get("subject", "")).strip()
        if not subject:
            return self._error(request, InvalidRequest("subject", "is required"))
        identity = Identity(
            subject=subject,
            kind="human",
            roles=_words(str(form.get("roles", ""))),
            groups=_words(str(form.get("groups", ""))),
            issuer=DEV_ISSUER,
        )
        response = RedirectResponse(PREFIX, status_code=303)
        sessions(request).start(response, identity, subject, dev=True)
        return response

    async def logout(self, request: Request) -> Response:
        session = session_of(request)
        response = RedirectResponse(PREFIX, status_code=303)
        if session is not None:
            form = await request.form(max_files=0, max_fields=4, max_part_size=1024)
            try:
                check_csrf(request, session, str(form.get("csrf", "")))
            except SignoffError as exc:
                return self._error(request, exc, session)
            sessions(request).end(response)
        return response

    # --- rendering --------------------------------------------------------------------

    def _rows(self, who: Identity) -> list[dict[str, Any]]:
        records = self.approvals.list(who, MAX_PAGE)
        now = _now_ms()
        # Newest first: the reviewer sees what just arrived on top.
        return [_row(r, now) for r in sorted(records, key=lambda r: -r.created_ms)]

    def _page(
        self, request: Request, name: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        html = _templates.get_template(name).render(
            session=session,
            prefix=PREFIX,
            dev_login=self.dev_login_enabled,
            oidc=self._oidc_config is not None,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def _login_page(self, request: Request, status: int = 200) -> HTMLResponse:
        return self._page(request, "login.html", None, status, next=request.url.path)

    def _error(
        self, request: Request, exc: SignoffError, session: Session | None = None
    ) -> HTMLResponse:
        # The gateway's one mapping of errors to statuses, as a page rather than JSON.
        status, error = error_for(exc)
        field = str(error.get("field", ""))
        message = str(error["message"])
        if status >= 500:
            log.warning("inbox: %s", escape_line(repr(exc)))
            message = "a service the inbox needs is unavailable; try again shortly"
        return self._page(
            request, "error.html", session, status, status_code=status, field=field, message=message
        )


def sessions(request: Request) -> Sessions:
    found = request.scope.get("state", {}).get(SESSIONS_KEY)
    if not isinstance(found, Sessions):
        raise RuntimeError("the gateway app must be wrapped in security.SecureHeaders")
    return found


def _local(request: Request, name: str) -> str:
    """A same-site path from the query (never an open redirect), or the inbox."""
    value = request.query_params.get(name, "")
    parts = urlsplit(value)
    if value.startswith(PREFIX) and not parts.scheme and not parts.netloc and "\\" not in value:
        return value
    return PREFIX


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in text.replace(",", " ").split() if w)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _left(until_ms: int, now_ms: int) -> str:
    seconds = max(0, (until_ms - now_ms) // 1000)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min left"
    if seconds >= 60:
        return f"{seconds // 60} min left"
    return f"{seconds} s left" if seconds else "expired"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else ""


def _row(record: ApprovalRecord, now: int) -> dict[str, Any]:
    view = record.view
    return {
        "id": record.id,
        "requester": view.requester_id,
        "requester_kind": view.requester_kind,
        "action": view.action,
        "resource": f"{view.resource_kind}/{view.resource_id}"
        if view.resource_id
        else view.resource_kind,
        "environment": view.environment,
        "reasons": view.reasons,
        "votes": sum(1 for v in record.votes if v.approve),
        "quorum": record.quorum,
        "left": _left(record.pending_expires_ms, now),
        # The compliance impact (and any other label) the asking rules declare.
        "labels": sorted(record.requirement.get("labels", {}).items()),
        "created": _iso(record.created_ms),
    }


def _detail(record: ApprovalRecord, who: Identity, now: int) -> dict[str, Any]:
    view = record.view
    try:
        check_approver(record, who)
        may_vote = record.state is State.PENDING
        why_not = ""
    except PermissionDenied as exc:
        may_vote, why_not = False, str(exc)
    voted = any(v.approver_id == voter_key(who) for v in record.votes)
    return {
        **_row(record, now),
        "state": record.state.value,
        "rules": view.matched_rules,
        "requester_roles": view.requester_roles,
        "fields": [{"path": f.path, "tags": f.tags} for f in view.fields],
        "masked": [{"path": m.path, "operator": m.operator} for m in view.masking_plan],
        "payload": json.dumps(view.payload, indent=2, ensure_ascii=False, sort_keys=True),
        "approvers": record.approver_sets,
        "all_votes": [
            {
                "who": v.approver_id,
                "approve": v.approve,
                "reason": v.reason,
                "at": _iso(v.at_ms),
            }
            for v in record.votes
        ],
        "final_reason": record.final_reason,
        "expires": _iso(record.pending_expires_ms),
        "may_vote": may_vote and not voted,
        "voted": voted,
        "why_not": why_not,
        "policy_revision": record.policy_revision,
    }
