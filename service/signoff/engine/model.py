"""Plain data passed through the decision pipeline: requests in, decisions out, no protobuf."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.IntEnum):
    """Verdicts ordered by precedence: a higher value wins when rules disagree."""

    ALLOW = 1
    MASK = 2
    REQUIRE_APPROVAL = 3
    DENY = 4


class PrincipalKind(enum.Enum):
    HUMAN = "human"
    AGENT = "agent"
    SERVICE = "service"


class MaskOp(enum.IntEnum):
    """Masking operators ordered by strictness: a higher value wins on the same field."""

    PARTIAL = 1
    EMAIL = 2
    HASH = 3
    REDACT = 4
    NULLIFY = 5


@dataclass(frozen=True)
class FieldRef:
    """A field the action touches, with its data tags."""

    path: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Principal:
    id: str
    kind: PrincipalKind
    roles: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    kind: str
    id: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    fields: tuple[FieldRef, ...] = ()


@dataclass(frozen=True)
class Context:
    environment: str = ""
    time: dt.datetime | None = None
    source_ip: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One question: may `principal` do `action` on `resource` in `context` with `payload`?"""

    principal: Principal
    action: str
    resource: Resource
    context: Context = field(default_factory=Context)
    payload: dict[str, Any] = field(default_factory=dict)
    approval_id: str = ""
    explain: bool = False  # the caller asks how the decision was reached


@dataclass(frozen=True)
class FieldMask:
    """One entry of a masking plan: how to transform the value at `path`."""

    path: str
    op: MaskOp
    keep_first: int = 0
    keep_last: int = 0
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApproverSet:
    """Satisfied by a human holding any of `roles` or in any of `groups`."""

    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


# Rule labels (`compliance: [soc2, gdpr]`): sorted (name, sorted values) pairs.
Labels = tuple[tuple[str, tuple[str, ...]], ...]


def merge_labels(all_labels: list[Labels]) -> Labels:
    """Every value of every label name, once: what several rules together concern."""
    merged: dict[str, set[str]] = {}
    for labels in all_labels:
        for name, values in labels:
            merged.setdefault(name, set()).update(values)
    return tuple((name, tuple(sorted(values))) for name, values in sorted(merged.items()))


@dataclass(frozen=True)
class ApprovalRequirement:
    approvers: tuple[ApproverSet, ...]
    quorum: int
    pending_ttl: dt.timedelta
    grant_ttl: dt.timedelta
    rule_ids: tuple[str, ...] = ()
    # Principal attribute names whose values count as the requester's own identities.
    requester_attrs: tuple[str, ...] = ()
    # Filled per decision: the principal id plus the values of requester_attrs.
    requester_ids: tuple[str, ...] = ()
    # The asking rules' labels, shown to reviewers (e.g. the compliance impact).
    labels: Labels = ()


class RuleOutcome(enum.Enum):
    MATCHED = "matched"
    NOT_MATCHED = "not_matched"  # the condition was false (whatever the roles gave)
    ROLE_NOT_HELD = "role_not_held"  # none of the rule's roles held: the condition was not run
    ERROR = "error"


@dataclass(frozen=True)
class RuleTrace:
    """What one candidate rule did in a decision: rule logic and outcome, no request values."""

    rule_id: str
    effect: Verdict
    outcome: RuleOutcome
    condition: str = ""  # as evaluated, policy variables expanded; "" when the rule has none
    roles: tuple[str, ...] = ()  # the rule's role selector, static and derived
    error: str = ""  # the evaluation error, which names no request value
    # False: evaluated only for the explanation, after the verdict was settled (a deny matched
    # or a rule failed to evaluate).
    counted: bool = True
    shadow: bool = False  # an audit-only rule: its outcome never changes the verdict


@dataclass(frozen=True)
class Explanation:
    rules: tuple[RuleTrace, ...]
    decided_by: tuple[str, ...]  # the rules the verdict came from; () for the default deny


@dataclass(frozen=True)
class ShadowOutcome:
    """What the decision would have been with the audit-only (shadow) rules enforced too."""

    verdict: Verdict
    matched_rules: tuple[str, ...] = ()  # shadow rules that matched
    errored_rules: tuple[str, ...] = ()  # shadow rules that failed to evaluate
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    policy_revision: str
    matched_rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    masking_plan: tuple[FieldMask, ...] = ()
    approval: ApprovalRequirement | None = None
    errored_rules: tuple[str, ...] = ()
    explanation: Explanation | None = None
    # Only when shadow rules were candidates; never part of what the caller is told to do.
    shadow: ShadowOutcome | None = None
