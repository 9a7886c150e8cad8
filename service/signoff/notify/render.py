"""Rendering an event as a Slack Block Kit message or a Teams Adaptive Card, all text made plain."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from signoff.notify.events import (
    CREATED,
    FOLLOW_UPS,
    ApproverSet,
    Event,
    FieldRef,
    Summary,
    coerce_event,
)
from signoff.safetext import plain_line

# Caps keep every message inside Slack's block limits and Teams' 28 KB card limit.
MAX_TEXT: Final = 200
MAX_ITEMS: Final = 20
SLACK_HEADER_LIMIT: Final = 150
SLACK_FIELD_LIMIT: Final = 2000
SLACK_SECTION_LIMIT: Final = 3000

_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """One line of untrusted text: control and bidi characters neutralised, length capped."""
    # Line breaks would let a crafted id forge extra lines ("Approved by: admin"); direction
    # overrides and zero-width characters would let it display as something else.
    text = plain_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn treats as control: `&`, `<`, `>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str, limit: int = MAX_TEXT) -> str:
    return slack_escape(plain(text, limit))


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
        return plain(raw)
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
    quoted = shlex.quote(plain(approval_id))
    return (
        f'signoff approvals approve {quoted} --reason "..."',
        f'signoff approvals reject {quoted} --reason "..."',
    )


def _who(s: Summary) -> str:
    if s.requester_kind:
        return f"{plain(s.requester_id)} ({plain(s.requester_kind)})"
    return plain(s.requester_id)


def _resource(s: Summary) -> str:
    if s.resource_id:
        return f"{plain(s.resource_kind)}/{plain(s.resource_id)}"
    return plain(s.resource_kind)


def _approver_set(a: ApproverSet) -> str:
    parts = []
    if a.roles:
        parts.append("roles " + ", ".join(plain(r) for r in a.roles[:MAX_ITEMS]))
    if a.groups:
        parts.append("groups " + ", ".join(plain(g) for g in a.groups[:MAX_ITEMS]))
    return "; ".join(parts) or "anyone allowed to approve"


def _label_lines(s: Summary) -> list[str]:
    """One plain line per label of the asking rules, e.g. "compliance: soc2, gdpr"."""
    return [
        f"{plain(name)}: " + ", ".join(plain(v) for v in values[:MAX_ITEMS])
        for name, values in s.labels[:MAX_ITEMS]
    ]


def _field_line(f: FieldRef) -> tuple[str, str]:
    tags = ", ".join(plain(t) for t in f.tags[:MAX_ITEMS])
    return plain(f.path), tags


def _outcome(event: Event) -> str:
    state = FOLLOW_UPS.get(event.type) or plain(event.to_state) or "updated"
    if state == "expired":
        return "expired without a decision"
    return f"{state} by {plain(event.actor)}" if event.actor else state


def _headline(event: Event) -> str:
    s = event.summary
    line = f"Approval requested: {_who(s)} wants {plain(s.action)} on {_resource(s)}"
    return f"{line} in {plain(s.environment)}" if s.environment else line


def _follow_up_line(event: Event) -> str:
    s = event.summary
    return (
        f"Approval {plain(event.approval_id)} {_outcome(event)}: "
        f"{plain(s.action)} on {_resource(s)}"
    )


def _message(
    event: Event | Mapping[str, str],
    approve_url_template: str | None,
    request: Callable[[Event, str | None], dict[str, Any]],
    follow_up: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """The whole request for `approval.created`; any other event as its one-line follow-up."""
    ev = coerce_event(event)
    if ev.type == CREATED:
        return request(ev, approve_url_template)
    return follow_up(_follow_up_line(ev))


def _as_is(text: str) -> str:
    return text


def _facts(
    s: Summary, escape: Callable[[str], str], when: Callable[[str], str]
) -> list[tuple[str, str]]:
    """The request's labelled facts: one list for both formats, each escaping as it must."""
    facts = [
        ("Requester", escape(_who(s))),
        ("Action", escape(plain(s.action))),
        ("Resource", escape(_resource(s))),
    ]
    if s.environment:
        facts.append(("Environment", escape(plain(s.environment))))
    if s.quorum:
        facts.append(("Approvals needed", str(s.quorum)))
    if s.pending_expires_at:
        facts.append(("Expires", when(s.pending_expires_at)))
    return facts


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
    facts = [_slack_field(label, value) for label, value in _facts(s, slack_escape, _slack_time)]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            # plain_text is shown literally by Slack, so it is capped but not escaped.
            "text": {
                "type": "plain_text",
                "text": plain(f"Approval requested: {s.action}", SLACK_HEADER_LIMIT),
            },
        },
        {"type": "section", "fields": facts},
    ]
    blocks += [_slack_section(text) for text in _slack_request_sections(s)]
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


def _slack_request_sections(s: Summary) -> list[str]:
    """The mrkdwn of the request's sections (who may approve, why, labels, fields), escaped and
    capped: one text for the webhook message and the app message alike."""
    sections: list[list[str]] = []
    if s.approvers:
        sections.append(
            ["*Who may approve*", *(f"• {slack_escape(_approver_set(a))}" for a in s.approvers)]
        )
    if s.reasons or s.matched_rules:
        lines = ["*Why it needs sign-off*", *(f"• {_md(r)}" for r in s.reasons)]
        if s.matched_rules:
            lines.append("_Rules:_ " + ", ".join(_md_code(r) for r in s.matched_rules[:MAX_ITEMS]))
        sections.append(lines)
    if s.labels:
        sections.append(["*Labels*", *(f"• {slack_escape(line)}" for line in _label_lines(s))])
    if s.fields:
        lines = ["*Fields touched* (values withheld)"]
        for f in s.fields:
            path, tags = _field_line(f)
            lines.append(f"• {_md_code(path)}" + (f" ({slack_escape(tags)})" if tags else ""))
        sections.append(lines)
    return [_capped_lines(lines, SLACK_SECTION_LIMIT) for lines in sections]


def slack_message(
    event: Event | Mapping[str, str], *, approve_url_template: str | None = None
) -> dict[str, Any]:
    """Slack incoming-webhook JSON: the request for `approval.created`, else a follow-up line."""
    return _message(event, approve_url_template, _slack_request, _slack_follow_up)


def _slack_follow_up(line: str) -> dict[str, Any]:
    escaped = slack_escape(line)
    return {"text": escaped, "blocks": [_slack_section(escaped)]}


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
        _rich(_run(f"Approval requested: {plain(s.action)}", weight="Bolder", size="Medium")),
        # TextRuns are never parsed as markup, so the text needs no escaping.
        *(_fact(label, value) for label, value in _facts(s, _as_is, _utc)),
    ]
    if s.approvers:
        body.append(_heading("Who may approve"))
        body += _bullets([_rich(_run(f"• {_approver_set(a)}")) for a in s.approvers])
    if s.reasons:
        body.append(_heading("Why it needs sign-off"))
        body += _bullets([_rich(_run(f"• {plain(r)}")) for r in s.reasons])
    if s.matched_rules:
        rules = ", ".join(plain(r) for r in s.matched_rules[:MAX_ITEMS])
        body.append(_rich(_run("Rules: ", isSubtle=True), _run(rules, fontType="Monospace")))
    if s.labels:
        body.append(_heading("Labels"))
        body += [_rich(_run(f"• {line}")) for line in _label_lines(s)]
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
    footer = f"Approval {plain(event.approval_id)}"
    if s.grant_ttl_seconds:
        footer += f" · grant valid for {_duration(s.grant_ttl_seconds)} once approved"
    body.append(_rich(_run(footer, isSubtle=True, size="Small"), spacing="Medium"))
    return _card(body, _headline(event), actions)


def teams_message(
    event: Event | Mapping[str, str], *, approve_url_template: str | None = None
) -> dict[str, Any]:
    """A Teams webhook message carrying an Adaptive Card 1.4: the request, or a follow-up."""
    return _message(event, approve_url_template, _teams_request, _teams_follow_up)


def _teams_follow_up(line: str) -> dict[str, Any]:
    return _card([_rich(_run(line))], line, [])


# --- Slack app messages (bot token): buttons, the reason modal, updates in place -----------

APPROVE_ACTION: Final = "signoff_approve"
REJECT_ACTION: Final = "signoff_reject"
REASON_CALLBACK: Final = "signoff_reason"
REASON_BLOCK: Final = "reason"
REASON_INPUT: Final = "reason_input"
# The reason a one-click Approve records: Approvals.vote asks every vote for one.
CLICK_REASON: Final = "approved in Slack"
_STATE_LINES: Final[Mapping[str, str]] = {
    "pending": ":hourglass_flowing_sand: Waiting for approval",
    "approved": ":white_check_mark: Approved",
    "rejected": ":no_entry: Rejected",
    "expired": ":alarm_clock: Expired without a decision",
    "cancelled": ":heavy_multiplication_x: Cancelled by the requester",
    "consumed": ":white_check_mark: Approved and used",
}


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=_fit(text, SLACK_SECTION_LIMIT))


def slack_app_message(
    approval_id: str,
    summary: Summary,
    *,
    state: str = "pending",
    voters: Sequence[tuple[str, bool]] = (),
    approve_url_template: str | None = None,
) -> dict[str, Any]:
    """The approval as a Slack app message (chat.postMessage / chat.update): the request,
    the votes so far, its state, and Approve / Reject buttons while it is pending.

    `voters` are (identity, approved) pairs; vote reasons are never shown (they are free
    text a reviewer typed, kept for the audit trail only)."""
    s = summary
    facts = [
        _mrkdwn(f"*{label}*\n{value}") for label, value in _facts(s, slack_escape, _slack_time)
    ]
    blocks: list[Block] = [
        # plain_text is shown literally by Slack, so it is capped but not escaped.
        HeaderBlock(text=plain(f"Approval requested: {s.action}", SLACK_HEADER_LIMIT)),
        SectionBlock(fields=facts[:10]),
    ]
    blocks += [SectionBlock(text=_mrkdwn(text)) for text in _slack_request_sections(s)]
    if voters:
        lines = ["*Votes*"]
        for who, approved in voters[:MAX_ITEMS]:
            lines.append(f"• {'approved' if approved else 'rejected'} by {_md(who)}")
        if s.quorum:
            approvals = sum(1 for _, approved in voters if approved)
            lines.append(f"_{approvals} of {s.quorum} approvals_")
        blocks.append(SectionBlock(text=_mrkdwn(_capped_lines(lines, SLACK_SECTION_LIMIT))))
    status = _STATE_LINES.get(state, plain(state))
    blocks.append(SectionBlock(text=_mrkdwn(f"*{status}*")))
    buttons: list[ButtonElement] = []
    if state == "pending":
        buttons += [
            ButtonElement(
                text="Approve", action_id=APPROVE_ACTION, value=approval_id, style="primary"
            ),
            ButtonElement(
                text="Reject", action_id=REJECT_ACTION, value=approval_id, style="danger"
            ),
        ]
    if approve_url_template:
        buttons.append(
            ButtonElement(
                text="Open in signoff",
                action_id="signoff_open",
                url=approval_url(approve_url_template, approval_id),
            )
        )
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    context = f"Approval {_md_code(approval_id)}"
    if s.grant_ttl_seconds:
        context += f" · grant valid for {_duration(s.grant_ttl_seconds)} once approved"
    blocks.append(ContextBlock(elements=[_mrkdwn(context)]))
    headline = _headline(Event(CREATED, approval_id, summary=s))
    return {
        "text": _fit(slack_escape(f"{headline} ({state})"), SLACK_SECTION_LIMIT),
        "blocks": [b.to_dict() for b in blocks],
    }


def slack_outcome_line(approval_id: str, summary: Summary, state: str, actor: str) -> str:
    """The outcome posted in the approval message's thread, mrkdwn-escaped."""
    event = Event(f"approval.{state}", approval_id, to_state=state, actor=actor, summary=summary)
    return slack_escape(_follow_up_line(event))


def slack_reason_modal(approval_id: str, *, approve: bool, metadata: str) -> View:
    """The modal asking a reviewer why: always for Reject, for Approve where asked to.
    `metadata` rides in private_metadata (Slack returns it with the submission)."""
    verb = "Approve" if approve else "Reject"
    return View(
        type="modal",
        callback_id=REASON_CALLBACK,
        title=f"{verb} request",
        submit=verb,
        close="Cancel",
        private_metadata=metadata,
        blocks=[
            SectionBlock(text=_mrkdwn(f"{verb} approval {_md_code(approval_id)}")),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason",
                element=PlainTextInputElement(
                    action_id=REASON_INPUT, multiline=True, max_length=2000
                ),
            ),
        ],
    )
