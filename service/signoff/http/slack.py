"""Slack interactivity: Approve / Reject buttons and the reason modal, voted as the clicker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signoff.approvals.service import Approvals
from signoff.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SignoffError,
    StoreUnavailable,
    Unauthenticated,
)
from signoff.http.core import HttpCore
from signoff.http.errors import error_for, error_response
from signoff.http.slack_directory import RoleSource, SlackDirectory
from signoff.notify.render import (
    APPROVE_ACTION,
    CLICK_REASON,
    REASON_BLOCK,
    REASON_CALLBACK,
    REASON_INPUT,
    REJECT_ACTION,
    slack_reason_modal,
)
from signoff.safetext import plain_line

log = logging.getLogger("signoff.http.slack")
PATH: Final = "/slack/interactions"
# Slack's signatures are accepted for five minutes either side of now (SignatureVerifier);
# a signature seen inside that window is remembered for twice as long, so none is used twice.
REPLAY_SECONDS: Final = 600
# Interaction payloads are a few KiB; Slack's own limit for a view is far below this.
MAX_BODY: Final = 256 * 1024
DEFAULT_API_URL: Final = "https://slack.com/api/"


@dataclass(frozen=True)
class SlackSettings:
    """The Slack app: its signing secret and bot token (secrets, kept out of repr), the
    workspace it serves, and where roles come from."""

    signing_secret: str = field(repr=False)
    bot_token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    team_id: str = ""
    role_source: RoleSource = field(default_factory=RoleSource)
    # Approve opens the reason modal too (Reject always does); off, a click approves with
    # CLICK_REASON as its reason.
    reason_on_approve: bool = False

    def __post_init__(self) -> None:
        if not self.signing_secret or not self.bot_token:
            raise ConfigError("Slack needs both a signing secret and a bot token")
        if not self.api_url.startswith(("https://", "http://")) or not self.api_url.endswith("/"):
            raise ConfigError("the Slack API URL must be an http(s) URL ending in /")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings | None:
        """SIGNOFF_SLACK_SIGNING_SECRET and SIGNOFF_SLACK_BOT_TOKEN turn the surface on;
        SIGNOFF_SLACK_USERGROUP_ROLES maps user groups to roles ("S01ABC=security,S02DEF=dba"),
        SIGNOFF_SLACK_USERGROUP_GROUPS to groups the same way."""
        source = os.environ if env is None else env
        secret = source.get("SIGNOFF_SLACK_SIGNING_SECRET", "")
        token = source.get("SIGNOFF_SLACK_BOT_TOKEN", "")
        if not secret and not token:
            return None
        return cls(
            signing_secret=secret,
            bot_token=token,
            api_url=source.get("SIGNOFF_SLACK_API_URL") or DEFAULT_API_URL,
            team_id=source.get("SIGNOFF_SLACK_TEAM_ID", ""),
            role_source=RoleSource(
                roles=parse_mapping(source.get("SIGNOFF_SLACK_USERGROUP_ROLES", "")),
                groups=parse_mapping(source.get("SIGNOFF_SLACK_USERGROUP_GROUPS", "")),
            ),
            reason_on_approve=source.get("SIGNOFF_SLACK_REASON_ON_APPROVE", "") in ("1", "true"),
        )

    def client(self) -> WebClient:
        return WebClient(token=self.bot_token, base_url=self.api_url, timeout=5)


def parse_mapping(text: str) -> dict[str, frozenset[str]]:
    """ "S01=security,S01=dba,S02=sre" as {"S01": {"security", "dba"}, "S02": {"sre"}}."""
    out: dict[str, set[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        usergroup, sep, name = (x.strip() for x in item.partition("="))
        if not (sep and usergroup and name):
            raise ConfigError("a user group mapping is written USERGROUP_ID=NAME[,...]")
        out.setdefault(usergroup, set()).add(name)
    return {k: frozenset(v) for k, v in out.items()}


class ReplayGuard:
    """Remembers every accepted signature in Redis (so all replicas agree) for REPLAY_SECONDS."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix + "slack:seen:"

    def first_use(self, signature: str) -> bool:
        key = self._prefix + hashlib.sha256(signature.encode()).hexdigest()
        try:
            return bool(self._redis.set(key, "1", nx=True, ex=REPLAY_SECONDS))
        except redis.RedisError as exc:
            # Fails closed: a signature that cannot be remembered could be replayed.
            raise StoreUnavailable(f"Redis is unreachable ({type(exc).__name__})") from None


class SlackInteractions:
    """One verified interaction in, one vote (or the reason modal) out."""

    def __init__(
        self,
        settings: SlackSettings,
        approvals: Approvals,
        *,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.approvals = approvals
        self.verifier = verifier or SignatureVerifier(settings.signing_secret)
        self.client = settings.client()
        self.directory = SlackDirectory(self.client, settings.role_source, team_id=settings.team_id)
        self.replays = ReplayGuard(approvals.store.redis, approvals.store.prefix)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Response:
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not self.verifier.is_valid(body, timestamp, signature):
            raise Unauthenticated("the Slack signature does not verify (or is too old)")
        assert signature is not None  # is_valid refuses a missing one
        if not self.replays.first_use(signature):
            raise Unauthenticated("this Slack request was already received")
        payload = _payload(body)
        if self.settings.team_id and _get(payload, "team", "id") != self.settings.team_id:
            raise PermissionDenied("wrong_workspace", "this Slack workspace is not served")
        kind = payload.get("type")
        if kind == "block_actions":
            return self._clicked(payload)
        if kind == "view_submission" and _get(payload, "view", "callback_id") == REASON_CALLBACK:
            return self._submitted(payload)
        # Other interactions (a link button's click, a closed modal) ask nothing of signoff.
        return Response(status_code=200)

    def _clicked(self, payload: Mapping[str, Any]) -> Response:
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else {}
        action_id = action.get("action_id") if isinstance(action, dict) else None
        if action_id not in (APPROVE_ACTION, REJECT_ACTION):
            return Response(status_code=200)
        approval_id = _text(action.get("value"), "actions[0].value")
        approve = action_id == APPROVE_ACTION
        user_id = _text(_get(payload, "user", "id"), "user.id")
        channel = _get(payload, "container", "channel_id") or _get(payload, "channel", "id")
        try:
            who = self.directory.identity(user_id)
            if approve and not self.settings.reason_on_approve:
                self.approvals.vote(approval_id, who, CLICK_REASON, approve=True)
                return Response(status_code=200)
            # Checked before the modal opens, so nobody types a reason for nothing.
            self.approvals.get(approval_id, who)
            metadata = json.dumps({"approval_id": approval_id, "approve": approve})
            modal = slack_reason_modal(approval_id, approve=approve, metadata=metadata)
            self.client.views_open(
                trigger_id=_text(payload.get("trigger_id"), "trigger_id"), view=modal
            )
        except (Unauthenticated, PermissionDenied, NotFound, Conflict, InvalidRequest) as exc:
            self._tell(channel, user_id, exc)
        except SlackClientError as exc:
            raise StoreUnavailable(f"Slack could not be asked ({type(exc).__name__})") from None
        return Response(status_code=200)

    def _submitted(self, payload: Mapping[str, Any]) -> Response:
        try:
            meta = json.loads(_text(_get(payload, "view", "private_metadata"), "private_metadata"))
        except ValueError:
            raise InvalidRequest("view.private_metadata", "is not JSON") from None
        if not isinstance(meta, dict):
            raise InvalidRequest("view.private_metadata", "is not an object")
        approval_id = _text(meta.get("approval_id"), "view.private_metadata.approval_id")
        reason = _get(payload, "view", "state", "values", REASON_BLOCK, REASON_INPUT, "value")
        user_id = _text(_get(payload, "user", "id"), "user.id")
        try:
            who = self.directory.identity(user_id)
            self.approvals.vote(
                approval_id,
                who,
                reason if isinstance(reason, str) else "",
                approve=bool(meta.get("approve")),
            )
        except (Unauthenticated, PermissionDenied, NotFound, Conflict, InvalidRequest) as exc:
            # Shown under the reason field; the modal stays open.
            return JSONResponse({"response_action": "errors", "errors": {REASON_BLOCK: _why(exc)}})
        return Response(status_code=200)  # an empty 200 closes the modal

    def _tell(self, channel: object, user_id: str, exc: SignoffError) -> None:
        """Say privately to the clicker why nothing happened."""
        if not isinstance(channel, str) or not channel:
            return
        try:
            self.client.chat_postEphemeral(channel=channel, user=user_id, text=_why(exc))
        except SlackClientError as err:
            log.warning(
                "could not tell a Slack user why a vote was refused (%s)", type(err).__name__
            )


def _why(exc: SignoffError) -> str:
    text = plain_line(str(exc))[:300]
    if isinstance(exc, PermissionDenied):
        return f"You cannot decide this approval: {text}"
    if isinstance(exc, Unauthenticated):
        return f"Your Slack account is not linked to signoff: {text}"
    return f"Nothing was recorded: {text}"


def _get(obj: object, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(name, "is required")
    return value


def _payload(body: bytes) -> dict[str, Any]:
    """The `payload` form field of an interaction request, as Slack documents it."""
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError):
        raise InvalidRequest("payload", "is not a Slack interaction payload") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("payload", "is not an object")
    return payload


def routes(core: HttpCore) -> list[BaseRoute]:
    """POST /slack/interactions when Slack is configured (core.settings["slack"], else the
    environment) and approvals are on; nothing otherwise."""
    settings = core.settings.get("slack") or SlackSettings.from_env()
    if settings is None or core.approvals is None:
        return []
    if not isinstance(settings, SlackSettings):
        raise ConfigError("settings['slack'] must be a SlackSettings")
    interactions = SlackInteractions(settings, core.approvals)

    async def interaction(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise InvalidRequest("body", f"is larger than {MAX_BODY} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            # Blocking calls (Redis, Slack's Web API) stay off the event loop.
            return await run_in_threadpool(interactions.handle, body, headers)
        except SignoffError as exc:
            return _refused(exc)

    return [Route(PATH, interaction, methods=["POST"], include_in_schema=False)]


def _refused(exc: SignoffError) -> Response:
    # Slack reads only the status; the body is the gateway's error for people.
    return error_response(*error_for(exc))
