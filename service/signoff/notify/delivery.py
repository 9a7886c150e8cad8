"""Delivery: a consumer-group reader of the event stream posting each event to every webhook."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from signoff.errors import ConfigError
from signoff.notify.config import EVENTS_STREAM, NotifierConfig
from signoff.notify.events import CREATED, FOLLOW_UPS, Event, parse_event
from signoff.notify.render import (
    plain,
    slack_app_message,
    slack_message,
    slack_outcome_line,
    teams_message,
)
from signoff.streamreader import Entry, StreamGroupReader

log = logging.getLogger("signoff.notifier")

Renderer = Callable[..., dict[str, Any]]


VOTED = "approval.voted"
WEBHOOK_KINDS = frozenset({CREATED, *FOLLOW_UPS})
# A Slack app message is updated in place, so each vote (progress toward quorum) shows too.
SLACK_APP_KINDS = frozenset({*WEBHOOK_KINDS, VOTED})
SLACK_APP = "slack-app"
# How long the channel and ts of a posted message are kept, to update it: past any pending TTL.
MESSAGE_REF_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class _Target:
    name: str
    url: str = field(repr=False)
    # None: the stream entry's fields as they are (the Slack app renders when it sends).
    render: Renderer | None = field(repr=False)
    kinds: frozenset[str] = WEBHOOK_KINDS

    @property
    def host(self) -> str:
        # The path and query of a webhook URL are its credential; only the host is loggable.
        return urllib.parse.urlsplit(self.url).hostname or "?"


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    permanent: bool = False
    detail: str = ""
    retry_after: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook never legitimately redirects; following one would resend the body elsewhere
    # (and urllib turns a redirected POST into a GET, which would then "succeed").
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> None:
        return None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # the HTTP-date form is rare for webhooks; plain backoff applies


def describe(exc: BaseException) -> str:
    # Exception texts can embed the URL; the class and errno text are enough to diagnose.
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    detail = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class Notifier:
    """Consumes the event stream in a consumer group and posts to the configured webhooks.

    Delivery is at least once: an entry is acknowledged only after every webhook accepted it
    (2xx), or after it was given up on; entries left pending by a consumer that died are taken
    over with XAUTOCLAIM once idle for `claim_min_idle_ms`. A webhook may therefore see a
    message twice, never zero times unless it kept failing for `max_attempts` attempts.
    """

    def __init__(self, config: NotifierConfig, *, client: redis.Redis | None = None) -> None:
        self.config = config
        targets = []
        if config.slack_webhook_url:
            targets.append(_Target("slack", config.slack_webhook_url, slack_message))
        if config.teams_webhook_url:
            targets.append(_Target("teams", config.teams_webhook_url, teams_message))
        if config.slack_bot_token:
            # What the app sends depends on what it posted before, so it renders when it sends.
            targets.append(_Target(SLACK_APP, config.slack_api_url, None, SLACK_APP_KINDS))
        if not targets:
            raise ConfigError(
                "no webhook configured: set SIGNOFF_SLACK_WEBHOOK_URL, SIGNOFF_TEAMS_WEBHOOK_URL "
                "and/or SIGNOFF_SLACK_BOT_TOKEN with SIGNOFF_SLACK_CHANNEL"
            )
        self.targets: tuple[_Target, ...] = tuple(targets)
        self._owns_client = client is None
        self._redis = client or redis.Redis.from_url(config.redis_url, decode_responses=True)
        self._slack_app = (
            SlackApp(config, self._redis, _key_prefix(config.stream))
            if config.slack_bot_token
            else None
        )
        self._reader = StreamGroupReader(
            self._redis,
            config.stream,
            config.group,
            config.consumer,
            start="$",  # a notifier posts what happens from now on, not the backlog
            batch_size=config.batch_size,
            claim_min_idle_ms=config.claim_min_idle_ms,
            log=log,
        )
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._stop = threading.Event()
        self._touched = 0.0

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()

    # -- Redis ---------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing; it starts at new entries only."""
        self._reader.ensure_group()

    def _claim(self) -> list[Entry]:
        claimed, trimmed = self._reader.claim()
        if trimmed:
            log.warning("%d pending event(s) were trimmed before delivery", len(trimmed))
        if claimed:
            log.info("took over %d event(s) left pending by another consumer", len(claimed))
        return claimed

    def _touch(self, entry_ids: Sequence[str]) -> None:
        # Claiming our own entries resets their idle time, so a peer does not take over
        # entries we are still working on (that would post them twice).
        self._touched = time.monotonic()
        try:
            self._reader.refresh(entry_ids)
        except redis.RedisError as exc:
            log.warning("could not refresh pending events (%s)", type(exc).__name__)

    def _keep(self, entry_ids: Sequence[str]) -> None:
        """Touch `entry_ids` if a quarter of the takeover idle time has passed since the last."""
        if time.monotonic() - self._touched >= self.config.claim_min_idle_ms / 4000:
            self._touch(entry_ids)

    def _pause(self, seconds: float, held: Sequence[str]) -> bool:
        """Sleep between retries, keeping `held` ours; False if a stop came first."""
        deadline = time.monotonic() + seconds
        step = max(0.01, self.config.claim_min_idle_ms / 4000)
        while True:
            self._keep(held)
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self._stop.wait(min(left, step)):
                return False

    # -- Processing -----------------------------------------------------------------------------

    def run_once(self, block_ms: int = 0) -> int:
        """Take over orphaned entries, read new ones (waiting up to `block_ms`), post them.

        Returns how many entries were acknowledged: delivered, dropped, or not ours to post.
        Entries interrupted by a stop stay pending and are picked up again later.
        """
        try:
            if not self._reader.group_ready:
                self._reader.ensure_group()
            entries = self._claim()
            if not self._stop.is_set():
                # Claimed work is waiting: do not sit in a blocking read before doing it.
                entries += self._reader.read_new(0 if entries else block_ms)
        except redis.ResponseError as exc:
            # Recreated now, not on the next call: entries written in between would be behind
            # its "$" start and never seen.
            self._reader.recreate_missing_group(exc)
            return 0
        return self._handle(entries)

    def _handle(self, entries: list[Entry]) -> int:
        acked = 0
        self._touched = time.monotonic()
        for index, (entry_id, fields) in enumerate(entries):
            if self._stop.is_set():
                break
            # Slow webhooks can keep the rest of a batch waiting past the takeover idle time.
            self._keep([eid for eid, _ in entries[index:]])
            if fields is None:
                self._reader.ack(entry_id)  # trimmed from the stream: nothing left to deliver
            else:
                later = [eid for eid, _ in entries[index + 1 :]]
                if not self._process(entry_id, fields, later):
                    break  # stopped mid-retry: leave it and the rest pending
                self._reader.ack(entry_id)
            acked += 1
        return acked

    def _process(self, entry_id: str, fields: Mapping[str, str], later: Sequence[str]) -> bool:
        """Post one entry; False only when a stop interrupted it before it was settled."""
        kind = fields.get("type", "")
        approval_id = fields.get("approval_id", "")
        targets = [t for t in self.targets if kind in t.kinds]
        if kind != CREATED and not self.config.follow_ups:
            targets = []
        if not targets:
            log.debug("event %s (%s) is not posted", entry_id, plain(kind, 40))
            return True
        if not approval_id:
            log.warning("dropped event %s (%s): it has no approval_id", entry_id, plain(kind, 40))
            return True
        event = parse_event(fields)
        try:
            bodies = [
                (
                    t,
                    self._encode(
                        dict(fields)
                        if t.render is None
                        else t.render(event, approve_url_template=self.config.approve_url_template)
                    ),
                )
                for t in targets
            ]
        except Exception as exc:
            # A poison entry must not wedge the stream. Only the class is logged: an
            # exception message could quote the event's contents.
            log.error(
                "dropped event %s (%s): rendering failed (%s)",
                entry_id,
                plain(kind, 40),
                type(exc).__name__,
            )
            return True
        return self._deliver(entry_id, event, bodies, [entry_id, *later])

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _deliver(
        self,
        entry_id: str,
        event: Event,
        bodies: list[tuple[_Target, bytes]],
        held: Sequence[str],
    ) -> bool:
        cfg = self.config
        what = f"event {entry_id} ({event.type}, approval {plain(event.approval_id, 80)})"
        remaining = bodies
        attempt = 1
        while True:
            failed: list[tuple[_Target, bytes]] = []
            wait = 0.0
            for target, body in remaining:
                outcome = self._post(target, body)
                if outcome.ok:
                    log.info("posted %s to %s %s", what, target.name, target.host)
                elif outcome.permanent:
                    log.error(
                        "dropped %s for %s %s: %s is not retryable",
                        what,
                        target.name,
                        target.host,
                        outcome.detail,
                    )
                else:
                    failed.append((target, body))
                    wait = max(wait, outcome.retry_after or 0.0)
                    log.warning(
                        "posting %s to %s %s failed (%s), attempt %d of %d",
                        what,
                        target.name,
                        target.host,
                        outcome.detail,
                        attempt,
                        cfg.max_attempts,
                    )
            if not failed:
                return True
            if attempt >= cfg.max_attempts:
                for target, _body in failed:
                    log.error(
                        "dropped %s for %s %s after %d attempts",
                        what,
                        target.name,
                        target.host,
                        attempt,
                    )
                return True
            delay = min(cfg.backoff_max, max(wait, cfg.backoff_base * 2 ** (attempt - 1)))
            if not self._pause(delay, held):
                return False
            # Only the webhooks that failed are retried; the others already have the message.
            remaining = failed
            attempt += 1

    # Hand-written rather than slack_sdk's WebhookClient, which would reach the tests' local
    # stand-in (it accepts any http URL) but: posts through urllib's default opener, which
    # follows a 301/302/303 as a GET and reports the landing page's 200, so a message would be
    # lost and acknowledged as delivered (the redirect tests catch that); logs the webhook URL,
    # whose path is its secret, and the body at debug level; and reads a response of any size.
    # Teams would still need this code; one poster for both webhooks keeps these guarantees
    # in one place.
    def _post(self, target: _Target, body: bytes) -> _Outcome:
        if target.name == SLACK_APP and self._slack_app is not None:
            return self._slack_app.send(parse_event(json.loads(body)))
        # The scheme was checked to be http(s) when the configuration was built.
        request = urllib.request.Request(  # noqa: S310
            target.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "signoff-notifier",
            },
        )
        try:
            with self._opener.open(request, timeout=self.config.http_timeout) as response:
                response.read(65536)  # the status is the answer; the body is not needed
            return _Outcome(ok=True)
        except urllib.error.HTTPError as exc:
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            # Other 4xx (bad payload, revoked or archived webhook) and redirects will fail
            # the same way every time; retrying them only delays the error in the log.
            permanent = 300 <= exc.code < 500 and exc.code not in (408, 425, 429)
            return _Outcome(False, permanent, f"HTTP {exc.code}", retry_after)
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts included
            return _Outcome(False, detail=describe(exc))

    def run_forever(self, stop: threading.Event, block_ms: int = 2000) -> None:
        """Loop on `run_once` until `stop` is set; Redis outages are waited out with backoff."""
        self._stop = stop
        failures = 0
        while not stop.is_set():
            try:
                self.run_once(block_ms)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                delay = min(
                    self.config.backoff_max, max(0.1, self.config.backoff_base) * 2**failures
                )
                # Redis error texts name host:port at most, never the URL's password.
                log.warning(
                    "redis error (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay
                )
                self._reader.group_ready = False
                stop.wait(delay)


def _key_prefix(stream: str) -> str:
    # The store writes `<prefix>events`; the app keeps its message references beside it.
    return stream.removesuffix(EVENTS_STREAM) if stream.endswith(EVENTS_STREAM) else stream + ":"


class SlackApp:
    """Posts each approval once as an app message with buttons (chat.postMessage), updates it
    in place with every vote and the final state (chat.update), and answers the outcome in
    the message's thread. The channel and ts of each message are kept in Redis, so any
    notifier replica can update a message another one posted."""

    def __init__(self, config: NotifierConfig, client: redis.Redis, prefix: str) -> None:
        assert config.slack_bot_token
        assert config.slack_channel
        self._channel = config.slack_channel
        self._template = config.approve_url_template
        self._redis = client
        self._prefix = prefix + "slack:message:"
        self._web = WebClient(
            token=config.slack_bot_token,
            base_url=config.slack_api_url,
            timeout=int(max(1, config.http_timeout)),
        )

    def send(self, event: Event) -> _Outcome:
        try:
            if event.type == CREATED:
                self._post(event)
            else:
                self._update(event)
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "error")
            if exc.response.status_code == 429 or code == "ratelimited":
                retry = _retry_after(exc.response.headers.get("Retry-After"))
                return _Outcome(False, detail=f"Slack {plain(code, 40)}", retry_after=retry)
            # invalid_auth, channel_not_found, ...: the same every time.
            return _Outcome(False, permanent=True, detail=f"Slack {plain(code, 40)}")
        except (SlackClientError, OSError) as exc:
            return _Outcome(False, detail=describe(exc))
        return _Outcome(ok=True)

    def _key(self, approval_id: str) -> str:
        return self._prefix + approval_id

    def _post(self, event: Event) -> None:
        message = slack_app_message(
            event.approval_id, event.summary, approve_url_template=self._template
        )
        answer = self._web.chat_postMessage(channel=self._channel, **message)
        ref = {"channel": answer["channel"], "ts": answer["ts"], "voters": {}}
        self._redis.set(self._key(event.approval_id), json.dumps(ref), ex=MESSAGE_REF_SECONDS)

    def _update(self, event: Event) -> None:
        raw = self._redis.get(self._key(event.approval_id))
        if raw is None:
            return  # posted before the app was configured, or long ago: nothing to update
        ref = json.loads(raw)
        state = event.to_state or "pending"
        if event.type in (VOTED, "approval.approved", "approval.rejected") and event.actor:
            # Keyed by voter: a redelivered event does not count a vote twice.
            ref["voters"][event.actor] = event.type != "approval.rejected"
        self._redis.set(self._key(event.approval_id), json.dumps(ref), ex=MESSAGE_REF_SECONDS)
        message = slack_app_message(
            event.approval_id,
            event.summary,
            state=state,
            voters=list(ref["voters"].items()),
            approve_url_template=self._template,
        )
        self._web.chat_update(channel=ref["channel"], ts=ref["ts"], **message)
        if event.type in FOLLOW_UPS:
            line = slack_outcome_line(event.approval_id, event.summary, state, event.actor)
            self._web.chat_postMessage(channel=ref["channel"], thread_ts=ref["ts"], text=line)
