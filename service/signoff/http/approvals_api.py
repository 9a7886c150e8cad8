"""Approvals over HTTP/JSON, mirroring the gRPC ApprovalService: list, get, vote, cancel, watch.

Each route authenticates its caller (a bearer JWT, verified as gRPC verifies it, or the web
inbox's session), converts the JSON it got, calls the shared `Approvals` and converts the
record back; who may do what is decided there, never here. Each endpoint's docstring carries
its OpenAPI operation after `---` (see api_openapi.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from signoff.approvals.model import ApprovalRecord, Identity
from signoff.approvals.service import DEFAULT_PAGE, MAX_PAGE, Approvals
from signoff.errors import (
    InvalidRequest,
    SignoffError,
    StoreUnavailable,
    Unauthenticated,
)
from signoff.http import api_openapi, security
from signoff.http.api_json import approval_json, page_position, page_token
from signoff.http.core import HttpCore
from signoff.http.errors import error_for, error_response
from signoff.http.gateway_json import read_json_object
from signoff.limits import Limits

PREFIX = "/v1/approvals"
# A vote's body is a reason of at most 2,000 characters: nothing near a decision's size.
VOTE_LIMITS = Limits(max_message_bytes=64 * 1024)
MAX_TOKEN_CHARS = 200
DEFAULT_HEARTBEAT_SECONDS = 15.0
CSRF_HEADER = "x-csrf-token"
Endpoint = Callable[[Request], Awaitable[Response]]


class ApprovalsApi:
    """The routes over one `HttpCore`; endpoints are methods so their docstrings document them."""

    def __init__(self, core: HttpCore) -> None:
        self.core = core
        settings = core.settings.get("approvals_api", {})
        self.heartbeat = float(settings.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS))

    def routes(self) -> list[BaseRoute]:
        one = PREFIX + "/{approval_id}"
        return [
            Route(PREFIX, _guarded(self.list), methods=["GET"]),
            Route(one, _guarded(self.get), methods=["GET"]),
            Route(one + "/approve", _guarded(self.approve), methods=["POST"]),
            Route(one + "/reject", _guarded(self.reject), methods=["POST"]),
            Route(one + "/cancel", _guarded(self.cancel), methods=["POST"]),
            Route(one + "/watch", _guarded(self.watch), methods=["GET"]),
        ]

    # --- who is asking ---------------------------------------------------------------

    @property
    def _approvals(self) -> Approvals:
        if self.core.approvals is None:
            raise StoreUnavailable("this server keeps no approvals (no approval store configured)")
        return self.core.approvals

    async def _who(self, request: Request, *, changes: bool = False) -> Identity:
        if "authorization" in request.headers:
            # The same parsing and verification as gRPC metadata: one header, "Bearer <jwt>".
            headers = request.headers.items()
            return await run_in_threadpool(self.core.authenticator.from_metadata, headers)
        session = security.session_of(request)
        if session is not None:
            # A cookie rides along on cross-site requests: a state change by session needs the
            # session's CSRF token too (header X-CSRF-Token), checked by the inbox's own rule.
            if changes:
                security.check_csrf(request, session, request.headers.get(CSRF_HEADER, ""))
            return session.identity
        raise Unauthenticated("send Authorization: Bearer <token>, or sign in to the inbox")

    # --- endpoints -------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        """Pending approvals the caller may decide.
        ---
        operationId: listApprovals
        summary: Pending approvals the caller may approve or reject, soonest to expire first
        description: >-
          Pages continue after the last entry of the page before (by expiry, then id), so an
          approval created while a caller pages through appears once or, if it sorts before the
          page in hand, on the next listing; none is repeated. A full page carries
          `next_page_token`; the page after the last may be empty.
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters:
          - {name: page_size, in: query, required: false,
             description: 'At most this many (default 50, at most 200).',
             schema: {type: integer, minimum: 0}}
          - {name: page_token, in: query, required: false,
             description: '`next_page_token` of the page before.', schema: {type: string}}
        responses:
          '200':
            description: One page of approvals.
            content:
              application/json:
                schema: {$ref: '#/components/schemas/ApprovalPage'}
          '400': {$ref: '#/components/responses/BadRequest'}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        size = _page_size(request.query_params.getlist("page_size"))
        after = _page_after(request.query_params.getlist("page_token"))
        who = await self._who(request)
        records = await run_in_threadpool(self._approvals.list, who, size, after=after)
        full = bool(records) and len(records) >= min(size or DEFAULT_PAGE, MAX_PAGE)
        body: dict[str, Any] = {
            "approvals": [approval_json(r) for r in records],
            "next_page_token": page_token(records[-1]) if full else "",
        }
        return JSONResponse(body)

    async def get(self, request: Request) -> Response:
        """One approval.
        ---
        operationId: getApproval
        summary: One approval, for its requester side and eligible approvers
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters: [{$ref: '#/components/parameters/ApprovalId'}]
        responses:
          '200':
            description: The approval.
            content:
              application/json:
                schema: {$ref: '#/components/schemas/Approval'}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '403': {$ref: '#/components/responses/Forbidden'}
          '404': {$ref: '#/components/responses/NotFound'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        who = await self._who(request)
        record = await run_in_threadpool(self._approvals.get, _id(request), who)
        return JSONResponse(approval_json(record))

    async def approve(self, request: Request) -> Response:
        """Approve as the caller.
        ---
        operationId: approveApproval
        summary: Approve as the caller; the approval as it stands afterwards
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters: [{$ref: '#/components/parameters/ApprovalId'}]
        requestBody: {$ref: '#/components/requestBodies/Vote'}
        responses:
          '200': {$ref: '#/components/responses/Approval'}
          '400': {$ref: '#/components/responses/BadRequest'}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '403': {$ref: '#/components/responses/Forbidden'}
          '404': {$ref: '#/components/responses/NotFound'}
          '409': {$ref: '#/components/responses/Conflict'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        return await self._vote(request, approve=True)

    async def reject(self, request: Request) -> Response:
        """Reject as the caller.
        ---
        operationId: rejectApproval
        summary: Reject as the caller (a reason is required); the approval afterwards
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters: [{$ref: '#/components/parameters/ApprovalId'}]
        requestBody: {$ref: '#/components/requestBodies/Vote'}
        responses:
          '200': {$ref: '#/components/responses/Approval'}
          '400': {$ref: '#/components/responses/BadRequest'}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '403': {$ref: '#/components/responses/Forbidden'}
          '404': {$ref: '#/components/responses/NotFound'}
          '409': {$ref: '#/components/responses/Conflict'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        return await self._vote(request, approve=False)

    async def _vote(self, request: Request, *, approve: bool) -> Response:
        approval_id = _id(request)
        who = await self._who(request, changes=True)
        reason = _reason(await _body(request, VOTE_LIMITS))
        record = await run_in_threadpool(
            lambda: self._approvals.vote(approval_id, who, reason, approve=approve)
        )
        return JSONResponse(approval_json(record))

    async def cancel(self, request: Request) -> Response:
        """Withdraw an approval.
        ---
        operationId: cancelApproval
        summary: Withdraw a pending or approved approval (its requester side only)
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters: [{$ref: '#/components/parameters/ApprovalId'}]
        requestBody: {$ref: '#/components/requestBodies/Cancel'}
        responses:
          '200': {$ref: '#/components/responses/Approval'}
          '400': {$ref: '#/components/responses/BadRequest'}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '403': {$ref: '#/components/responses/Forbidden'}
          '404': {$ref: '#/components/responses/NotFound'}
          '409': {$ref: '#/components/responses/Conflict'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        approval_id = _id(request)
        who = await self._who(request, changes=True)
        reason = _reason(await _body(request, VOTE_LIMITS))
        record = await run_in_threadpool(self._approvals.cancel, approval_id, who, reason)
        return JSONResponse(approval_json(record))

    async def watch(self, request: Request) -> Response:
        """Follow one approval as Server-Sent Events.
        ---
        operationId: watchApproval
        summary: The approval now, then on each change, as Server-Sent Events
        description: >-
          Each `approval` event carries the approval as JSON (first the current state). Comment
          lines (`: keep-alive`) keep idle connections open. The stream ends with an `end`
          event when the approval is final or the server's watch time is up; an `error` event
          (the JSON error body) ends it when the store fails. Open watches are bounded per
          caller and per server (429 when all are taken): poll `getApproval` instead.
        tags: [approvals]
        security: [{bearer: []}, {session: []}]
        parameters: [{$ref: '#/components/parameters/ApprovalId'}]
        responses:
          '200':
            description: 'An event stream: `event: approval`, `event: end`, `event: error`.'
            content:
              text/event-stream:
                schema: {type: string}
          '401': {$ref: '#/components/responses/Unauthenticated'}
          '403': {$ref: '#/components/responses/Forbidden'}
          '404': {$ref: '#/components/responses/NotFound'}
          '429': {$ref: '#/components/responses/Overloaded'}
          '503': {$ref: '#/components/responses/Unavailable'}
        """
        approval_id = _id(request)
        # Authenticated first, so an anonymous caller cannot hold a watch slot.
        who = await self._who(request)
        stop = threading.Event()
        updates = self._approvals.watch(approval_id, who, active=lambda: not stop.is_set())
        # The first record is read before answering, so an unknown approval, a caller who may
        # not see it or a full set of watch slots is a status code, not a broken stream.
        try:
            first = await run_in_threadpool(next, updates)
        except BaseException:
            updates.close()
            raise
        stream = _events(updates, first, stop, self.heartbeat)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def routes(core: HttpCore) -> list[BaseRoute]:
    return [*ApprovalsApi(core).routes(), *api_openapi.routes()]


def _guarded(endpoint: Endpoint) -> Endpoint:
    """`endpoint` answering signoff's errors as their JSON error response."""

    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except SignoffError as exc:
            return error_response(*error_for(exc))

    # Keeps the docstring (the OpenAPI operation) and the name of the endpoint.
    run.__doc__ = endpoint.__doc__
    run.__name__ = endpoint.__name__
    return run


# --- input ---------------------------------------------------------------------------------


def _id(request: Request) -> str:
    value: str = request.path_params["approval_id"]
    return value


def _page_size(values: list[str]) -> int:
    if not values:
        return 0
    if len(values) > 1:
        raise InvalidRequest("page_size", "given more than once")
    value = values[0]
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise InvalidRequest("page_size", f"must be a whole number from 0 to {MAX_PAGE}")
    # Larger sizes are served as MAX_PAGE, as gRPC serves them.
    return int(value)


def _page_after(values: list[str]) -> tuple[int, str] | None:
    if not values or values == [""]:
        return None
    if len(values) > 1:
        raise InvalidRequest("page_token", "given more than once")
    if len(values[0]) > MAX_TOKEN_CHARS:
        raise InvalidRequest("page_token", "is not a token this API returned")
    return page_position(values[0])


async def _body(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object; empty when no body was sent (a vote without a reason)."""
    headers = request.headers
    if headers.get("content-length") == "0" or not (
        "content-length" in headers or "transfer-encoding" in headers
    ):
        return {}
    return await read_json_object(request, limits)


def _reason(doc: dict[str, Any]) -> str:
    for name in doc:
        if name != "reason":
            raise InvalidRequest(name, "is not a member of this request (only reason is)")
    reason = doc.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidRequest("reason", "must be a string")
    return reason


# --- the event stream ----------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> str:
    # JSON never holds a raw newline, so one `data:` line carries the whole value.
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(
    updates: Generator[ApprovalRecord, None, None],
    first: ApprovalRecord,
    stop: threading.Event,
    heartbeat: float,
) -> AsyncIterator[str]:
    """`first`, then each further record `updates` yields, with a comment line after each
    quiet `heartbeat`; `stop` ends the watch when the client goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(item: tuple[str, Any]) -> None:
        # RuntimeError: the event loop is gone (server shutdown), nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        # A thread of its own: the store's blocking reads must not hold the event loop, and
        # the watch slot is released by closing `updates` here, however the stream ends.
        try:
            for record in updates:
                put(("approval", record))
            put(("end", None))
        except Exception as exc:
            put(("error", exc))
        finally:
            updates.close()

    last = first
    yield _event("approval", approval_json(first))
    threading.Thread(target=pump, name="signoff-http-watch", daemon=True).start()
    try:
        while True:
            try:
                kind, item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if kind == "approval":
                last = item
                yield _event("approval", approval_json(item))
            elif kind == "error":
                yield _event("error", {"error": error_for(item)[1]})
                return
            else:
                yield _event("end", {"id": last.id, "state": last.state.value})
                return
    finally:
        stop.set()
