"""Posts approval requests from the signoff event stream to Slack and Microsoft Teams webhooks."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import re
import shlex
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from signoff.errors import ConfigError
from signoff.safetext import plain_line

log = logging.getLogger("signoff.notifier")

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX: Final = "signoff:"
# The store writes every transition to `<prefix>events`; a notifier reads the same key.
EVENTS_STREAM: Final = "events"
DEFAULT_STREAM: Final = DEFAULT_PREFIX + EVENTS_STREAM
DEFAULT_GROUP: Final = "signoff-notifier"

CREATED: Final = "approval.created"
# Final outcomes get a one-line follow-up so reviewers stop acting on a closed request.
# `voted` (progress toward quorum) and `consumed` (the grant was used) are not posted:
# neither asks anything of a reviewer, and a channel full of them buries the requests.
FOLLOW_UPS: Final[Mapping[str, str]] = {
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.expired": "expired",
    "approval.cancelled": "cancelled",
}

# Caps keep every message inside Slack's block limits and Teams' 28 KB card limit.
MAX_TEXT: Final = 200
MAX_ITEMS: Final = 20
SLACK_HEADER_LIMIT: Final = 150
SLACK_FIELD_LIMIT: Final = 2000
SLACK_SECTION_LIMIT: Final = 3000


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _check_http_url(value: str | None, what: str) -> None:
    if value is None:
        return
    parts = urllib.parse.urlsplit(value)
    # urllib would also open file:// and ftp:// URLs; a webhook is only ever http(s).
    # The value itself is never echoed: webhook URLs carry their secret in the path.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http(s) URL with a host")


@dataclass(frozen=True)
class NotifierConfig:
    """Where to read events and where to post them; webhook URLs are secrets, kept out of repr."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=_default_consumer)
    slack_webhook_url: str | None = field(default=None, repr=False)
    teams_webhook_url: str | None = field(default=None, repr=False)
    approve_url_template: str | None = None
    http_timeout: float = 5.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # An entry pending this long on any consumer is presumed orphaned and taken over. Keep it
    # well above http_timeout: the owner refreshes its entries between posts, not during one.
    claim_min_idle_ms: int = 60_000
    batch_size: int = 10
    follow_ups: bool = True

    def __post_init__(self) -> None:
        _check_http_url(self.slack_webhook_url, "the Slack webhook URL")
        _check_http_url(self.teams_webhook_url, "the Teams webhook URL")
        if self.approve_url_template is not None:
            _check_http_url(self.approve_url_template, "the approval URL template")
            if "{approval_id}" not in self.approve_url_template:
                raise ConfigError("the approval URL template must contain {approval_id}")
        if not (self.stream and self.group and self.consumer):
            raise ConfigError("stream, group and consumer must not be empty")
        if self.http_timeout <= 0:
            raise ConfigError("http_timeout must be positive")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ConfigError("backoff must not be negative")
        if self.claim_min_idle_ms < 0:
            raise ConfigError("claim_min_idle_ms must not be negative")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierConfig:
        """Read REDIS_URL and the SIGNOFF_* notifier variables; empty values count as unset.
        The stream is SIGNOFF_EVENTS_STREAM, else the events stream under SIGNOFF_REDIS_PREFIX,
        so a service and its notifier configured with one prefix meet on one stream."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            return source.get(name) or None

        return cls(
            redis_url=get("REDIS_URL") or DEFAULT_REDIS_URL,
            stream=get("SIGNOFF_EVENTS_STREAM")
            or (get("SIGNOFF_REDIS_PREFIX") or DEFAULT_PREFIX) + EVENTS_STREAM,
            slack_webhook_url=get("SIGNOFF_SLACK_WEBHOOK_URL"),
            teams_webhook_url=get("SIGNOFF_TEAMS_WEBHOOK_URL"),
            approve_url_template=get("SIGNOFF_APPROVAL_URL_TEMPLATE"),
        )


# ---------------------------------------------------------------------------------------------
# Events, read through an allowlist
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    path: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApproverSet:
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Summary:
    """The masked summary, holding only the keys the notifier renders; all else is dropped."""

    requester_id: str = ""
    requester_kind: str = ""
    action: str = ""
    resource_kind: str = ""
    resource_id: str = ""
    environment: str = ""
    fields: tuple[FieldRef, ...] = ()
    reasons: tuple[str, ...] = ()
    matched_rules: tuple[str, ...] = ()
    approvers: tuple[ApproverSet, ...] = ()
    quorum: int = 0
    pending_ttl_seconds: int = 0
    grant_ttl_seconds: int = 0
    pending_expires_at: str = ""


@dataclass(frozen=True)
class Event:
    """One stream entry. The free-text `reason` is deliberately not carried: it is never posted."""

    type: str
    approval_id: str
    from_state: str = ""
    to_state: str = ""
    actor: str = ""
    at: str = ""
    summary: Summary = Summary()


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; `true` is not a quorum.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _dicts(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def parse_summary(raw: str) -> Summary:
    """Parse the summary JSON, copying only allowlisted keys of the expected types."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return Summary()
    requirement = data.get("requirement")
    if not isinstance(requirement, dict):
        requirement = {}
    return Summary(
        requester_id=_str(data, "requester_id"),
        requester_kind=_str(data, "requester_kind"),
        action=_str(data, "action"),
        resource_kind=_str(data, "resource_kind"),
        resource_id=_str(data, "resource_id"),
        environment=_str(data, "environment"),
        fields=tuple(
            FieldRef(path=_str(f, "path"), tags=_strs(f, "tags"))
            for f in _dicts(data, "fields")
            if _str(f, "path")
        ),
        reasons=_strs(data, "reasons"),
        matched_rules=_strs(data, "matched_rules"),
        approvers=tuple(
            ApproverSet(roles=_strs(s, "roles"), groups=_strs(s, "groups"))
            for s in _dicts(requirement, "approvers")
        ),
        quorum=_int(requirement, "quorum"),
        pending_ttl_seconds=_int(requirement, "pending_ttl_seconds"),
        grant_ttl_seconds=_int(requirement, "grant_ttl_seconds"),
        pending_expires_at=_str(data, "pending_expires_at"),
    )


def parse_event(fields: Mapping[str, str]) -> Event:
    """Build an Event from a stream entry's fields; unknown fields are ignored."""
    return Event(
        type=fields.get("type", ""),
        approval_id=fields.get("approval_id", ""),
        from_state=fields.get("from", ""),
        to_state=fields.get("to", ""),
        actor=fields.get("actor", ""),
        at=fields.get("at", ""),
        summary=parse_summary(fields.get("summary", "")),
    )


def _coerce(event: Event | Mapping[str, str]) -> Event:
    return event if isinstance(event, Event) else parse_event(event)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")


def _plain(text: str, limit: int = MAX_TEXT) -> str:
    """One line of untrusted text: control and bidi characters neutralised, length capped."""
    # Line breaks would let a crafted id forge extra lines ("Approved by: admin"); direction
    # overrides and zero-width characters would let it display as something else.
    text = plain_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn treats as control: `&`, `<`, `>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str, limit: int = MAX_TEXT) -> str:
    return slack_escape(_plain(text, limit))


def _md_code(text: str) -> str:
    # mrkdwn has no escape for a backquote inside a code span; a lookalike keeps it closed.
    return "`" + _md(text).replace("`", "\u02cb") + "`"


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Never cut an entity in half: "&am" would render as literal junk.
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def _capped_lines(lines: Sequence[str], limit: int) -> str:
    """Join lines, ending with "…and N more" instead of overflowing `limit`."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        more = f"…and {len(lines) - i} more"
        if used + len(line) + 1 + len(more) + 1 > limit:
            out.append(more)
            break
        out.append(line)
        used += len(line) + 1
    return _fit("\n".join(out), limit)


def _parse_time(raw: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _utc(raw: str) -> str:
    when = _parse_time(raw)
    if when is None:
        return _plain(raw)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def approval_url(template: str, approval_id: str) -> str:
    """The review page for one approval; the id is percent-encoded into the template."""
    return template.replace("{approval_id}", urllib.parse.quote(approval_id, safe=""))


def cli_commands(approval_id: str) -> tuple[str, str]:
    """The approve and reject commands, shell-quoted, for when no web UI is configured."""
    quoted = shlex.quote(_plain(approval_id))
    return (
        f'signoff approvals approve {quoted} --reason "..."',
        f'signoff approvals reject {quoted} --reason "..."',
    )


def _who(s: Summary) -> str:
    if s.requester_kind:
        return f"{_plain(s.requester_id)} ({_plain(s.requester_kind)})"
    return _plain(s.requester_id)


def _resource(s: Summary) -> str:
    if s.resource_id:
        return f"{_plain(s.resource_kind)}/{_plain(s.resource_id)}"
    return _plain(s.resource_kind)


def _approver_set(a: ApproverSet) -> str:
    parts = []
    if a.roles:
        parts.append("roles " + ", ".join(_plain(r) for r in a.roles[:MAX_ITEMS]))
    if a.groups:
        parts.append("groups " + ", ".join(_plain(g) for g in a.groups[:MAX_ITEMS]))
    return "; ".join(parts) or "anyone allowed to approve"


def _field_line(f: FieldRef) -> tuple[str, str]:
    tags = ", ".join(_plain(t) for t in f.tags[:MAX_ITEMS])
    return _plain(f.path), tags


def _outcome(event: Event) -> str:
    state = FOLLOW_UPS.get(event.type) or _plain(event.to_state) or "updated"
    if state == "expired":
        return "expired without a decision"
    return f"{state} by {_plain(event.actor)}" if event.actor else state


def _headline(event: Event) -> str:
    s = event.summary
    line = f"Approval requested: {_who(s)} wants {_plain(s.action)} on {_resource(s)}"
    return f"{line} in {_plain(s.environment)}" if s.environment else line


def _follow_up_line(event: Event) -> str:
    s = event.summary
    return (
        f"Approval {_plain(event.approval_id)} {_outcome(event)}: "
        f"{_plain(s.action)} on {_resource(s)}"
    )


def _slack_time(raw: str) -> str:
    when = _parse_time(raw)
    if when is None:
        return _md(raw)
    # Slack shows the date token in each reader's own time zone; the UTC text is the fallback.
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{_utc(raw)}>"


def _slack_field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _fit(f"*{label}*\n{value}", SLACK_FIELD_LIMIT)}


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _fit(text, SLACK_SECTION_LIMIT)}}


def _slack_request(event: Event, approve_url_template: str | None) -> dict[str, Any]:
    s = event.summary
    facts = [
        _slack_field("Requester", slack_escape(_who(s))),
        _slack_field("Action", _md(s.action)),
        _slack_field("Resource", slack_escape(_resource(s))),
    ]
    if s.environment:
        facts.append(_slack_field("Environment", _md(s.environment)))
    if s.quorum:
        facts.append(_slack_field("Approvals needed", str(s.quorum)))
    if s.pending_expires_at:
        facts.append(_slack_field("Expires", _slack_time(s.pending_expires_at)))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            # plain_text is shown literally by Slack, so it is capped but not escaped.
            "text": {
                "type": "plain_text",
                "text": _plain(f"Approval requested: {s.action}", SLACK_HEADER_LIMIT),
            },
        },
        {"type": "section", "fields": facts},
    ]
    if s.approvers:
        lines = [f"• {slack_escape(_approver_set(a))}" for a in s.approvers]
        blocks.append(
            _slack_section(_capped_lines(["*Who may approve*", *lines], SLACK_SECTION_LIMIT))
        )
    if s.reasons or s.matched_rules:
        lines = ["*Why it needs sign-off*", *(f"• {_md(r)}" for r in s.reasons)]
        if s.matched_rules:
            rules = ", ".join(_md_code(r) for r in s.matched_rules[:MAX_ITEMS])
            lines.append(f"_Rules:_ {rules}")
        blocks.append(_slack_section(_capped_lines(lines, SLACK_SECTION_LIMIT)))
    if s.fields:
        lines = ["*Fields touched* (values withheld)"]
        for f in s.fields:
            path, tags = _field_line(f)
            lines.append(f"• {_md_code(path)}" + (f" ({slack_escape(tags)})" if tags else ""))
        blocks.append(_slack_section(_capped_lines(lines, SLACK_SECTION_LIMIT)))
    if approve_url_template:
        url = approval_url(approve_url_template, event.approval_id)
        # "|" ends the URL part of a Slack link; it is percent-encoded to keep the link whole.
        target = slack_escape(url).replace("|", "%7C")
        blocks.append(_slack_section(f"*<{target}|Review, approve or reject in signoff>*"))
    else:
        approve, reject = cli_commands(event.approval_id)
        blocks.append(
            _slack_section(
                f"*To decide*, run one of:\n`{slack_escape(approve)}`\n`{slack_escape(reject)}`"
            )
        )
    context = [f"Approval {_md_code(event.approval_id)}"]
    if s.grant_ttl_seconds:
        context.append(f"grant valid for {_duration(s.grant_ttl_seconds)} once approved")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": _fit(slack_escape(_headline(event)), SLACK_SECTION_LIMIT), "blocks": blocks}


def slack_message(
    event: Event | Mapping[str, str], *, approve_url_template: str | None = None
) -> dict[str, Any]:
    """Slack incoming-webhook JSON: the request for `approval.created`, else a follow-up line."""
    ev = _coerce(event)
    if ev.type == CREATED:
        return _slack_request(ev, approve_url_template)
    line = slack_escape(_follow_up_line(ev))
    return {"text": line, "blocks": [_slack_section(line)]}


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _rich(*runs: dict[str, Any], **props: Any) -> dict[str, Any]:
    # RichTextBlock/TextRun text is never parsed as markdown, unlike TextBlock and FactSet;
    # that is what keeps user-controlled strings plain in Teams without escaping them.
    return {"type": "RichTextBlock", "inlines": list(runs), **props}


def _fact(label: str, value: str) -> dict[str, Any]:
    return _rich(_run(f"{label}: ", weight="Bolder"), _run(value))


def _heading(text: str) -> dict[str, Any]:
    return _rich(_run(text, weight="Bolder"), spacing="Medium")


def _bullets(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(items) <= MAX_ITEMS:
        return list(items)
    return [*items[:MAX_ITEMS], _rich(_run(f"…and {len(items) - MAX_ITEMS} more", isSubtle=True))]


def _card(
    body: list[dict[str, Any]], fallback: str, actions: list[dict[str, Any]]
) -> dict[str, Any]:
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "fallbackText": fallback,
        "msteams": {"width": "Full"},
        "body": body,
    }
    if actions:
        content["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": content,
            }
        ],
    }


def _teams_request(event: Event, approve_url_template: str | None) -> dict[str, Any]:
    s = event.summary
    body: list[dict[str, Any]] = [
        _rich(_run(f"Approval requested: {_plain(s.action)}", weight="Bolder", size="Medium")),
        _fact("Requester", _who(s)),
        _fact("Action", _plain(s.action)),
        _fact("Resource", _resource(s)),
    ]
    if s.environment:
        body.append(_fact("Environment", _plain(s.environment)))
    if s.quorum:
        body.append(_fact("Approvals needed", str(s.quorum)))
    if s.pending_expires_at:
        body.append(_fact("Expires", _utc(s.pending_expires_at)))
    if s.approvers:
        body.append(_heading("Who may approve"))
        body += _bullets([_rich(_run(f"• {_approver_set(a)}")) for a in s.approvers])
    if s.reasons:
        body.append(_heading("Why it needs sign-off"))
        body += _bullets([_rich(_run(f"• {_plain(r)}")) for r in s.reasons])
    if s.matched_rules:
        rules = ", ".join(_plain(r) for r in s.matched_rules[:MAX_ITEMS])
        body.append(_rich(_run("Rules: ", isSubtle=True), _run(rules, fontType="Monospace")))
    if s.fields:
        body.append(_heading("Fields touched (values withheld)"))
        rows = []
        for f in s.fields:
            path, tags = _field_line(f)
            runs = [_run("• "), _run(path, fontType="Monospace")]
            if tags:
                runs.append(_run(f" ({tags})"))
            rows.append(_rich(*runs))
        body += _bullets(rows)
    actions: list[dict[str, Any]] = []
    if approve_url_template:
        actions.append(
            {
                "type": "Action.OpenUrl",
                "title": "Review, approve or reject",
                "url": approval_url(approve_url_template, event.approval_id),
            }
        )
    else:
        body.append(_heading("To decide, run one of:"))
        body += [_rich(_run(cmd, fontType="Monospace")) for cmd in cli_commands(event.approval_id)]
    footer = f"Approval {_plain(event.approval_id)}"
    if s.grant_ttl_seconds:
        footer += f" · grant valid for {_duration(s.grant_ttl_seconds)} once approved"
    body.append(_rich(_run(footer, isSubtle=True, size="Small"), spacing="Medium"))
    return _card(body, _headline(event), actions)


def teams_message(
    event: Event | Mapping[str, str], *, approve_url_template: str | None = None
) -> dict[str, Any]:
    """A Teams webhook message carrying an Adaptive Card 1.4: the request, or a follow-up."""
    ev = _coerce(event)
    if ev.type == CREATED:
        return _teams_request(ev, approve_url_template)
    line = _follow_up_line(ev)
    return _card([_rich(_run(line))], line, [])


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------

Renderer = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class _Target:
    name: str
    url: str = field(repr=False)
    render: Renderer = field(repr=False)

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


def _describe(exc: BaseException) -> str:
    # Exception texts can embed the URL; the class and errno text are enough to diagnose.
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    detail = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[tuple[str, Mapping[str, str] | None]]:
    """Normalise XREADGROUP/XAUTOCLAIM entries (RESP2 lists or RESP3 maps, str or bytes)."""
    out: list[tuple[str, Mapping[str, str] | None]] = []
    for item in raw or ():
        entry_id, fields = item[0], item[1]
        if fields is None:
            out.append((_decode(entry_id), None))
        else:
            out.append((_decode(entry_id), {_decode(k): _decode(v) for k, v in fields.items()}))
    return out


def _stream_entries(response: Any) -> list[tuple[str, Mapping[str, str] | None]]:
    if isinstance(response, dict):
        out: list[tuple[str, Mapping[str, str] | None]] = []
        for value in response.values():
            # RESP3 wraps each stream's entries in one more list.
            entries = value[0] if value and isinstance(value[0], list) else value
            out += _entries(entries)
        return out
    return [entry for _stream, entries in response or () for entry in _entries(entries)]


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
        if not targets:
            raise ConfigError(
                "no webhook configured: set SIGNOFF_SLACK_WEBHOOK_URL and/or "
                "SIGNOFF_TEAMS_WEBHOOK_URL"
            )
        self.targets: tuple[_Target, ...] = tuple(targets)
        self._owns_client = client is None
        self._redis = client or redis.Redis.from_url(config.redis_url, decode_responses=True)
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._stop = threading.Event()
        self._claim_cursor = "0-0"
        self._group_ready = False
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
        try:
            self._redis.xgroup_create(self.config.stream, self.config.group, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    def _claim(self) -> list[tuple[str, Mapping[str, str] | None]]:
        cfg = self.config
        response: list[Any] = self._redis.xautoclaim(
            cfg.stream,
            cfg.group,
            cfg.consumer,
            cfg.claim_min_idle_ms,
            start_id=self._claim_cursor,
            count=cfg.batch_size,
        )
        # The cursor walks the pending list over successive calls and wraps to 0-0 at the end.
        self._claim_cursor = _decode(response[0])
        if len(response) > 2 and response[2]:
            # Redis 7 drops entries trimmed from the stream from the pending list itself.
            log.warning("%d pending event(s) were trimmed before delivery", len(response[2]))
        claimed = _entries(response[1])
        if claimed:
            log.info("took over %d event(s) left pending by another consumer", len(claimed))
        return claimed

    def _read(self, block_ms: int) -> list[tuple[str, Mapping[str, str] | None]]:
        cfg = self.config
        response = self._redis.xreadgroup(
            cfg.group,
            cfg.consumer,
            {cfg.stream: ">"},
            count=cfg.batch_size,
            # BLOCK 0 means "forever" to Redis; a non-positive wait means "do not block" here.
            block=block_ms if block_ms > 0 else None,
        )
        return _stream_entries(response)

    def _ack(self, entry_id: str) -> None:
        self._redis.xack(self.config.stream, self.config.group, entry_id)

    def _touch(self, entry_ids: Sequence[str]) -> None:
        # Claiming our own entries resets their idle time, so a peer does not take over
        # entries we are still working on (that would post them twice).
        self._touched = time.monotonic()
        if not entry_ids:
            return
        cfg = self.config
        try:
            self._redis.xclaim(cfg.stream, cfg.group, cfg.consumer, 0, list(entry_ids), justid=True)
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
            if not self._group_ready:
                self.ensure_group()
            entries = self._claim()
            if not self._stop.is_set():
                # Claimed work is waiting: do not sit in a blocking read before doing it.
                entries += self._read(0 if entries else block_ms)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            # The stream or group was deleted under us. Recreate it now, not on the next call:
            # entries written in between would be behind its "$" start and never seen.
            log.warning("consumer group %s vanished; recreating it", self.config.group)
            self._claim_cursor = "0-0"
            self.ensure_group()
            return 0
        return self._handle(entries)

    def _handle(self, entries: list[tuple[str, Mapping[str, str] | None]]) -> int:
        acked = 0
        self._touched = time.monotonic()
        for index, (entry_id, fields) in enumerate(entries):
            if self._stop.is_set():
                break
            # Slow webhooks can keep the rest of a batch waiting past the takeover idle time.
            self._keep([eid for eid, _ in entries[index:]])
            if fields is None:
                self._ack(entry_id)  # trimmed from the stream: nothing left to deliver
            else:
                later = [eid for eid, _ in entries[index + 1 :]]
                if not self._process(entry_id, fields, later):
                    break  # stopped mid-retry: leave it and the rest pending
                self._ack(entry_id)
            acked += 1
        return acked

    def _process(self, entry_id: str, fields: Mapping[str, str], later: Sequence[str]) -> bool:
        """Post one entry; False only when a stop interrupted it before it was settled."""
        kind = fields.get("type", "")
        approval_id = fields.get("approval_id", "")
        if kind != CREATED and not (self.config.follow_ups and kind in FOLLOW_UPS):
            log.debug("event %s (%s) is not posted", entry_id, _plain(kind, 40))
            return True
        if not approval_id:
            log.warning("dropped event %s (%s): it has no approval_id", entry_id, _plain(kind, 40))
            return True
        event = parse_event(fields)
        try:
            bodies = [
                (
                    t,
                    self._encode(
                        t.render(event, approve_url_template=self.config.approve_url_template)
                    ),
                )
                for t in self.targets
            ]
        except Exception as exc:
            # A poison entry must not wedge the stream. Only the class is logged: an
            # exception message could quote the event's contents.
            log.error(
                "dropped event %s (%s): rendering failed (%s)",
                entry_id,
                _plain(kind, 40),
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
        what = f"event {entry_id} ({event.type}, approval {_plain(event.approval_id, 80)})"
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

    def _post(self, target: _Target, body: bytes) -> _Outcome:
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
            return _Outcome(False, detail=_describe(exc))

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
                self._group_ready = False
                stop.wait(delay)
