"""An in-process signoff assembled as `signoff serve` does, canary requests, and output capture."""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.audit import STREAMS, ApprovalEventAuditor, AuditConfig, AuditLog, audit_key
from signoff.engine.evaluator import Engine
from signoff.notify.config import NotifierConfig
from signoff.notify.delivery import Notifier
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.server.approvals import ApprovalService
from signoff.server.approvals import Authenticator as CallerAuthenticator
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import AuditSelection, Views
from tests.approvals.support import bearer
from tests.conftest import fixed_clock
from tests.notifier.support import SLACK_PATH, TEAMS_PATH, Webhooks
from tests.observability.harness import Recorded
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, TIMEOUT, drop_prefix, struct

# Allowlisted for audit records on purpose, and never seeded with a canary: the audit view must
# keep what it is told to keep and nothing more.
AUDIT_ATTRIBUTES = ("context.frozen", "principal.clearance")
AUDIT_PAYLOAD_KEYS = ("rows",)

SCHEMA = """
schema:
  principal:
    tenant: string
    owner: string
    clearance: int
    badges: list<string>
    labels: map<string,string>
    profile: dyn
  resource: {tenant: string, label: string, steward: string}
  context: {ticket: string, frozen: bool, origin: string, extra: dyn}
  payload:
    target: string
    rows: int
    note: string
    options: dyn
    customers: dyn
    vault_token: string
    secrets: dyn
"""

POLICIES = """
policies:
  - id: ledger
    resources: [ledger]
    actions: [read, export]
    rules:
      - id: allow-staff
        effect: allow
        roles: [staff]
        when: principal.attr.tenant == resource.attr.tenant
        reason: staff work with their own tenant's ledgers

      - id: deny-frozen
        effect: deny
        when: has(context.attr.frozen) && context.attr.frozen
        reason: changes are frozen

      - id: mask-personal
        effect: mask
        roles: [staff]
        when: resource.tags.exists(t, t.startsWith('pii.') || t.startsWith('pci.') || t.startsWith('secret.'))
        reason: personal data and secrets are masked
        mask:
          - tags: [pii.email]
            operator: email
          - tags: ["pci.*"]
            operator: redact
          - tags: [pii.id]
            operator: hash
          - tags: ["secret.*"]
            operator: nullify

      - id: prod-needs-review
        effect: require_approval
        roles: [staff]
        when: context.environment == 'prod'
        reason: prod needs a reviewer
        approval:
          approvers: {roles: [reviewer]}
          quorum: 1
          requester_identities: [principal.attr.owner]
          pending_ttl: 1h
          grant_ttl: 10m

  - id: ledger-purge
    resources: [ledger]
    actions: [purge]
    rules:
      - id: allow-staff
        effect: allow
        roles: [staff]
        reason: staff purge ledgers

      - id: deny-labelled
        effect: deny
        # Looks a caller's map up by another caller value: the lookup fails, and cel-cpp's
        # text for that quotes the missing key, i.e. a canary.
        when: principal.attr.labels[resource.attr.label] == 'blocked'
        reason: labelled principals may not purge
"""

BOT = "agent:ledger-bot"
REVIEWER = "rita@acme.io"


def write_bundle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.yaml").write_text(SCHEMA.lstrip("\n"), encoding="utf-8")
    (root / "policies.yaml").write_text(POLICIES.lstrip("\n"), encoding="utf-8")
    return root


# --- canaries ------------------------------------------------------------------------------


class Canaries:
    """Unique strings per run, each naming where it was planted; any sighting is a leak.

    `masked` ones sit under a path the masking plan covers, `open` ones in payload values no
    plan covers (reviewers see those by design), `attr` ones in attribute values.
    """

    def __init__(self) -> None:
        self.marker = f"CANARY-{uuid.uuid4().hex[:12]}"
        self._found = re.compile(re.escape(self.marker) + r"-[A-Za-z0-9_.\-]+")
        self.identity = self._make("attr", "principal.owner")

    def _make(self, kind: str, place: str) -> str:
        return f"{self.marker}-{kind}-{place}"

    def attr(self, place: str) -> str:
        return self._make("attr", place)

    def masked(self, place: str) -> str:
        return self._make("masked", place)

    def open(self, place: str) -> str:
        return self._make("open", place)

    def found(self, text: str, *, kind: str = "") -> list[str]:
        """Canaries in `text` (only of `kind` when given); bare markers count too."""
        if self.marker not in text:
            return []
        hits = self._found.findall(text) or [self.marker]
        return sorted({h for h in hits if not kind or h.startswith(f"{self.marker}-{kind}-")})


def principal(c: Canaries) -> pb.Principal:
    """An agent whose owner answers for it; a canary in every declared attribute value."""
    return pb.Principal(
        id=BOT,
        kind=pb.PRINCIPAL_KIND_AGENT,
        roles=["staff"],
        attributes=struct(
            {
                "tenant": c.attr("tenant"),
                "owner": c.identity,
                "clearance": 5,
                "badges": [c.attr("principal.badges.0"), c.attr("principal.badges.1")],
                "labels": {c.attr("principal.labels.key"): c.attr("principal.labels.value")},
                "profile": {
                    "nick": c.attr("principal.profile.nick"),
                    "deep": {"list": [c.attr("principal.profile.deep.list.0")]},
                },
            }
        ),
    )


TAGGED_FIELDS = (
    pb.Field(path="customers.*.id", tags=["pii.id"]),
    pb.Field(path="customers.*.email", tags=["pii.email"]),
    pb.Field(path="customers.*.card", tags=["pci.pan"]),
    pb.Field(path="customers.*.country"),
    pb.Field(path="vault_token", tags=["secret.token"]),
    pb.Field(path="secrets", tags=["secret.bundle"]),
)


def resource(c: Canaries, *, tagged: bool = True) -> pb.Resource:
    return pb.Resource(
        kind="ledger",
        id="ledger-7",
        attributes=struct(
            {
                "tenant": c.attr("tenant"),
                "label": c.attr("resource.label"),
                "steward": c.attr("resource.steward"),
            }
        ),
        fields=TAGGED_FIELDS if tagged else [pb.Field(path="customers.*.country")],
    )


def payload(c: Canaries, tag: str) -> dict[str, Any]:
    """Values under every masked path (top-level and nested) and under unmasked paths."""
    return {
        "target": c.open(f"{tag}.target"),
        "rows": 2,
        "note": c.open(f"{tag}.note"),
        "options": {
            "format": c.open(f"{tag}.options.format"),
            "nested": {"deeper": [c.open(f"{tag}.options.nested.deeper.0")]},
        },
        "vault_token": c.masked(f"{tag}.vault_token"),
        "secrets": {
            "token": c.masked(f"{tag}.secrets.token"),
            "nested": {"key": c.masked(f"{tag}.secrets.nested.key")},
        },
        "customers": [
            {
                "id": c.masked(f"{tag}.customers.{i}.id"),
                "email": c.masked(f"{tag}.customers.{i}.email") + "@example.com",
                "card": {
                    "number": c.masked(f"{tag}.customers.{i}.card.number"),
                    "cvv": c.masked(f"{tag}.customers.{i}.card.cvv"),
                },
                "country": c.open(f"{tag}.customers.{i}.country"),
                "profile": {"nickname": c.open(f"{tag}.customers.{i}.profile.nickname")},
            }
            for i in range(2)
        ],
    }


def request(
    c: Canaries,
    tag: str,
    *,
    action: str = "read",
    environment: str = "dev",
    tagged: bool = True,
    frozen: bool = False,
) -> pb.CheckRequest:
    """A request with a canary in every attribute value and payload value it can carry."""
    return pb.CheckRequest(
        principal=principal(c),
        action=action,
        resource=resource(c, tagged=tagged),
        context=pb.Context(
            environment=environment,
            attributes=struct(
                {
                    "ticket": c.attr("context.ticket"),
                    "frozen": frozen,
                    "origin": c.attr("context.origin"),
                    "extra": {"deep": {"value": c.attr("context.extra.deep.value")}},
                }
            ),
        ),
        payload=struct(payload(c, tag)),
    )


def allow(c: Canaries, tag: str = "allow") -> pb.CheckRequest:
    return request(c, tag, tagged=False)


def mask(c: Canaries, tag: str = "mask") -> pb.CheckRequest:
    return request(c, tag)


def deny(c: Canaries, tag: str = "deny") -> pb.CheckRequest:
    return request(c, tag, frozen=True)


def evaluation_error(c: Canaries, tag: str = "purge") -> pb.CheckRequest:
    return request(c, tag, action="purge")


def needs_approval(c: Canaries, tag: str) -> pb.CheckRequest:
    return request(c, tag, action="export", environment="prod")


def bad_requests(c: Canaries) -> dict[str, pb.CheckRequest]:
    """Requests refused as invalid, each still carrying canaries everywhere else."""
    out: dict[str, pb.CheckRequest] = {}

    def bad(name: str) -> pb.CheckRequest:
        out[name] = request(c, f"bad-{name}")
        return out[name]

    bad("missing-kind").principal.kind = pb.PRINCIPAL_KIND_UNSPECIFIED
    bad("empty-role").principal.roles.append("")
    bad("undeclared-principal-attr").principal.attributes["shoe_size"] = c.attr("shoe_size")
    bad("undeclared-context-attr").context.attributes["colour"] = c.attr("colour")
    bad("mistyped-int").principal.attributes["clearance"] = c.attr("mistyped.clearance")
    bad("mistyped-bool").context.attributes["frozen"] = c.attr("mistyped.frozen")
    bad("mistyped-list-item").principal.attributes["badges"] = [c.attr("mistyped.badge"), 7]
    bad("mistyped-map-value").principal.attributes["labels"] = {c.attr("mistyped.labels.key"): 7}
    bad("mistyped-payload").payload["rows"] = c.masked("mistyped.rows")
    return out


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """One server as `signoff serve` wires it, with stubs and its Redis-side parts in reach."""

    running: app.Running
    store: ApprovalStore
    audit: AuditLog
    auditor: ApprovalEventAuditor
    channel: grpc.Channel

    @property
    def prefix(self) -> str:
        return self.store.prefix

    @property
    def decisions(self) -> pb_grpc.DecisionServiceStub:
        return pb_grpc.DecisionServiceStub(self.channel)

    @property
    def approvals(self) -> apb_grpc.ApprovalServiceStub:
        return apb_grpc.ApprovalServiceStub(self.channel)

    def check(self, req: pb.CheckRequest, approval_id: str = "") -> pb.CheckResponse:
        if approval_id:
            copy = pb.CheckRequest()
            copy.CopyFrom(req)
            copy.approval_id = approval_id
            req = copy
        return self.decisions.Check(req, timeout=TIMEOUT)

    def batch(self, items: Sequence[pb.CheckRequest]) -> pb.CheckBatchResponse:
        return self.decisions.CheckBatch(pb.CheckBatchRequest(items=items), timeout=TIMEOUT)

    def approve(self, approval_id: str, token: str) -> apb.ApproveResponse:
        msg = apb.ApproveRequest(approval_id=approval_id, reason="checked the ticket")
        return self.approvals.Approve(msg, metadata=bearer(token), timeout=TIMEOUT)

    def reject(self, approval_id: str, token: str) -> apb.RejectResponse:
        msg = apb.RejectRequest(approval_id=approval_id, reason="not this quarter")
        return self.approvals.Reject(msg, metadata=bearer(token), timeout=TIMEOUT)

    def cancel(self, approval_id: str, token: str) -> apb.CancelResponse:
        msg = apb.CancelRequest(approval_id=approval_id, reason="no longer needed")
        return self.approvals.Cancel(msg, metadata=bearer(token), timeout=TIMEOUT)

    def get(self, approval_id: str, token: str) -> apb.GetApprovalResponse:
        msg = apb.GetApprovalRequest(approval_id=approval_id)
        return self.approvals.GetApproval(msg, metadata=bearer(token), timeout=TIMEOUT)

    def listed(self, token: str) -> apb.ListApprovalsResponse:
        msg = apb.ListApprovalsRequest(page_size=50)
        return self.approvals.ListApprovals(msg, metadata=bearer(token), timeout=TIMEOUT)

    def drain_audit(self) -> None:
        """Every approval event audited and every queued record appended."""
        self.auditor.stop()
        while self.auditor.run_once():
            pass
        assert self.audit.flush(10.0), "the audit log did not flush"

    def export_audit(self) -> dict[str, str]:
        out = {}
        for stream in STREAMS:
            buffer = io.StringIO()
            self.audit.export(stream, None, None, buffer)
            out[stream] = buffer.getvalue()
        return out

    def event_streams(self) -> dict[str, str]:
        """Every approval event stream under the prefix (the global one and each approval's)."""
        r = self.store.redis
        out = {}
        for key in sorted(str(k) for k in r.scan_iter(match=f"{self.prefix}*", count=1000)):
            if key.endswith("events") and r.type(key) == "stream":
                entries: Any = r.xrange(key)
                out[key] = "\n".join(repr(fields) for _id, fields in entries)
        return out


@contextmanager
def assemble(
    rules: Path,
    *,
    authenticator: CallerAuthenticator,
    recorded: Recorded,
    backend: str = "cel-expr",
    redis_url: str = REDIS_URL,
) -> Iterator[Stack]:
    """Build and start what `signoff serve` builds (cli._serve_with), under a fresh prefix."""
    telemetry = recorded.telemetry
    bundle = load_bundle(rules, backend=backend)
    telemetry.record_policy_load("ok")
    prefix = f"signoff:test:leaks:{uuid.uuid4().hex}:"
    store = ApprovalStore(redis_url, prefix=prefix, timeout=0.5)
    views = Views(
        hash_key=KEY,
        hash_key_id=KEY_ID,
        audit=AuditSelection.parse(AUDIT_ATTRIBUTES, AUDIT_PAYLOAD_KEYS),
    )
    audit = AuditLog(
        redis_url,
        audit_key(KEY),
        prefix=prefix,
        config=AuditConfig(batch_ms=5.0, timeout=0.5, retry_max=0.2),
    )
    auditor = ApprovalEventAuditor(
        audit, redis_url=redis_url, prefix=prefix, block_ms=50, timeout=0.5
    )
    approvals = Approvals(
        store,
        digest_key=digest_key(KEY),
        views=views,
        telemetry=telemetry,
        watch_poll_ms=100,
        max_watchers=4,
    )
    running = app.start(
        Engine(bundle, clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        workers=8,
        approvals=approvals,
        approval_service=ApprovalService(approvals, authenticator),
        telemetry=telemetry,
        audit=audit,
        views=views,
    )
    telemetry.observe_pending(store.pending_count)
    auditor.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Stack(running, store, audit, auditor, channel)
    finally:
        channel.close()
        running.stop(grace=None)
        auditor.close()
        audit.close(timeout=0.5)
        drop_prefix(store.redis, prefix)
        store.redis.close()


@contextmanager
def notifier_for(stack: Stack, hooks: Webhooks) -> Iterator[Notifier]:
    """`signoff notify` on the stack's event stream, posting to the local webhook receiver."""
    config = NotifierConfig(
        redis_url=REDIS_URL,
        stream=stack.store.events_stream,
        consumer="leaks",
        slack_webhook_url=hooks.url(SLACK_PATH),
        teams_webhook_url=hooks.url(TEAMS_PATH),
        http_timeout=2.0,
        backoff_base=0.01,
        backoff_max=0.05,
    )
    with Notifier(config) as notifier:
        notifier.ensure_group()
        yield notifier


# --- capture -------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record any logger emits, formatted in full (arguments, exception, stack)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._mutex:
            self.lines.append(line)

    def text(self) -> list[str]:
        with self._mutex:
            return list(self.lines)


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Root logger at DEBUG for the duration, as `signoff serve --log-level DEBUG` runs."""
    root = logging.getLogger()
    handler = LogCapture()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def message_text(msg: Message) -> str:
    return text_format.MessageToString(msg, as_utf8=True)


def call_text(error: object) -> str:
    """What a failed call tells its caller: code, details, and both metadata sets."""
    assert isinstance(error, grpc.Call)
    # The channel's own error string (not on grpc.Call's interface) repeats what it received.
    debug = getattr(error, "debug_error_string", None)
    parts = [str(error.code()), error.details() or "", str(debug() if debug else "")]
    for key, value in (*(error.initial_metadata() or ()), *(error.trailing_metadata() or ())):
        parts.append(f"{key}={value!r}")
    return "\n".join(parts)


def without_identities(msg: Message) -> Message:
    """A copy without the requester ids a policy names (echoed by design, see the tests)."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    _clear_requester_ids(copy)
    return copy


def _clear_requester_ids(msg: Message) -> None:
    for descriptor, value in msg.ListFields():
        if descriptor.name == "requester_ids":
            msg.ClearField(descriptor.name)
        elif descriptor.message_type is not None:
            if descriptor.is_repeated:
                for item in value:
                    if isinstance(item, Message):
                        _clear_requester_ids(item)
            elif isinstance(value, Message):
                _clear_requester_ids(value)


def split_reviewer_view(approval: apb.Approval) -> tuple[str, str]:
    """(the approval without payload or requester ids, the reviewer payload as JSON)."""
    rest = apb.Approval()
    rest.CopyFrom(approval)
    rest.request.ClearField("payload")
    rest.requirement.ClearField("requester_ids")
    reviewer_payload = json_format.MessageToJson(approval.request.payload, ensure_ascii=False)
    return message_text(rest), reviewer_payload


@dataclass(repr=False)
class Captured:
    """Everything the scenario saw leave signoff, by surface: [(what, text)]."""

    canaries: Canaries
    surfaces: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # Payloads of reviewer views (GetApproval, Watch, ...): unmasked keys are shown by design.
    reviewer_payloads: list[tuple[str, str]] = field(default_factory=list)
    # Responses as sent, requester ids included.
    raw_responses: list[tuple[str, str]] = field(default_factory=list)

    def add(self, surface: str, what: str, text: str) -> None:
        self.surfaces.setdefault(surface, []).append((what, text))

    def response(self, what: str, msg: Message) -> None:
        self.raw_responses.append((what, message_text(msg)))
        self.add("responses", what, message_text(without_identities(msg)))

    def approval(self, what: str, approval: apb.Approval) -> None:
        rest, reviewer_payload = split_reviewer_view(approval)
        self.raw_responses.append((what, message_text(approval)))
        self.add("responses", what, rest)
        self.reviewer_payloads.append((what, reviewer_payload))

    def error(self, what: str, error: object) -> None:
        self.add("grpc errors", what, call_text(error))

    def leaks(self, surface: str) -> dict[str, list[str]]:
        """{what: canaries found} over one surface."""
        out = {}
        for what, text in self.surfaces.get(surface, []):
            found = self.canaries.found(text)
            if found:
                out[what] = found
        return out


@contextmanager
def no_proxies() -> Iterator[None]:
    """Webhook posts must reach the local receiver directly, whatever proxy the shell sets."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("http_proxy", "https_proxy", "all_proxy"):
            patch.delenv(name, raising=False)
            patch.delenv(name.upper(), raising=False)
        yield
