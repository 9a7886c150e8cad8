"""`signoff replay`: decide recorded audit decisions again with a new bundle, and diff them."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from signoff.audit.record import DecisionRecord
from signoff.audit.record import MalformedRecord as MalformedRecord  # callers name it here
from signoff.engine import celscan
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.engine.model import (
    Decision,
    FieldMask,
    Request,
    Verdict,
)
from signoff.errors import InvalidRequest, SignoffError

DEFAULT_EXAMPLES = 3
# The outcome when the new bundle's schema would reject the recorded request outright.
INVALID = "INVALID_REQUEST"
# Stand-ins in the per-rule counts for "no rule": a default deny or a rejected request.
NO_RULE = "(no rule matched)"
NO_DECISION = "(request rejected)"

WHY = {
    "not_kept": "carried by the request, value not kept in the record",
    "masked": "value masked in the record by the decision's masking plan",
    "never_recorded": "audit records never keep it",
    "no_attribute_names": "record predates attribute_names: absent and not kept look alike",
    "no_payload_keys": "record predates payload_keys: absent and not kept look alike",
    "unresolved": "read in a way that does not name one attribute",
    "roles_order": "records keep roles sorted and deduplicated; the rule may see the difference",
}


class ReplayInputError(SignoffError):
    """The decisions file (or a record in it) is unusable; the message names no values."""


# --- what the rules read --------------------------------------------------------------------

ReadKind = Literal["attr", "payload", "never_recorded", "unresolved", "roles_order"]


@dataclass(frozen=True, order=True)
class Read:
    """One thing a condition reads from the request that an audit record may not keep."""

    label: str  # as it reads in CEL: principal.attr.owner, payload.customer.email, context.time
    kind: ReadKind
    section: str = ""  # principal, resource, context or payload (attr and payload reads)
    path: tuple[str, ...] = ()  # the attribute name, or the payload path as selected


_ROOTS = frozenset({"principal", "resource", "context", "payload"})
# Members of the request sections that every record keeps, by value.
_KEPT = {
    "principal": frozenset({"id", "kind"}),
    "resource": frozenset({"id", "kind", "fields", "tags", "paths"}),
    "context": frozenset({"environment"}),
}
_NEVER_RECORDED = frozenset({"context.time", "context.source_ip"})
# Roles are kept as a sorted set: only membership tests see the same list as the caller sent.
_MEMBERSHIP_MACROS = frozenset({"exists", "all"})


def cel_reads(source: str) -> frozenset[Read]:
    """Everything `source` (a condition as compiled) reads that a record may lack, found in the
    text: `has(x)` reads x's presence, which the record must know just as well as its value.
    Errs towards reporting (`miss_nothing`): a comprehension variable spelled like a section
    counts too."""
    found: set[Read] = set()
    for selection in celscan.selections(source, _ROOTS, miss_nothing=True):
        found.update(_classify(selection))
    return frozenset(found)


def _classify(selection: celscan.Selection) -> list[Read]:
    root, names = selection.root, selection.names
    if root == "payload":
        if not names:
            return [Read(root, "unresolved")]
        # Selection stops at an index, a method or a quoted name: the shorter path read then
        # covers everything under it, which only errs towards "masked".
        return [Read(".".join([root, *names]), "payload", root, names)]
    if not names:
        return [Read(root, "unresolved")]
    member = f"{root}.{names[0]}"
    if member in _NEVER_RECORDED:
        return [Read(member, "never_recorded")]
    if names[0] == "attr":
        if len(names) < 2:
            return [Read(member, "unresolved")]
        return [Read(f"{member}.{names[1]}", "attr", root, (names[1],))]
    if member == "principal.roles":
        membership = (
            len(names) == 1 and selection.before == "in" and selection.after not in ("[", ".")
        )
        if membership or (len(names) == 1 and selection.method in _MEMBERSHIP_MACROS):
            return []
        return [Read(member, "roles_order")]
    if names[0] in _KEPT.get(root, frozenset()):
        return []
    return [Read(member, "unresolved")]


# --- recorded decisions -----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Missing:
    """Why a decision is not replayable: an attribute the rules read, and what the record lacks."""

    attribute: str
    why: str  # a key of WHY


MaskSpec = tuple[str, int, int]


def plan_specs(plan: Iterable[FieldMask]) -> dict[str, MaskSpec]:
    """A masking plan by path, in the form reports compare and show."""
    return {m.path: (m.op.name.lower(), m.keep_first, m.keep_last) for m in plan}


def describe_mask(spec: MaskSpec) -> str:
    """An operator with its options as the reports show it: `redact`, `partial(first 0, last 4)`."""
    op, first, last = spec
    return f"{op}(first {first}, last {last})" if op == "partial" else op


def _overlaps(masked: str, path: Sequence[str]) -> bool:
    """Whether a masking plan path and a selected payload path share any value: one lies
    inside the other (a plan's `*` matches any key or index)."""
    return all(m in ("*", p) for m, p in zip(masked.split("."), path, strict=False))


def _section_values(rec: DecisionRecord, section: str) -> Mapping[str, Any]:
    if section == "principal":
        return rec.kept.principal.attributes
    if section == "resource":
        return rec.kept.resource.attributes
    if section == "context":
        return rec.kept.context.attributes
    return rec.kept.payload


def _missing(reads: Iterable[Read], rec: DecisionRecord) -> list[Missing]:
    out: list[Missing] = []
    masked = rec.masked
    for read in reads:
        if read.kind != "attr" and read.kind != "payload":
            out.append(Missing(read.label, read.kind))
            continue
        name = read.path[0]
        kept = _section_values(rec, read.section)
        if name in kept:
            if read.kind == "payload" and any(_overlaps(m, read.path) for m in masked):
                out.append(Missing(read.label, "masked"))
            continue
        if read.kind == "payload":
            if rec.kept.payload_keys is None:
                out.append(Missing(read.label, "no_payload_keys"))
            elif name in rec.kept.payload_keys:
                out.append(Missing(read.label, "not_kept"))
        elif rec.kept.names is None:
            out.append(Missing(read.label, "no_attribute_names"))
        elif name in rec.kept.names[read.section]:
            out.append(Missing(read.label, "not_kept"))
        # Otherwise the request did not carry it: absent now as it was then.
    return sorted(set(out))


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One changed decision, as examples show it: ids and rule names only, never values."""

    decision_id: str
    principal_id: str
    principal_kind: str
    action: str
    resource_kind: str
    resource_id: str
    old: str
    new: str
    decided_by: tuple[str, ...]  # rules of the new bundle the new outcome came from
    old_matched: tuple[str, ...]
    masked_added: tuple[str, ...] = ()  # field paths, when the new outcome is MASK
    masked_removed: tuple[str, ...] = ()
    # (path, old operator, new operator) for paths masked before and after, but differently.
    masked_changed: tuple[tuple[str, str, str], ...] = ()
    invalid_field: str = ""  # the field the new schema rejects, for INVALID_REQUEST

    @property
    def transition(self) -> str:
        return f"{self.old} -> {self.new}"

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "principal": {"id": self.principal_id, "kind": self.principal_kind},
            "action": self.action,
            "resource": {"kind": self.resource_kind, "id": self.resource_id},
            "old": self.old,
            "new": self.new,
            "decided_by": list(self.decided_by),
            "old_matched_rules": list(self.old_matched),
            "masked_added": list(self.masked_added),
            "masked_removed": list(self.masked_removed),
            "masked_changed": [
                {"path": path, "old": old, "new": new} for path, old, new in self.masked_changed
            ],
            "invalid_field": self.invalid_field,
        }


@dataclass
class Report:
    """What replaying a set of decision records against one bundle found."""

    revision: str
    max_examples: int = DEFAULT_EXAMPLES
    total: int = 0
    replayed: int = 0
    unchanged: int = 0
    not_replayable: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    changed_ids: dict[str, list[str]] = field(default_factory=dict)
    missing: Counter[Missing] = field(default_factory=Counter)
    # rule id -> transition -> count, over the changed decisions only.
    decided_by: dict[str, Counter[str]] = field(default_factory=dict)
    old_matched: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, list[Change]] = field(default_factory=dict)
    unreplayable_examples: list[tuple[str, tuple[Missing, ...]]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())

    @property
    def change_rate(self) -> float:
        """Changed decisions as a fraction of those replayed (0 when none was)."""
        return self.changed / self.replayed if self.replayed else 0.0

    def add_change(self, change: Change) -> None:
        key = change.transition
        self.transitions[key] += 1
        self.changed_ids.setdefault(key, []).append(change.decision_id)
        for rule in change.decided_by or (NO_DECISION if change.new == INVALID else NO_RULE,):
            self.decided_by.setdefault(rule, Counter())[key] += 1
        for rule in change.old_matched or (NO_RULE,):
            self.old_matched.setdefault(rule, Counter())[key] += 1
        shown = self.examples.setdefault(key, [])
        if len(shown) < self.max_examples:
            shown.append(change)

    def add_unreplayable(self, decision_id: str, missing: Sequence[Missing]) -> None:
        self.not_replayable += 1
        self.missing.update(missing)
        if len(self.unreplayable_examples) < self.max_examples:
            self.unreplayable_examples.append((decision_id, tuple(missing)))


# --- replaying ------------------------------------------------------------------------------


class _Replayer:
    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.engine = Engine(bundle)
        self._reads: dict[tuple[str, str], frozenset[Read]] = {}

    def reads(self, kind: str, action: str) -> frozenset[Read]:
        """What the candidate rules for (kind, action) and the derived roles they name read,
        plus the principal attributes an approval takes the requester's identities from."""
        key = (kind, action)
        found = self._reads.get(key)
        if found is None:
            # Shadow rules never change the enforced verdict this compares, so their reads
            # cannot make a decision unreplayable.
            rules = [r for r in self.engine.candidates(kind, action) if not r.shadow]
            sources = [r.program.source for r in rules if r.program is not None]
            sources += [
                self.bundle.derived_roles[n].program.source for r in rules for n in r.derived_roles
            ]
            out: set[Read] = set()
            for s in dict.fromkeys(sources):
                out |= cel_reads(s)
            for r in rules:
                for name in r.approval.requester_attrs if r.approval else ():
                    out.add(Read(f"principal.attr.{name}", "attr", "principal", (name,)))
            found = self._reads[key] = frozenset(out)
        return found

    def undeclared(self, rec: DecisionRecord) -> str:
        """The first attribute the request carried that the new schema does not declare: the
        service would reject the request (by name alone, whatever its value)."""
        for section in ("principal", "resource", "context"):
            declared = self.bundle.schema.attrs(section)
            carried = set(_section_values(rec, section))
            if rec.kept.names is not None:
                carried |= rec.kept.names[section]
            for name in sorted(carried):
                if name not in declared:
                    return f"{section}.attributes.{name}"
        return ""

    def decide(self, rec: DecisionRecord) -> Decision:
        # Only kept, unmasked payload values go in: a masked one is not the caller's value
        # (and a rule reading it made the record unreplayable already).
        masked = rec.masked
        payload = {
            k: v for k, v in rec.kept.payload.items() if not any(_overlaps(m, (k,)) for m in masked)
        }
        request = Request(
            principal=rec.kept.principal,
            action=rec.kept.action,
            resource=rec.kept.resource,
            context=rec.kept.context,
            payload=payload,
            explain=True,
        )
        return self.engine.decide(request, at=rec.at)


def replay(
    records: Iterable[Mapping[str, Any]], bundle: Bundle, *, examples: int = DEFAULT_EXAMPLES
) -> Report:
    """Decide every decision record in `records` again with `bundle`, at its recorded time.

    Records of other types are skipped. A decision is replayed only when the record keeps
    everything the candidate rules read; otherwise it is counted as not replayable, with what
    is missing. Raises MalformedRecord for a decision record of the wrong shape.
    """
    report = Report(bundle.revision, max_examples=examples)
    replayer = _Replayer(bundle)
    for index, record in enumerate(records, start=1):
        if record.get("type") != "decision":
            continue
        rec = DecisionRecord.parse(record, index)
        recorded = None if rec.masking is None else plan_specs(rec.masking)
        report.total += 1
        new, decided_by, plan, invalid = _new_outcome(replayer, rec, report)
        if not new:
            continue
        report.replayed += 1
        old, mask = rec.policy_verdict.name, Verdict.MASK.name
        # A MASK is compared by its operators and their options too; records from before
        # `masking` keep only the masked paths, so those are compared by path alone.
        masked = rec.masked
        before = masked if old == mask else frozenset()
        differ: tuple[tuple[str, str, str], ...] = ()
        if new == mask and old == mask and recorded is not None:
            differ = tuple(
                (path, describe_mask(recorded[path]), describe_mask(plan[path]))
                for path in sorted(before & plan.keys())
                if path in recorded and recorded[path] != plan[path]
            )
        if new == old and (new != mask or (plan.keys() == masked and not differ)):
            report.unchanged += 1
            continue
        report.add_change(
            Change(
                decision_id=rec.decision_id,
                principal_id=rec.kept.principal.id,
                principal_kind=rec.kept.principal.kind.value,
                action=rec.kept.action,
                resource_kind=rec.kept.resource.kind,
                resource_id=rec.kept.resource.id,
                old=old,
                new=new,
                decided_by=decided_by,
                old_matched=rec.matched_rules,
                masked_added=tuple(sorted(plan.keys() - before)) if new == mask else (),
                masked_removed=tuple(sorted(before - plan.keys())) if new == mask else (),
                masked_changed=differ,
                invalid_field=invalid,
            )
        )
    return report


def _new_outcome(
    replayer: _Replayer, rec: DecisionRecord, report: Report
) -> tuple[str, tuple[str, ...], dict[str, MaskSpec], str]:
    """(new outcome, deciding rules, masking plan by path, rejected field); outcome "" when
    the record is not replayable (then counted in `report`)."""
    invalid = replayer.undeclared(rec)
    if invalid:
        return INVALID, (), {}, invalid
    missing = _missing(replayer.reads(rec.kept.resource.kind, rec.kept.action), rec)
    if missing:
        report.add_unreplayable(rec.decision_id, missing)
        return "", (), {}, ""
    try:
        decision = replayer.decide(rec)
    except InvalidRequest as exc:
        return INVALID, (), {}, exc.field
    explanation = decision.explanation
    decided_by = explanation.decided_by if explanation is not None else decision.matched_rules
    # The same form as the record's `masking`, so the two compare.
    plan = plan_specs(decision.masking_plan)
    return decision.verdict.name, decided_by, plan, ""


# --- reading the export ---------------------------------------------------------------------


class DecisionFile:
    """The JSON lines of `signoff audit export`, read lazily; `line` is the last line read."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.name = name
        self.line = 0
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for number, raw in enumerate(self._stream, start=1):
            self.line = number
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("not valid UTF-8") from None
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise self.error(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(value, dict):
                raise self.error("not a JSON object")
            yield value

    def error(self, message: str) -> ReplayInputError:
        return ReplayInputError(f"{self.name}:{self.line}: {message}")


# --- the command ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How many changes (and unreplayable decisions) a rollout may bring before it fails."""

    max_changes: int | None = None
    max_change_rate: float | None = None
    max_unreplayable: int | None = None

    def exceeded(self, report: Report) -> list[str]:
        out = []
        # Without any change budget nothing may change; with only a rate, only the rate counts.
        limit = self.max_changes
        if limit is None and self.max_change_rate is None:
            limit = 0
        if limit is not None and report.changed > limit:
            out.append(f"{report.changed} changed decision(s) > --max-changes {limit}")
        rate = self.max_change_rate
        if rate is not None and report.change_rate > rate:
            out.append(f"change rate {report.change_rate:.4f} > --max-change-rate {rate}")
        cap = self.max_unreplayable
        if cap is not None and report.not_replayable > cap:
            out.append(f"{report.not_replayable} not replayable > --max-unreplayable {cap}")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "max_changes": self.max_changes,
            "max_change_rate": self.max_change_rate,
            "max_unreplayable": self.max_unreplayable,
        }


def report_json(
    report: Report,
    budget: Budget,
    exceeded: Sequence[str],
    code: int,
    *,
    decisions: str = "",
    rules: str = "",
) -> dict[str, Any]:
    """The report as `--json` prints it."""
    return {
        "decisions": decisions,
        "rules": rules,
        "revision": report.revision,
        "total": report.total,
        "replayed": report.replayed,
        "not_replayable": report.not_replayable,
        "unchanged": report.unchanged,
        "changed": report.changed,
        "change_rate": report.change_rate,
        "transitions": {
            key: {"count": count, "decision_ids": report.changed_ids[key]}
            for key, count in sorted(report.transitions.items())
        },
        "not_replayable_by_attribute": [
            {"attribute": m.attribute, "why": m.why, "count": n}
            for m, n in sorted(report.missing.items())
        ],
        "rules_changed": {
            "decided_by": {
                k: dict(sorted(v.items())) for k, v in sorted(report.decided_by.items())
            },
            "old_matched": {
                k: dict(sorted(v.items())) for k, v in sorted(report.old_matched.items())
            },
        },
        "examples": {
            key: [c.as_json() for c in shown] for key, shown in sorted(report.examples.items())
        },
        "not_replayable_examples": [
            {"decision_id": d, "missing": [m.attribute for m in missing]}
            for d, missing in report.unreplayable_examples
        ],
        "budget": {**budget.as_json(), "exceeded": list(exceeded)},
        "exit_code": code,
    }


_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\U0010ffff]|[\u2028\u2029\u202a-\u202e]")


def _safe(text: str) -> str:
    """Ids come from callers: escape control characters so they cannot rewrite the terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _by_transition(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))


def write_text(
    report: Report, exceeded: Sequence[str], out: IO[str], *, decisions: str = "", rules: str = ""
) -> None:
    """The report for people: counts first, then rules, then examples (ids, never values)."""
    w = out.write
    w(
        f"signoff replay: {report.total} decision record(s) from {_safe(decisions)} against "
        f"{_safe(rules)} (revision {report.revision[:12]})\n"
    )
    w(f"  replayed:       {report.replayed}\n")
    w(f"  not replayable: {report.not_replayable}\n")
    w(f"  unchanged:      {report.unchanged}\n")
    w(f"  changed:        {report.changed} ({report.change_rate:.1%} of replayed)\n")
    if report.transitions:
        w("\nChanged, by transition:\n")
        for key, n in sorted(report.transitions.items()):
            note = " (masked fields differ)" if key == "MASK -> MASK" else ""
            w(f"  {key}: {n}{note}\n")
    if report.missing:
        w("\nNot replayable, by attribute the rules read:\n")
        for m, n in sorted(report.missing.items()):
            w(f"  {_safe(m.attribute)}: {n} ({WHY.get(m.why, m.why)})\n")
    if report.decided_by:
        w("\nRules of the new bundle deciding the changed decisions:\n")
        for rule, counts in sorted(report.decided_by.items()):
            w(f"  {rule}: {sum(counts.values())} ({_by_transition(counts)})\n")
        w("Rules the changed decisions had matched:\n")
        for rule, counts in sorted(report.old_matched.items()):
            w(f"  {rule}: {sum(counts.values())} ({_by_transition(counts)})\n")
    if report.examples:
        w(f"\nExamples (up to {report.max_examples} per transition; values are never shown):\n")
        for key, shown in sorted(report.examples.items()):
            w(f"  {key}\n")
            for c in shown:
                w(f"    {_example(c)}\n")
    if report.unreplayable_examples:
        w("\nNot replayable, for example:\n")
        for decision_id, missing in report.unreplayable_examples:
            w(f"    {_safe(decision_id)}: {', '.join(_safe(m.attribute) for m in missing)}\n")
    w("\n")
    if exceeded:
        for line in exceeded:
            w(f"over budget: {line}\n")
    else:
        w("within budget\n")


def _example(c: Change) -> str:
    text = (
        f"{_safe(c.decision_id)}  {c.principal_kind} {_safe(c.principal_id)}  "
        f"{_safe(c.action)} {_safe(c.resource_kind)}/{_safe(c.resource_id)}"
    )
    if c.invalid_field:
        text += f"  rejected: {_safe(c.invalid_field)}"
    else:
        text += f"  decided by {', '.join(c.decided_by) or NO_RULE}"
    text += f"; was {', '.join(c.old_matched) or NO_RULE}"
    if c.masked_added:
        text += f"; now masked {', '.join(_safe(p) for p in c.masked_added)}"
    if c.masked_removed:
        text += f"; no longer masked {', '.join(_safe(p) for p in c.masked_removed)}"
    if c.masked_changed:
        shown = (f"{_safe(p)} {old} -> {new}" for p, old, new in c.masked_changed)
        text += f"; masked differently {', '.join(shown)}"
    return text
