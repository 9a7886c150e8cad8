"""Helpers for the approval security tests: a dev IdP, real servers on real Redis, Redis reads."""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff import devtokens
from signoff.approvals.digest import digest_key
from signoff.approvals.model import ApprovalRecord, State
from signoff.approvals.service import Approvals
from signoff.approvals.store import (
    DEFAULT_MAX_PENDING_PER_REQUESTER,
    ApprovalStore,
    Clock,
    wall_clock_ms,
)
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.identity import Authenticator, IdentityConfig
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.server.approvals import ApprovalService
from signoff.server.approvals import Authenticator as CallerAuthenticator
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, TIMEOUT, bundled, drop_prefix, struct

HUMAN = pb.PRINCIPAL_KIND_HUMAN
AGENT = pb.PRINCIPAL_KIND_AGENT
SERVICE = pb.PRINCIPAL_KIND_SERVICE
Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


# --- identity -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DevIdP:
    """The dev signing key from `signoff dev-keys`, standing in for the identity provider."""

    directory: Path

    @classmethod
    def create(cls, directory: Path) -> DevIdP:
        devtokens.create_dev_keys(directory)
        return cls(directory)

    @property
    def jwks(self) -> Path:
        return self.directory / devtokens.JWKS_FILE

    @functools.cached_property
    def kid(self) -> str:
        kid: str = json.loads(self.jwks.read_text())["keys"][0]["kid"]
        return kid

    @functools.cached_property
    def private_key(self) -> Ed25519PrivateKey:
        pem = (self.directory / devtokens.PRIVATE_KEY_FILE).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key

    def authenticator(self) -> Authenticator:
        return Authenticator(
            IdentityConfig(
                jwks=str(self.jwks), issuer=devtokens.DEV_ISSUER, audience=devtokens.DEV_AUDIENCE
            )
        )

    def token(
        self,
        subject: str,
        *roles: str,
        kind: str = "human",
        groups: Sequence[str] = (),
        **claims: Any,
    ) -> str:
        """A valid token, minted the way `signoff dev-token` mints it."""
        return devtokens.mint(
            self.directory,
            subject=subject,
            kind=kind,
            roles=roles,
            groups=groups,
            extra_claims=claims,
        )

    def claims(self, subject: str, *roles: str, kind: str = "human") -> dict[str, Any]:
        """Valid claims as a dict, for tests that drop or bend one of them."""
        now = int(time.time())
        return {
            "iss": devtokens.DEV_ISSUER,
            "aud": devtokens.DEV_AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "principal_kind": kind,
            "roles": list(roles),
            "groups": [],
        }

    def signed(
        self, claims: Mapping[str, Any], *, key: Ed25519PrivateKey | None = None, kid: str = ""
    ) -> str:
        """`claims` exactly as given, signed with the dev key (or `key`) under the dev kid."""
        return jwt.encode(
            dict(claims),
            key or self.private_key,
            algorithm=devtokens.DEV_ALGORITHM,
            headers={"kid": kid or self.kid},
        )


def fullwidth(text: str) -> str:
    """`text` with every printable ASCII character as its fullwidth form (NFKC folds it back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


# --- clock ---------------------------------------------------------------------------------


class ManualClock:
    """A store clock in ms since the epoch that only moves when a test moves it."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._ms = wall_clock_ms() if start_ms is None else start_ms
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._ms

    def set(self, ms: int) -> None:
        with self._lock:
            self._ms = ms

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._ms += round(seconds * 1000)


# --- servers -------------------------------------------------------------------------------


@functools.cache
def _load(rules: Path) -> Bundle:
    return load_bundle(rules, backend="cel-expr")


@dataclass
class Server:
    """One in-process signoff with approvals on the real Redis, and stubs to reach it."""

    running: app.Running
    store: ApprovalStore
    channel: grpc.Channel

    @property
    def prefix(self) -> str:
        return self.store.prefix

    @property
    def r(self) -> redis.Redis:
        return self.store.redis

    @property
    def decisions(self) -> pb_grpc.DecisionServiceStub:
        return pb_grpc.DecisionServiceStub(self.channel)

    @property
    def approvals(self) -> apb_grpc.ApprovalServiceStub:
        return apb_grpc.ApprovalServiceStub(self.channel)

    # DecisionService
    def check(self, request: pb.CheckRequest, approval_id: str = "") -> pb.CheckResponse:
        if approval_id:
            request = copy.deepcopy(request)
            request.approval_id = approval_id
        return self.decisions.Check(request, timeout=TIMEOUT)

    def ask(self, request: pb.CheckRequest) -> str:
        """Check `request`, which must need an approval; the pending approval's id."""
        response = self.check(request)
        assert response.verdict == pb.VERDICT_REQUIRE_APPROVAL, response
        assert response.approval_id.startswith("apr_")
        return response.approval_id

    # ApprovalService, as the holder of `token`
    def approve(self, approval_id: str, token: str, reason: str = "reviewed") -> apb.Approval:
        request = apb.ApproveRequest(approval_id=approval_id, reason=reason)
        return self.approvals.Approve(request, metadata=bearer(token), timeout=TIMEOUT).approval

    def reject(self, approval_id: str, token: str, reason: str = "not like this") -> apb.Approval:
        request = apb.RejectRequest(approval_id=approval_id, reason=reason)
        return self.approvals.Reject(request, metadata=bearer(token), timeout=TIMEOUT).approval

    def cancel(self, approval_id: str, token: str, reason: str = "") -> apb.Approval:
        request = apb.CancelRequest(approval_id=approval_id, reason=reason)
        return self.approvals.Cancel(request, metadata=bearer(token), timeout=TIMEOUT).approval

    def get(self, approval_id: str, token: str) -> apb.Approval:
        request = apb.GetApprovalRequest(approval_id=approval_id)
        return self.approvals.GetApproval(request, metadata=bearer(token), timeout=TIMEOUT).approval

    # What Redis holds, read directly
    def record(self, approval_id: str) -> ApprovalRecord:
        found = self.store.get(approval_id)
        assert found is not None, f"no approval {approval_id}"
        return found

    def state(self, approval_id: str) -> State:
        return self.record(approval_id).state

    def raw(self, approval_id: str) -> dict[str, str]:
        fields = self.r.hgetall(f"{self.prefix}approval:{approval_id}")
        return {str(k): str(v) for k, v in fields.items()}

    def stream(self, key: str) -> list[dict[str, str]]:
        """The entries of the stream at `key`, oldest first."""
        return _entries(self.r.xrange(key))

    def events(self, approval_id: str) -> list[dict[str, str]]:
        """The approval's own stream (what WatchApproval follows), oldest first."""
        return self.stream(self.store.approval_events_stream(approval_id))

    def global_events(self, approval_id: str | None = None) -> list[dict[str, str]]:
        """`<prefix>events`, oldest first; only `approval_id`'s entries when given."""
        entries = self.stream(self.store.events_stream)
        if approval_id is None:
            return entries
        return [e for e in entries if e["approval_id"] == approval_id]

    def all_keys(self) -> list[str]:
        return sorted(str(k) for k in self.r.scan_iter(match=f"{self.prefix}*", count=1000))

    def dump(self) -> str:
        """Every value stored under this server's prefix, as one string to search."""
        parts: list[str] = []
        for key in self.all_keys():
            kind = self.r.type(key)
            if kind == "hash":
                parts.append(json.dumps(self.r.hgetall(key), ensure_ascii=False))
            elif kind == "stream":
                parts.append(json.dumps(self.r.xrange(key), ensure_ascii=False))
            elif kind == "zset":
                parts.append(json.dumps(self.r.zrange(key, 0, -1), ensure_ascii=False))
            elif kind == "string":
                parts.append(json.dumps(self.r.get(key), ensure_ascii=False))
            else:
                raise AssertionError(f"unexpected {kind!r} at {key}")
        return "\n".join(parts)


def _entries(raw: Any) -> list[dict[str, str]]:
    return [dict(fields) for _id, fields in raw]


@contextmanager
def serve(
    rules: Path | None = None,
    *,
    auth: CallerAuthenticator,
    now: str = DAY,
    clock: Clock = wall_clock_ms,
    redis_url: str = REDIS_URL,
    prefix: str | None = None,
    workers: int = 8,
    watch_poll_ms: int = 1000,
    max_pending: int = DEFAULT_MAX_PENDING_PER_REQUESTER,
) -> Iterator[Server]:
    """Serve `rules` (default: the bundled rules), CEL `now` pinned at `now`, the approval store
    on `clock`, under a fresh key prefix (or `prefix`, left in place for its owner to drop)."""
    engine = Engine(bundled() if rules is None else _load(rules), clock=fixed_clock(now))
    own = prefix is None
    store = ApprovalStore(
        redis_url,
        prefix=prefix or f"signoff:test:approvals:{uuid.uuid4().hex}:",
        clock=clock,
        max_pending_per_requester=max_pending,
    )
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    approvals = Approvals(
        store, digest_key=digest_key(KEY), views=views, watch_poll_ms=watch_poll_ms
    )
    running = app.start(
        engine,
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        workers=workers,
        approvals=approvals,
        approval_service=ApprovalService(approvals, auth),
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Server(running, store, channel)
    finally:
        channel.close()
        running.stop(grace=None)
        if own:
            drop_prefix(store.redis, store.prefix)
        store.redis.close()


# --- requests ------------------------------------------------------------------------------

# A bundle built for these tests: two environments with different requirements, masks, a
# policy deny, and `requester_identities` naming an agent's owners.
LAB_SCHEMA = """
schema:
  principal: {tenant: string, owner: string, owners: list<string>, note: string}
  resource: {tenant: string, label: string}
  context: {ticket: string, frozen: bool}
  payload: {target: string, rows: int}
"""

LAB_POLICIES = """
policies:
  - id: lab
    resources: [doc, report]
    actions: [read, export]
    rules:
      - id: allow-staff
        effect: allow
        roles: [staff]
        reason: staff work with documents

      - id: deny-frozen
        effect: deny
        when: has(context.attr.frozen) && context.attr.frozen
        reason: changes are frozen

      - id: mask-personal
        effect: mask
        roles: [staff]
        when: resource.tags.exists(t, t.startsWith('pii.') || t.startsWith('pci.'))
        reason: personal data is masked
        mask:
          - tags: [pii.email]
            operator: email
          - tags: ["pci.*"]
            operator: redact
          - tags: [pii.id]
            operator: hash

      - id: staging-needs-a-reviewer
        effect: require_approval
        roles: [staff]
        when: context.environment == 'staging'
        reason: staging needs a reviewer
        approval:
          approvers: {roles: [reviewer]}
          quorum: 1
          requester_identities: [principal.attr.owner, principal.attr.owners]
          pending_ttl: PENDING
          grant_ttl: GRANT

      - id: prod-needs-two-security
        effect: require_approval
        roles: [staff]
        when: context.environment == 'prod'
        reason: prod needs two security approvers
        approval:
          approvers: {roles: [security], groups: [sec-oncall]}
          quorum: 2
          requester_identities: [principal.attr.owner, principal.attr.owners]
          pending_ttl: PENDING
          grant_ttl: GRANT

      - id: restricted-needs-a-dba-too
        effect: require_approval
        roles: [staff]
        when: context.environment == 'prod' && has(resource.attr.label) && resource.attr.label == 'restricted'
        reason: restricted data also needs a DBA
        approval:
          approvers: {roles: [dba]}
          quorum: 1
          requester_identities: [principal.attr.owner, principal.attr.owners]
"""


def lab_files(
    *, pending: str = "1h", grant: str = "10m", staging_quorum: int = 1
) -> dict[str, str]:
    """The lab bundle as {file: yaml} for `write_rules`."""
    policies = LAB_POLICIES.replace("PENDING", pending).replace("GRANT", grant)
    policies = policies.replace(
        "roles: [reviewer]}\n          quorum: 1",
        f"roles: [reviewer]}}\n          quorum: {staging_quorum}",
    )
    return {"schema": LAB_SCHEMA, "policies": policies}


def customer_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": "c-1001",
            "email": "jane.doe@example.com",
            "card": "4111 1111 1111 1111",
            "country": "DE",
        },
        {
            "id": "c-1002",
            "email": "max.mustermann@example.org",
            "card": "5500 0000 0000 0004",
            "country": "FR",
        },
    ]


def staff(pid: str = "sam@acme.io", *roles: str, **attributes: Any) -> pb.Principal:
    """A human member of staff (plus any `roles`)."""
    return pb.Principal(
        id=pid,
        kind=HUMAN,
        roles=["staff", *roles],
        attributes=struct({"tenant": "acme", **attributes}),
    )


def lab_bot(
    owner: str = "olivia@acme.io", owners: Sequence[str] = ("oscar@acme.io",)
) -> pb.Principal:
    """An agent with the staff role, owned by `owner` and co-owned by `owners`."""
    return pb.Principal(
        id="agent:lab-bot",
        kind=AGENT,
        roles=["staff"],
        attributes=struct({"tenant": "acme", "owner": owner, "owners": list(owners)}),
    )


def lab_doc(label: str = "internal") -> pb.Resource:
    return pb.Resource(
        kind="doc",
        id="doc-1",
        attributes=struct({"tenant": "acme", "label": label}),
        fields=[
            pb.Field(path="customers.*.id", tags=["pii.id"]),
            pb.Field(path="customers.*.email", tags=["pii.email"]),
            pb.Field(path="customers.*.card", tags=["pci.pan"]),
            pb.Field(path="customers.*.country"),
        ],
    )


def lab_request(
    env: str = "staging",
    *,
    who: pb.Principal | None = None,
    action: str = "export",
    resource: pb.Resource | None = None,
    payload: Mapping[str, Any] | None = None,
) -> pb.CheckRequest:
    """An export of customer rows that needs an approval in staging and in prod."""
    body = {"target": "s3://acme-exports/q1.parquet", "rows": 2, "customers": customer_rows()}
    return pb.CheckRequest(
        principal=who or staff(),
        action=action,
        resource=resource or lab_doc(),
        context=pb.Context(environment=env, attributes=struct({"ticket": "CHG-1"})),
        payload=struct(body if payload is None else payload),
    )


def refused(call: Callable[[], object]) -> grpc.Call:
    """Run `call`, which must fail; the failed call. A success fails the test, showing what it got."""
    try:
        result = call()
    except grpc.RpcError as error:
        failure = error
    else:
        raise AssertionError(f"expected the call to be refused, but it answered:\n{result}")
    assert isinstance(failure, grpc.Call)
    return failure


def storm(n: int, call: Callable[[int], T]) -> list[T | grpc.RpcError]:
    """Run call(0..n-1) on n threads released at the same instant; results in index order."""
    # The test thread is the last party: no caller gets a head start by tripping the barrier.
    gate = threading.Barrier(n + 1)

    def one(i: int) -> T | grpc.RpcError:
        gate.wait()
        try:
            return call(i)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        gate.wait()
        return [f.result() for f in futures]


def first(stream: Iterable[T]) -> T:
    """The first message of a server stream (its error, if the call fails)."""
    for message in stream:
        return message
    raise AssertionError("the stream ended without a message")


def code_of(error: object) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    code: grpc.StatusCode = error.code()
    return code


def details_of(error: object) -> str:
    assert isinstance(error, grpc.Call)
    return error.details() or ""
