"""A compiled policy bundle: what the loader produces and the evaluator consumes."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from signoff.engine.cel import Backend, Program
from signoff.engine.model import ApprovalRequirement, Labels, MaskOp, Verdict
from signoff.engine.schema import AttributeSchema

ANY_ROLE = "*"  # in `roles:` or `parent_roles:`: any role the principal holds


@dataclass(frozen=True)
class Glob:
    """A shell-style pattern; `*` and `?` match any characters (including dots)."""

    pattern: str
    regex: re.Pattern[str] | None = field(compare=False, default=None)

    @staticmethod
    def of(pattern: str) -> Glob:
        if any(ch in pattern for ch in "*?["):
            return Glob(pattern, re.compile(fnmatch.translate(pattern)))
        return Glob(pattern)

    @property
    def exact(self) -> bool:
        return self.regex is None

    def matches(self, value: str) -> bool:
        if self.regex is None:
            return value == self.pattern
        return self.regex.match(value) is not None


@dataclass(frozen=True)
class MaskSpec:
    """Masks every request field whose path or tags match."""

    paths: tuple[Glob, ...]
    tags: tuple[Glob, ...]
    op: MaskOp
    keep_first: int = 0
    keep_last: int = 0


@dataclass(frozen=True)
class DerivedRole:
    name: str
    parent_roles: frozenset[str]
    program: Program


@dataclass(frozen=True)
class CompiledRule:
    """One rule, ready to evaluate; `rule_id` is `<policy id>/<rule id>`."""

    rule_id: str
    effect: Verdict
    program: Program | None  # None: no condition, always holds
    static_roles: frozenset[str] = frozenset()
    derived_roles: tuple[str, ...] = ()
    reason: str = ""
    masks: tuple[MaskSpec, ...] = ()
    approval: ApprovalRequirement | None = None
    shadow: bool = False  # audit only: recorded with what it would decide, never enforced
    labels: Labels = ()

    @property
    def sort_key(self) -> tuple[int, str]:
        # Strongest effect first so a DENY can end the evaluation of weaker rules early.
        return (-int(self.effect), self.rule_id)


@dataclass(frozen=True)
class CompiledPolicy:
    policy_id: str
    resources: tuple[Glob, ...]
    actions: tuple[Glob, ...]
    rules: tuple[CompiledRule, ...]


@dataclass(frozen=True)
class Bundle:
    """Everything needed to decide; immutable so it can be swapped atomically."""

    revision: str
    backend: Backend
    schema: AttributeSchema
    policies: tuple[CompiledPolicy, ...]
    derived_roles: dict[str, DerivedRole]
    files: tuple[str, ...]

    @property
    def rule_count(self) -> int:
        return sum(len(p.rules) for p in self.policies)
