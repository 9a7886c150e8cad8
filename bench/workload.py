"""One role+attribute workload, written out as signoff rules, Cerbos policies and Cedar policies.

The rules are defined once, as data (`POLICIES`): each rule is an allow or deny effect, the roles
it applies to and a conjunction of conditions (`Cond`). The three policy languages are rendered
from that data, and a plain-Python reference (`decide`) gives the expected answer of every case,
so the three systems can be checked against one truth before anything is timed.

Semantics shared by all three: a matching deny rule overrides any allow, and no matching rule
means deny (signoff: deny rules win, default DENY; Cerbos: EFFECT_DENY wins, no match is DENY;
Cedar: forbid overrides permit, default deny). Every attribute is present in every request, so
the systems' differing treatment of missing attributes never comes into play.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy
import grpc
import yaml
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from bench import cerbos_proto
from signoff.v1 import signoff_pb2 as pb

KINDS = ("customer_table", "orders_table", "iam_role", "k8s_deployment", "s3_bucket")
ACTIONS = ("read", "export", "delete")
SIGNOFF_CHECK = "/signoff.v1.DecisionService/Check"
SIGNOFF_BATCH = "/signoff.v1.DecisionService/CheckBatch"
CERBOS_CHECK = cerbos_proto.CHECK_RESOURCES
ALLOW, DENY = "ALLOW", "DENY"


# ---------------------------------------------------------------------------- the rules, as data


@dataclass(frozen=True)
class Cond:
    """One condition; `n` is the number for rows_*/clearance_*, `values` the set for class_in."""

    op: str  # other_tenant mfa no_mfa rows_le rows_gt class_in clearance_lt clearance_ge
    n: int = 0
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str  # "allow" or "deny"
    roles: tuple[str, ...] = ()  # any of these; empty: every principal
    when: tuple[Cond, ...] = ()  # all of these


@dataclass(frozen=True)
class Policy:
    """Rules over some kinds and actions (a signoff policy; Cerbos rules; Cedar scopes)."""

    id: str
    kinds: tuple[str, ...]
    actions: tuple[str, ...]
    rules: tuple[Rule, ...]


def _c(op: str, n: int = 0) -> Cond:
    return Cond(op, n)


def _class_in(*values: str) -> Cond:
    return Cond("class_in", values=values)


MFA, NO_MFA = _c("mfa"), _c("no_mfa")
LOW_CLASS = _class_in("public", "internal")

POLICIES: tuple[Policy, ...] = (
    Policy(
        "guardrails",
        KINDS,
        ACTIONS,
        (
            Rule("tenant-isolation", "deny", when=(_c("other_tenant"),)),
            Rule(
                "secret-needs-clearance-3",
                "deny",
                when=(_class_in("secret"), _c("clearance_lt", 3)),
            ),
            Rule(
                "confidential-needs-clearance-2",
                "deny",
                when=(_class_in("confidential"), _c("clearance_lt", 2)),
            ),
        ),
    ),
    Policy(
        "guardrails-delete", KINDS, ("delete",), (Rule("delete-needs-mfa", "deny", when=(NO_MFA,)),)
    ),
    # customer_table
    Policy(
        "customer-read",
        ("customer_table",),
        ("read",),
        (Rule("readers", "allow", ("viewer", "analyst", "data_steward")),),
    ),
    Policy(
        "customer-export",
        ("customer_table",),
        ("export",),
        (
            Rule("analysts-small", "allow", ("analyst",), (MFA, _c("rows_le", 10_000))),
            Rule("stewards", "allow", ("data_steward",), (MFA,)),
            Rule("never-huge", "deny", when=(_c("rows_gt", 1_000_000),)),
        ),
    ),
    Policy(
        "customer-delete",
        ("customer_table",),
        ("delete",),
        (
            Rule("stewards-low-class", "allow", ("data_steward",), (MFA, LOW_CLASS)),
            Rule("never-large", "deny", when=(_c("rows_gt", 100_000),)),
        ),
    ),
    # orders_table
    Policy(
        "orders-read",
        ("orders_table",),
        ("read",),
        (Rule("readers", "allow", ("viewer", "analyst", "finance")),),
    ),
    Policy(
        "orders-export",
        ("orders_table",),
        ("export",),
        (
            Rule("finance", "allow", ("finance",), (MFA,)),
            Rule("analysts-small", "allow", ("analyst",), (MFA, _c("rows_le", 50_000))),
        ),
    ),
    Policy(
        "orders-delete",
        ("orders_table",),
        ("delete",),
        (
            Rule("admins-low-class", "allow", ("admin",), (MFA, LOW_CLASS)),
            Rule("never-large", "deny", when=(_c("rows_gt", 1_000),)),
        ),
    ),
    # iam_role
    Policy(
        "iam-read",
        ("iam_role",),
        ("read",),
        (Rule("readers", "allow", ("security", "admin", "auditor")),),
    ),
    Policy("iam-export", ("iam_role",), ("export",), (Rule("auditors", "allow", ("auditor",)),)),
    Policy(
        "iam-delete",
        ("iam_role",),
        ("delete",),
        (
            Rule("security-cleared", "allow", ("security",), (MFA, _c("clearance_ge", 3))),
            Rule("admins-low-class", "allow", ("admin",), (MFA, LOW_CLASS)),
        ),
    ),
    Policy(
        "iam-mfa", ("iam_role",), ("export", "delete"), (Rule("needs-mfa", "deny", when=(NO_MFA,)),)
    ),
    # k8s_deployment
    Policy(
        "k8s-read",
        ("k8s_deployment",),
        ("read",),
        (Rule("readers", "allow", ("sre", "developer", "viewer")),),
    ),
    Policy(
        "k8s-export",
        ("k8s_deployment",),
        ("export",),
        (
            Rule("engineers", "allow", ("sre", "developer"), (MFA,)),
            Rule("never-large", "deny", when=(_c("rows_gt", 10_000),)),
        ),
    ),
    Policy(
        "k8s-delete",
        ("k8s_deployment",),
        ("delete",),
        (
            Rule("sre-cleared", "allow", ("sre",), (MFA, _c("clearance_ge", 2))),
            Rule("never-sensitive", "deny", when=(_class_in("confidential", "secret"),)),
        ),
    ),
    # s3_bucket
    Policy(
        "s3-read",
        ("s3_bucket",),
        ("read",),
        (Rule("readers", "allow", ("viewer", "analyst", "sre", "data_steward")),),
    ),
    Policy(
        "s3-export",
        ("s3_bucket",),
        ("export",),
        (
            Rule("stewards", "allow", ("data_steward",), (MFA,)),
            Rule("analysts", "allow", ("analyst",), (MFA, LOW_CLASS, _c("rows_le", 100_000))),
            Rule(
                "no-bulk-confidential",
                "deny",
                when=(_class_in("confidential"), _c("rows_gt", 10_000)),
            ),
        ),
    ),
    Policy(
        "s3-delete",
        ("s3_bucket",),
        ("delete",),
        (Rule("admins-small", "allow", ("admin",), (_c("rows_le", 1_000),)),),
    ),
)


def policies(rules_total: int = 30) -> list[Policy]:
    """The workload's rules, padded to `rules_total` with allow rules for roles nobody holds."""
    base = list(POLICIES)
    have = sum(len(p.rules) for p in base)
    if rules_total < have:
        raise ValueError(f"the workload has {have} rules; rules_total must be at least that")
    for i in range(rules_total - have):
        kind = KINDS[i % len(KINDS)]
        base.append(
            Policy(
                f"padding-{i}", (kind,), ("read",), (Rule("unused", "allow", (f"padding_{i}",)),)
            )
        )
    return base


# ------------------------------------------------------------------------------ requests, as data


@dataclass(frozen=True)
class Principal:
    id: str
    roles: tuple[str, ...]
    tenant: str = "acme"
    mfa: bool = True
    clearance: int = 2

    def attr(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "mfa": self.mfa, "clearance": self.clearance}


@dataclass(frozen=True)
class Resource:
    kind: str
    id: str
    tenant: str = "acme"
    rows: int = 500
    classification: str = "internal"

    def attr(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "rows": self.rows, "classification": self.classification}


@dataclass(frozen=True)
class Case:
    """One principal and resource, and the expected verdict of each action."""

    name: str
    principal: Principal
    resource: Resource
    expected: tuple[tuple[str, str], ...]  # (action, ALLOW or DENY)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.expected)


# ------------------------------------------------------------------------------- reference model


def _holds(c: Cond, p: Principal, r: Resource) -> bool:
    match c.op:
        case "other_tenant":
            return p.tenant != r.tenant
        case "mfa":
            return p.mfa
        case "no_mfa":
            return not p.mfa
        case "rows_le":
            return r.rows <= c.n
        case "rows_gt":
            return r.rows > c.n
        case "class_in":
            return r.classification in c.values
        case "clearance_lt":
            return p.clearance < c.n
        case "clearance_ge":
            return p.clearance >= c.n
    raise ValueError(f"unknown condition {c.op!r}")


@dataclass
class Trace:
    """What the reference saw for one check: the verdict and each candidate rule's fate."""

    verdict: str
    matched: list[tuple[Policy, Rule]] = field(default_factory=list)
    role_only: list[tuple[Policy, Rule]] = field(default_factory=list)  # roles held, `when` false


def trace(p: Principal, r: Resource, action: str, rules_total: int = 30) -> Trace:
    t = Trace(DENY)
    for pol in policies(rules_total):
        if r.kind not in pol.kinds or action not in pol.actions:
            continue
        for rule in pol.rules:
            if rule.roles and not set(rule.roles) & set(p.roles):
                continue
            if all(_holds(c, p, r) for c in rule.when):
                t.matched.append((pol, rule))
            else:
                t.role_only.append((pol, rule))
    effects = {rule.effect for _, rule in t.matched}
    t.verdict = ALLOW if effects == {"allow"} else DENY
    return t


def decide(p: Principal, r: Resource, action: str, rules_total: int = 30) -> str:
    """The reference answer: ALLOW when an allow rule matched and no deny rule did."""
    return trace(p, r, action, rules_total).verdict


# --------------------------------------------------------------------------------------- cases

PRINCIPALS = (
    Principal("viewer@acme.io", ("viewer",), mfa=False, clearance=1),
    Principal("analyst@acme.io", ("analyst",)),
    Principal("analyst-nomfa@acme.io", ("analyst",), mfa=False),
    Principal("steward@acme.io", ("data_steward",), clearance=3),
    Principal("steward-low@acme.io", ("data_steward",), clearance=1),
    Principal("steward-nomfa@acme.io", ("data_steward",), mfa=False, clearance=3),
    Principal("finance@acme.io", ("finance",)),
    Principal("finance-nomfa@acme.io", ("finance",), mfa=False),
    Principal("admin@acme.io", ("admin",), clearance=3),
    Principal("admin-nomfa@acme.io", ("admin",), mfa=False, clearance=3),
    Principal("security@acme.io", ("security",), clearance=3),
    Principal("security-c2@acme.io", ("security",)),
    Principal("auditor@acme.io", ("auditor",)),
    Principal("auditor-nomfa@acme.io", ("auditor",), mfa=False),
    Principal("sre@acme.io", ("sre",), clearance=3),
    Principal("sre-low@acme.io", ("sre",), clearance=1),
    Principal("sre-nomfa@acme.io", ("sre",), mfa=False, clearance=3),
    Principal("developer@acme.io", ("developer",), clearance=1),
    Principal("analyst-sre@acme.io", ("analyst", "sre"), clearance=3),
    Principal("guest@acme.io", ("guest",)),
    Principal("outsider@globex.io", ("admin", "data_steward", "sre", "auditor"), "globex", True, 3),
)

# (classification, rows, tenant) variants of every kind.
VARIANTS = (
    ("public", 0, "acme"),
    ("internal", 500, "acme"),
    ("internal", 5_000, "acme"),
    ("internal", 20_000, "acme"),
    ("confidential", 5_000, "acme"),
    ("confidential", 200_000, "acme"),
    ("secret", 500, "acme"),
    ("public", 2_000_000, "acme"),
    ("internal", 500, "globex"),
)

WHO = {p.id.split("@")[0]: p for p in PRINCIPALS}
HOT_PRINCIPAL = WHO["analyst"]
HOT_RESOURCE = Resource("customer_table", "crm.customers")

# Hand-written expectations: the reference model is checked against these.
ANCHORS = (
    ("hot: analyst on a small internal customer table", HOT_PRINCIPAL, HOT_RESOURCE, "AAD"),
    (
        "outsider on another tenant's table",
        WHO["outsider"],
        Resource("customer_table", "acme.customers", rows=0, classification="public"),
        "DDD",
    ),
    (
        "steward, two million public rows",
        WHO["steward"],
        Resource("customer_table", "crm.all", rows=2_000_000, classification="public"),
        "ADD",
    ),
    (
        "analyst on a secret table",
        HOT_PRINCIPAL,
        Resource("customer_table", "crm.secret", classification="secret"),
        "DDD",
    ),
    (
        "admin without mfa deletes a small bucket",
        WHO["admin-nomfa"],
        Resource("s3_bucket", "b.small"),
        "DDD",
    ),
    ("admin deletes a small bucket", WHO["admin"], Resource("s3_bucket", "b.small"), "DDA"),
    ("auditor exports an iam role", WHO["auditor"], Resource("iam_role", "iam.ops"), "AAD"),
    (
        "auditor without mfa exports an iam role",
        WHO["auditor-nomfa"],
        Resource("iam_role", "iam.ops"),
        "ADD",
    ),
)


def _resources() -> list[Resource]:
    return [
        Resource(kind, f"{kind}.{i}.{cls}.{rows}.{tenant}", tenant, rows, cls)
        for kind in KINDS
        for i, (cls, rows, tenant) in enumerate(VARIANTS)
    ]


def cases(rules_total: int = 30) -> list[Case]:
    """Every principal on every resource variant (all three actions), plus the hand-written anchors.

    Expectations come from the reference model; the anchors' hand-written ones are checked
    against it, and so is coverage: every rule must decide some check, every conditional rule
    must be seen failing its condition with its roles held, and every deny rule must be seen
    overriding an allow.
    """
    out = anchors(rules_total)
    for p, r in itertools.product(PRINCIPALS, _resources()):
        expected = tuple((a, decide(p, r, a, rules_total)) for a in ACTIONS)
        out.append(Case(f"{p.id} on {r.id}", p, r, expected))
    _check_coverage(out)
    return out


def anchors(rules_total: int = 30) -> list[Case]:
    """The hand-written cases (the hot case first), checked against the reference model."""
    out = []
    for name, p, r, verdicts in ANCHORS:
        want = tuple(zip(ACTIONS, (ALLOW if v == "A" else DENY for v in verdicts), strict=True))
        got = tuple((a, decide(p, r, a, rules_total)) for a in ACTIONS)
        if got != want:
            raise AssertionError(f"reference model disagrees with anchor {name!r}: {got} != {want}")
        out.append(Case(f"anchor: {name}", p, r, want))
    return out


def _check_coverage(all_cases: Iterable[Case]) -> None:
    decides: set[tuple[str, str]] = set()
    fails_when: set[tuple[str, str]] = set()
    overrides: set[tuple[str, str]] = set()
    for case in all_cases:
        for action in case.actions:
            t = trace(case.principal, case.resource, action)
            matched = {(p.id, r.id) for p, r in t.matched}
            allow_matched = any(r.effect == "allow" for _, r in t.matched)
            for pol, rule in t.matched:
                if rule.effect == "deny" or t.verdict == ALLOW:
                    decides.add((pol.id, rule.id))
                if rule.effect == "deny" and allow_matched:
                    overrides.add((pol.id, rule.id))
            for pol, rule in t.role_only:
                # The condition alone flips the answer: nothing else allows / denies here.
                others = matched - {(pol.id, rule.id)}
                if (rule.effect == "allow" and not others) or (
                    rule.effect == "deny" and t.verdict == ALLOW
                ):
                    fails_when.add((pol.id, rule.id))
    missing = []
    for pol in POLICIES:
        for rule in pol.rules:
            key = (pol.id, rule.id)
            if key not in decides:
                missing.append(f"{pol.id}/{rule.id}: never decides")
            if rule.when and key not in fails_when:
                missing.append(f"{pol.id}/{rule.id}: condition never seen false on its own")
            if rule.effect == "deny" and key not in overrides:
                missing.append(f"{pol.id}/{rule.id}: never seen overriding an allow")
    if missing:
        raise AssertionError("cases do not cover the rules:\n  " + "\n  ".join(missing))


def hot_case() -> Case:
    """The case used under load: one resource, three actions (two allowed, one denied)."""
    return anchors()[0]


def load_resources(n: int = 20) -> list[Resource]:
    """`n` resources over all kinds with varied attributes, for the 20 x 3 load request."""
    return [
        Resource(
            KINDS[i % len(KINDS)],
            f"load.{i}",
            rows=(500, 20_000, 200_000, 5)[(i // len(KINDS)) % 4],
            classification=("internal", "public", "confidential", "secret")[(i // 2) % 4],
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------------ signoff rendering


def _cel(c: Cond, p: str, r: str) -> str:
    match c.op:
        case "other_tenant":
            return f"{p}.tenant != {r}.tenant"
        case "mfa":
            return f"{p}.mfa"
        case "no_mfa":
            return f"!{p}.mfa"
        case "rows_le":
            return f"{r}.rows <= {c.n}"
        case "rows_gt":
            return f"{r}.rows > {c.n}"
        case "class_in":
            return f"{r}.classification in [{', '.join(repr(v) for v in c.values)}]"
        case "clearance_lt":
            return f"{p}.clearance < {c.n}"
        case "clearance_ge":
            return f"{p}.clearance >= {c.n}"
    raise ValueError(f"unknown condition {c.op!r}")


def write_signoff_rules(root: Path, rules_total: int = 30) -> None:
    """A signoff bundle (schema.yaml, policies.yaml) with the workload's rules."""
    root.mkdir(parents=True, exist_ok=True)
    schema = {
        "schema": {
            "principal": {"tenant": "string", "mfa": "bool", "clearance": "int"},
            "resource": {"tenant": "string", "rows": "int", "classification": "string"},
        }
    }
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    docs = []
    for pol in policies(rules_total):
        rules: list[dict[str, Any]] = []
        for rule in pol.rules:
            out: dict[str, Any] = {"id": rule.id, "effect": rule.effect}
            if rule.roles:
                out["roles"] = list(rule.roles)
            if rule.when:
                out["when"] = " && ".join(
                    _cel(c, "principal.attr", "resource.attr") for c in rule.when
                )
            rules.append(out)
        docs.append(
            {
                "id": pol.id,
                "resources": list(pol.kinds),
                "actions": list(pol.actions),
                "rules": rules,
            }
        )
    (root / "policies.yaml").write_text(yaml.safe_dump({"policies": docs}, sort_keys=False))


# ------------------------------------------------------------------------------- Cerbos rendering


def write_cerbos_policies(root: Path, rules_total: int = 30) -> None:
    """One Cerbos resource policy per kind holding every rule that covers that kind."""
    root.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        rules: list[dict[str, Any]] = []
        for pol in policies(rules_total):
            if kind not in pol.kinds:
                continue
            for rule in pol.rules:
                out: dict[str, Any] = {
                    "name": f"{pol.id}.{rule.id}",
                    "actions": list(pol.actions),
                    "effect": "EFFECT_ALLOW" if rule.effect == "allow" else "EFFECT_DENY",
                    "roles": list(rule.roles) or ["*"],
                }
                if rule.when:
                    expr = " && ".join(
                        _cel(c, "request.principal.attr", "request.resource.attr")
                        for c in rule.when
                    )
                    out["condition"] = {"match": {"expr": expr}}
                rules.append(out)
        doc = {
            "apiVersion": "api.cerbos.dev/v1",
            "resourcePolicy": {"version": "default", "resource": kind, "rules": rules},
        }
        (root / f"{kind}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


# -------------------------------------------------------------------------------- Cedar rendering


def cedar_type(kind: str) -> str:
    """The Cedar entity type of a resource kind: customer_table -> CustomerTable."""
    return "".join(part.capitalize() for part in kind.split("_"))


def _cedar(c: Cond) -> str:
    if c.op == "class_in":
        return f"{json.dumps(list(c.values))}.contains(resource.classification)"
    return _cel(c, "principal", "resource")  # the rest is written the same in Cedar


def cedar_policies(rules_total: int = 30) -> str:
    """The workload as Cedar: one permit (allow) or forbid (deny) per rule."""
    out = []
    for pol in policies(rules_total):
        actions = ", ".join(f'Action::"{a}"' for a in pol.actions)
        scope = "resource"
        kind_test: list[str] = []
        if len(pol.kinds) == 1:
            scope = f"resource is {cedar_type(pol.kinds[0])}"
        elif set(pol.kinds) != set(KINDS):
            kind_test = ["(" + " || ".join(f"resource is {cedar_type(k)}" for k in pol.kinds) + ")"]
        for rule in pol.rules:
            conds = list(kind_test)
            if rule.roles:
                conds.append("principal in [" + ", ".join(f'Role::"{x}"' for x in rule.roles) + "]")
            conds += [_cedar(c) for c in rule.when]
            text = (
                f'@id("{pol.id}/{rule.id}")\n'
                f"{'permit' if rule.effect == 'allow' else 'forbid'} "
                f"(principal, action in [{actions}], {scope})"
            )
            if conds:
                text += "\nwhen { " + " && ".join(conds) + " }"
            out.append(text + ";")
    return "\n\n".join(out) + "\n"


def cedar_entities(p: Principal, r: Resource) -> list[dict[str, Any]]:
    """The entities of one request: the user (its roles as parents), its roles, the resource."""
    roles = [{"type": "Role", "id": x} for x in p.roles]
    return [
        {"uid": {"type": "User", "id": p.id}, "attrs": p.attr(), "parents": roles},
        *({"uid": role, "attrs": {}, "parents": []} for role in roles),
        {"uid": {"type": cedar_type(r.kind), "id": r.id}, "attrs": r.attr(), "parents": []},
    ]


def cedar_request(p: Principal, r: Resource, action: str) -> dict[str, Any]:
    return {
        "principal": {"type": "User", "id": p.id},
        "action": {"type": "Action", "id": action},
        "resource": {"type": cedar_type(r.kind), "id": r.id},
        "context": {},
    }


# ---------------------------------------------------------------------------- request builders


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def signoff_check(p: Principal, r: Resource, action: str) -> pb.CheckRequest:
    return pb.CheckRequest(
        principal=pb.Principal(
            id=p.id, kind=pb.PRINCIPAL_KIND_HUMAN, roles=list(p.roles), attributes=_struct(p.attr())
        ),
        action=action,
        resource=pb.Resource(kind=r.kind, id=r.id, attributes=_struct(r.attr())),
    )


def signoff_batch(
    p: Principal, resources: Sequence[Resource], actions: Sequence[str] = ACTIONS
) -> pb.CheckBatchRequest:
    """Every action on every resource, resource-major (the order Cerbos answers in)."""
    return pb.CheckBatchRequest(items=[signoff_check(p, r, a) for r in resources for a in actions])


def cerbos_request(
    p: Principal,
    resources: Sequence[Resource],
    actions: Sequence[str] = ACTIONS,
    request_id: str = "bench",
) -> Message:
    return cerbos_proto.check_resources_request(
        {
            "requestId": request_id,
            "principal": {"id": p.id, "roles": list(p.roles), "attr": p.attr()},
            "resources": [
                {
                    "actions": list(actions),
                    "resource": {"kind": r.kind, "id": r.id, "attr": r.attr()},
                }
                for r in resources
            ],
        }
    )


@dataclass(frozen=True)
class Payloads:
    """Pre-serialized request bytes sent under load."""

    signoff_check: bytes  # one Check: the hot case's export
    signoff_batch3: bytes  # CheckBatch: the hot resource x 3 actions
    signoff_batch60: bytes  # CheckBatch: 20 resources x 3 actions
    cerbos_1x3: bytes  # CheckResources: the hot resource x 3 actions
    cerbos_20x3: bytes  # CheckResources: 20 resources x 3 actions


def payloads() -> Payloads:
    p, hot, many = HOT_PRINCIPAL, [HOT_RESOURCE], load_resources(20)
    return Payloads(
        signoff_check=signoff_check(p, HOT_RESOURCE, "export").SerializeToString(),
        signoff_batch3=signoff_batch(p, hot).SerializeToString(),
        signoff_batch60=signoff_batch(p, many).SerializeToString(),
        cerbos_1x3=cerbos_request(p, hot).SerializeToString(),
        cerbos_20x3=cerbos_request(p, many).SerializeToString(),
    )


def distinct_resources(k: int, n: int = 20) -> list[Resource]:
    """The load's `n` resources under ids of their own for `k` (ids decide nothing)."""
    return [dataclasses.replace(r, id=f"{r.id}.{k}") for r in load_resources(n)]


def distinct_batches(n: int) -> list[tuple[bytes, bytes]]:
    """`n` different 20 x 3 requests as (signoff CheckBatch, Cerbos CheckResources) bytes: no
    request repeats, so no decision cache can answer one."""
    out = []
    for k in range(n):
        resources = distinct_resources(k)
        out.append(
            (
                signoff_batch(HOT_PRINCIPAL, resources).SerializeToString(),
                cerbos_request(HOT_PRINCIPAL, resources).SerializeToString(),
            )
        )
    return out


def batch_verdicts_ok(
    raw_response: bytes, resources: Sequence[Resource], rules_total: int = 30
) -> bool:
    """Whether a signoff CheckBatch response to the hot principal's batch over `resources`
    (every action, resource-major) holds exactly the expected verdicts."""
    want = [decide(HOT_PRINCIPAL, r, a, rules_total) for r in resources for a in ACTIONS]
    return _batch_verdicts(raw_response) == want


def cerbos_verdicts_ok(
    raw_response: bytes, resources: Sequence[Resource], rules_total: int = 30
) -> bool:
    """As batch_verdicts_ok, for Cerbos's CheckResources answer to the same request."""
    want = [decide(HOT_PRINCIPAL, r, a, rules_total) for r in resources for a in ACTIONS]
    return _cerbos_verdicts(raw_response, resources, ACTIONS) == want


# -------------------------------------------------------------------------------- verification

SYSTEMS = ("signoff Check", "signoff CheckBatch", "Cerbos", "Cedar")


class Disagreement(AssertionError):
    """Some system's answer differs from the expected one; the message holds the table."""


def _signoff_verdict(resp: pb.CheckResponse) -> str:
    return pb.Verdict.Name(resp.verdict).removeprefix("VERDICT_")


def _cerbos_verdict(effect: str) -> str:
    return {"EFFECT_ALLOW": ALLOW, "EFFECT_DENY": DENY}.get(effect, effect or "missing")


def _batch_verdicts(raw: bytes) -> list[str]:
    resp = pb.CheckBatchResponse.FromString(raw)
    return [
        _signoff_verdict(r.decision)
        if r.HasField("decision")
        else f"error {r.error.code}: {r.error.message}"
        for r in resp.results
    ]


def _cerbos_verdicts(
    raw: bytes, resources: Sequence[Resource], actions: Sequence[str]
) -> list[str]:
    results = cerbos_proto.effects(raw)
    if [rid for rid, _ in results] != [r.id for r in resources]:
        raise Disagreement(
            f"Cerbos answered for {[rid for rid, _ in results]}, not in request order"
        )
    return [_cerbos_verdict(acts.get(a, "")) for _, acts in results for a in actions]


def verify(signoff_target: str, cerbos_target: str, rules_total: int = 30) -> str:
    """Every case on signoff (Check and CheckBatch), Cerbos and Cedar, then the load payloads.

    Raises Disagreement with a table of every answer that differs from the expected one;
    returns a one-line summary otherwise.
    """
    all_cases = cases(rules_total)
    got: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    policy_set = cedarpy.PolicySet.from_str(cedar_policies(rules_total))
    with (
        grpc.insecure_channel(signoff_target) as signoff,
        grpc.insecure_channel(cerbos_target) as cerbos,
    ):
        check = signoff.unary_unary(SIGNOFF_CHECK, None, None)
        batch = signoff.unary_unary(SIGNOFF_BATCH, None, None)
        cerbos_check = cerbos.unary_unary(CERBOS_CHECK, None, None)
        for case in all_cases:
            for action in case.actions:
                req = signoff_check(case.principal, case.resource, action)
                raw = check(req.SerializeToString(), timeout=10)
                got[case.name, action]["signoff Check"] = _signoff_verdict(
                    pb.CheckResponse.FromString(raw)
                )
                result = cedarpy.is_authorized(
                    cedar_request(case.principal, case.resource, action),
                    policy_set,
                    cedar_entities(case.principal, case.resource),
                )
                if result.diagnostics.errors:
                    got[case.name, action]["Cedar"] = f"error {result.diagnostics.errors}"
                else:
                    got[case.name, action]["Cedar"] = ALLOW if result.allowed else DENY
        # Batched: the cases of one principal, 20 resources per request (Cerbos's default limit
        # is 50 resources per request).
        by_principal: dict[Principal, list[Case]] = defaultdict(list)
        for case in all_cases:
            by_principal[case.principal].append(case)
        for p, group in by_principal.items():
            for i in range(0, len(group), 20):
                chunk = group[i : i + 20]
                resources = [c.resource for c in chunk]
                keys = [(c.name, a) for c in chunk for a in ACTIONS]
                verdicts = _batch_verdicts(
                    batch(signoff_batch(p, resources).SerializeToString(), timeout=30)
                )
                for key, v in zip(keys, verdicts, strict=True):
                    got[key]["signoff CheckBatch"] = v
                raw = cerbos_check(cerbos_request(p, resources).SerializeToString(), timeout=30)
                for key, v in zip(keys, _cerbos_verdicts(raw, resources, ACTIONS), strict=True):
                    got[key]["Cerbos"] = v
        # The exact bytes sent under load must get the expected answers too (a batch item
        # error would not show as a failed call).
        rows = _disagreements(all_cases, got)
        pl = payloads()
        hot, many = [HOT_RESOURCE], load_resources(20)
        want_hot = decide(HOT_PRINCIPAL, HOT_RESOURCE, "export", rules_total)
        hot_check = _signoff_verdict(
            pb.CheckResponse.FromString(check(pl.signoff_check, timeout=10))
        )
        if hot_check != want_hot:
            rows.append(("payload signoff_check", "export", want_hot, {"signoff Check": hot_check}))
        for name, raw_req, resources, system in (
            ("signoff_batch3", pl.signoff_batch3, hot, "signoff CheckBatch"),
            ("signoff_batch60", pl.signoff_batch60, many, "signoff CheckBatch"),
            ("cerbos_1x3", pl.cerbos_1x3, hot, "Cerbos"),
            ("cerbos_20x3", pl.cerbos_20x3, many, "Cerbos"),
        ):
            if system == "Cerbos":
                answers = _cerbos_verdicts(cerbos_check(raw_req, timeout=10), resources, ACTIONS)
            else:
                answers = _batch_verdicts(batch(raw_req, timeout=10))
            pairs = [(r, a) for r in resources for a in ACTIONS]
            for (r, a), v in zip(pairs, answers, strict=True):
                want = decide(HOT_PRINCIPAL, r, a, rules_total)
                if v != want:
                    rows.append((f"payload {name}: {r.id}", a, want, {system: v}))
    checks = sum(len(c.actions) for c in all_cases)
    if rows:
        raise Disagreement(_table(rows, checks))
    allowed = sum(v == ALLOW for c in all_cases for _, v in c.expected)
    return (
        f"verified {len(all_cases)} cases ({checks} checks, {allowed} allowed) on "
        f"{', '.join(SYSTEMS)}, and the 5 load payloads: all agree with the expected answers"
    )


Row = tuple[str, str, str, dict[str, str]]


def _disagreements(
    all_cases: Sequence[Case], got: dict[tuple[str, str], dict[str, str]]
) -> list[Row]:
    rows: list[Row] = []
    for case in all_cases:
        for action, want in case.expected:
            answers = got[case.name, action]
            if any(answers.get(s) != want for s in SYSTEMS):
                rows.append((case.name, action, want, answers))
    return rows


def _table(rows: Sequence[Row], checks: int) -> str:
    head = ["case", "action", "expected", *SYSTEMS]
    body = [
        [name, action, want, *(answers.get(s, "-") for s in SYSTEMS)]
        for name, action, want, answers in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    for line in body[:60]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
    if len(body) > 60:
        lines.append(f"... and {len(body) - 60} more")
    return f"{len(rows)} of {checks} checks disagree with the expected answer:\n" + "\n".join(lines)
