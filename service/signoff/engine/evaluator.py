"""Decides one request against a compiled bundle: index, evaluate, combine, fail closed."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from signoff.engine.cel import Backend, CelEvalError, Program, Programs
from signoff.engine.celscan import CLOCK_FREE, clock_steady_for
from signoff.engine.compiled import ANY_ROLE, Bundle, CompiledPolicy, CompiledRule, DerivedRole
from signoff.engine.model import (
    ApprovalRequirement,
    Decision,
    Explanation,
    FieldMask,
    FieldRef,
    MaskOp,
    PrincipalKind,
    Request,
    RuleOutcome,
    RuleTrace,
    ShadowOutcome,
    Verdict,
    merge_labels,
)
from signoff.engine.schema import SECTIONS, section_converter, text
from signoff.identities import is_blank_identity

NO_MATCH = "no_matching_rule"
EVALUATION_ERROR = "evaluation_error"
REQUESTER_IDENTITY_MISSING = "requester_identity_missing"
HUMAN = PrincipalKind.HUMAN
Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# A rule for the combined evaluation: the rule, the index of its condition's value (-1: it has
# none), and for each derived role it names, the role's parent roles and its condition's index.
_FastRule = tuple[CompiledRule, int, tuple[tuple[frozenset[str], int], ...]]


class _Fast(NamedTuple):
    """Every condition the candidates of one (kind, action) can need, derived roles' too, as
    one program: one call of the runtime instead of one per rule."""

    programs: Programs | None  # None: no rule has a condition
    rules: tuple[_FastRule, ...]  # enforced, strongest first
    shadow: tuple[_FastRule, ...]
    # Decisions that depend on nothing but which enforced rules matched (by position).
    combined: dict[tuple[int, ...], Decision]


# Distinct sets of matched rules remembered per (kind, action); a few in practice.
_MAX_COMBINED = 256


class _Candidates(NamedTuple):
    every: tuple[CompiledRule, ...]  # enforced and shadow, strongest first
    rules: tuple[CompiledRule, ...]  # enforced
    shadow: tuple[CompiledRule, ...]  # audit only
    # For how long the time of a decision cannot change its outcome (see clock_steady_for).
    steady_for: float
    fast: _Fast | None  # None: the conditions could not be combined; evaluate rule by rule


class _Index:
    """Candidate rules per (resource kind, action), so a request evaluates only what can apply."""

    def __init__(
        self,
        policies: Iterable[CompiledPolicy],
        derived_roles: Mapping[str, DerivedRole],
        backend: Backend | None = None,
        max_entries: int = 8192,
    ) -> None:
        self._backend = backend
        self._exact: dict[str, list[CompiledPolicy]] = {}
        self._globbed: list[CompiledPolicy] = []
        for policy in policies:
            if all(g.exact for g in policy.resources):
                for g in policy.resources:
                    self._exact.setdefault(g.pattern, []).append(policy)
            else:
                self._globbed.append(policy)
        self._derived = derived_roles
        self._cache: dict[tuple[str, str], _Candidates] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def lookup(self, kind: str, action: str) -> _Candidates:
        key = (kind, action)
        found = self._cache.get(key)
        if found is not None:
            return found
        policies = {id(p): p for p in self._exact.get(kind, ())}
        for p in self._globbed:
            if any(g.matches(kind) for g in p.resources):
                policies[id(p)] = p
        rules = [
            rule
            for p in policies.values()
            if any(g.matches(action) for g in p.actions)
            for rule in p.rules
        ]
        ordered = sorted(rules, key=lambda r: r.sort_key)
        enforced = tuple(r for r in ordered if not r.shadow)
        shadow = tuple(r for r in ordered if r.shadow)
        result = _Candidates(
            tuple(ordered), enforced, shadow, self._clock(rules), self._fast(enforced, shadow)
        )
        with self._lock:
            # Bounded so a caller inventing kinds or actions cannot grow memory without limit.
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _fast(
        self, enforced: tuple[CompiledRule, ...], shadow: tuple[CompiledRule, ...]
    ) -> _Fast | None:
        if self._backend is None:
            return None
        programs: list[Program] = []
        where: dict[int, int] = {}

        def index(program: Program) -> int:
            # One condition shared by several rules (or derived roles) is evaluated once.
            key = id(program)
            if key not in where:
                where[key] = len(programs)
                programs.append(program)
            return where[key]

        def entry(rule: CompiledRule) -> _FastRule:
            cond = -1 if rule.program is None else index(rule.program)
            roles = tuple(
                (self._derived[n].parent_roles, index(self._derived[n].program))
                for n in rule.derived_roles
            )
            return rule, cond, roles

        fast_rules = tuple(entry(r) for r in enforced)
        fast_shadow = tuple(entry(r) for r in shadow)
        combined = None
        if programs:
            combined = self._backend.compile_many([p.source for p in programs])
            if combined is None:
                return None
        return _Fast(combined, fast_rules, fast_shadow, {})

    def _clock(self, rules: Iterable[CompiledRule]) -> float:
        programs = [r.program for r in rules if r.program is not None]
        programs += [self._derived[n].program for r in rules for n in r.derived_roles]
        return min((clock_steady_for(p.source) for p in programs), default=CLOCK_FREE)


class Engine:
    """Evaluates requests against one immutable bundle; safe to share between threads."""

    def __init__(
        self, bundle: Bundle, clock: Clock | None = None, *, combined: bool = True
    ) -> None:
        """`combined=False` evaluates rule by rule only (the reference the combined
        evaluation is tested against)."""
        self.bundle = bundle
        self._clock = clock or system_clock
        self._index = _Index(
            bundle.policies, bundle.derived_roles, bundle.backend if combined else None
        )
        self._sections = {s: section_converter(bundle.schema, s) for s in SECTIONS}
        self._plans = _Plans() if combined else None
        self._declared_payload = bundle.schema.attrs("payload")

    def candidates(self, kind: str, action: str) -> tuple[CompiledRule, ...]:
        """Every rule that applies to (kind, action), enforced and shadow, strongest first."""
        return self._index.lookup(kind, action).every

    def steady_for(self, kind: str, action: str) -> float:
        """How many seconds of UTC time, counted from the epoch in equal steps, a decision on
        (kind, action) stays the same for: CLOCK_FREE if time never matters, 0 if it may
        change at any moment."""
        return self._index.lookup(kind, action).steady_for

    def now(self) -> dt.datetime:
        return self._clock()

    def activation_data(self, request: Request, at: dt.datetime | None = None) -> dict[str, Any]:
        """The CEL variables for `request` decided at `at` (default: now); raises
        InvalidRequest on undeclared or mistyped data."""
        sections = self._sections
        p, r, c = request.principal, request.resource, request.context
        _plain_text(request)
        context: dict[str, Any] = {
            "environment": c.environment,
            "source_ip": c.source_ip,
            "attr": sections["context"](c.attributes, "context.attributes"),
        }
        if c.time is not None:
            context["time"] = c.time
        declared_payload = self._declared_payload
        payload = {k: v for k, v in request.payload.items() if k in declared_payload}
        principal_attr = sections["principal"](p.attributes, "principal.attributes")
        resource_attr = sections["resource"](r.attributes, "resource.attributes")
        if r.fields:
            fields = [{"path": f.path, "tags": list(f.tags)} for f in r.fields]
            tags = sorted({t for f in r.fields for t in f.tags})
            paths = [f.path for f in r.fields]
        else:
            fields, tags, paths = [], [], []
        return {
            "principal": {
                "id": p.id,
                "kind": p.kind.value,
                "roles": list(p.roles),
                "attr": principal_attr,
            },
            "action": request.action,
            "resource": {
                "kind": r.kind,
                "id": r.id,
                "attr": resource_attr,
                "fields": fields,
                "tags": tags,
                "paths": paths,
            },
            "context": context,
            "payload": sections["payload"](payload, "payload"),
            "now": at or self._clock(),
        }

    def decide(self, request: Request, at: dt.datetime | None = None) -> Decision:
        """The verdict for `request` at time `at` (default: now). Raises InvalidRequest for
        malformed input only."""
        data = self.activation_data(request, at)
        found = self._index.lookup(request.resource.kind, request.action)
        rules = found.rules
        revision = self.bundle.revision
        if not rules and not found.shadow and not request.explain:
            return Decision(Verdict.DENY, revision, reasons=(NO_MATCH,))
        try:
            activation = self.bundle.backend.activation(data)
        except Exception:
            # Validated data the backend still cannot take: no rule can be evaluated, so
            # every enforced candidate failed to evaluate (fail closed, like any CEL error).
            if not rules:
                return Decision(Verdict.DENY, revision, reasons=(NO_MATCH,))
            return Decision(
                Verdict.DENY,
                revision,
                reasons=(EVALUATION_ERROR,),
                errored_rules=tuple(sorted(r.rule_id for r in rules)),
            )
        roles = frozenset(request.principal.roles)
        fast = found.fast
        if fast is not None and not request.explain:
            values = () if fast.programs is None else fast.programs.evaluate(activation)
            if values is not None:
                return self._decide_fast(fast, values, roles, request, data)
        return self._decide_by_rule(found, roles, request, data, activation)

    def _decide_fast(
        self,
        fast: _Fast,
        values: tuple[bool, ...],
        roles: frozenset[str],
        request: Request,
        data: dict[str, Any],
    ) -> Decision:
        """The decision from every condition's value, all of which evaluated without error:
        the same walk as `_decide_by_rule`, which then meets no error."""
        matched: list[CompiledRule] = []
        which: list[int] = []
        deny = False
        for position, entry in enumerate(fast.rules):
            rule = entry[0]
            if deny and rule.effect is not Verdict.DENY:
                break  # rules are sorted strongest first: nothing weaker can change a DENY
            if _fast_holds(entry, values, roles):
                matched.append(rule)
                which.append(position)
                deny = deny or rule.effect is Verdict.DENY
        revision = self.bundle.revision
        attrs = data["principal"]["attr"]
        key = tuple(which)
        decision = fast.combined.get(key)
        if decision is None:
            decision = _combine(revision, matched, [], request, attrs, self._plans)
            # Without a mask or an approval (or with a deny, which ends before either), the
            # decision is a function of the matched rules alone: kept, and shared.
            if (deny or all(r.effect is Verdict.ALLOW for r in matched)) and len(
                fast.combined
            ) < _MAX_COMBINED:
                fast.combined[key] = decision
        if not fast.shadow:
            return decision
        hit = [e[0] for e in fast.shadow if _fast_holds(e, values, roles)]
        would = _combine(revision, [*matched, *hit], [], request, attrs, self._plans)
        return replace(
            decision,
            shadow=ShadowOutcome(
                would.verdict, tuple(sorted(r.rule_id for r in hit)), (), would.reasons
            ),
        )

    def _decide_by_rule(
        self,
        found: _Candidates,
        roles: frozenset[str],
        request: Request,
        data: dict[str, Any],
        activation: Any,
    ) -> Decision:
        """The decision, evaluating rule by rule: exact errors and the explanation."""
        rules = found.rules
        revision = self.bundle.revision
        derived: dict[str, bool | CelEvalError] = {}
        matched: list[CompiledRule] = []
        errored: list[str] = []
        trace: list[RuleTrace] | None = [] if request.explain else None
        for index, rule in enumerate(rules):
            if rule.effect is not Verdict.DENY and (errored or _has_deny(matched)):
                if trace is not None:
                    trace += self._explain(rules[index:], roles, derived, activation)
                break  # rules are sorted strongest first: nothing weaker can change a DENY
            try:
                if self._holds(rule, roles, derived, activation):
                    matched.append(rule)
            except CelEvalError:
                errored.append(rule.rule_id)
            if trace is not None:
                trace += self._explain((rule,), roles, derived, activation, counted=True)
        attrs = data["principal"]["attr"]
        decision = _combine(revision, matched, errored, request, attrs)
        if found.shadow:
            decision = replace(
                decision,
                shadow=self._shadow(
                    found.shadow, matched, errored, request, attrs, roles, derived, activation
                ),
            )
        if trace is None:
            return decision
        if found.shadow:
            trace += self._explain(found.shadow, roles, derived, activation, shadow=True)
        return replace(
            decision, explanation=Explanation(tuple(trace), _decided_by(decision, trace))
        )

    def _shadow(
        self,
        shadow: tuple[CompiledRule, ...],
        matched: list[CompiledRule],
        errored: list[str],
        request: Request,
        principal_attrs: dict[str, Any],
        roles: frozenset[str],
        derived: dict[str, bool | CelEvalError],
        activation: Any,
    ) -> ShadowOutcome:
        """The verdict with the shadow rules enforced too. Every shadow rule is evaluated (no
        early exit), so the record says exactly which would have matched. Derived roles the
        enforced rules already settled (`derived`) are not evaluated again."""
        hit: list[CompiledRule] = []
        failed: list[str] = []
        for rule in shadow:
            try:
                if self._holds(rule, roles, derived, activation):
                    hit.append(rule)
            except CelEvalError:
                failed.append(rule.rule_id)
        would = _combine(
            self.bundle.revision, [*matched, *hit], [*errored, *failed], request, principal_attrs
        )
        return ShadowOutcome(
            would.verdict,
            tuple(sorted(r.rule_id for r in hit)),
            tuple(sorted(failed)),
            would.reasons,
        )

    def _selected(
        self,
        rule: CompiledRule,
        roles: frozenset[str],
        derived: dict[str, bool | CelEvalError],
        activation: Any,
    ) -> bool | CelEvalError:
        """Whether the principal holds one of the rule's roles: True if any role holds, in
        whatever order they are listed or named; an error only when no role holds and a
        derived role failed to evaluate; False otherwise."""
        if not (rule.static_roles or rule.derived_roles):
            return True
        if _holds_static(rule.static_roles, roles):
            return True
        failed: CelEvalError | None = None
        for name in rule.derived_roles:
            held = self._derived(name, roles, derived, activation)
            if held is True:
                return True
            if isinstance(held, CelEvalError):
                failed = failed or held
        return failed if failed is not None else False

    def _holds(
        self,
        rule: CompiledRule,
        roles: frozenset[str],
        derived: dict[str, bool | CelEvalError],
        activation: Any,
    ) -> bool:
        """Roles and condition, combined as CEL's `&&` is: false on either side wins over an
        error on the other, so an error in a derived role cannot deny a request whose
        condition rules the rule out, whichever is written first. Raises CelEvalError."""
        selected = self._selected(rule, roles, derived, activation)
        if selected is False:
            return False
        if rule.program is not None and not rule.program.evaluate(activation):
            return False
        if isinstance(selected, CelEvalError):
            raise selected
        return True

    def _explain(
        self,
        rules: Iterable[CompiledRule],
        roles: frozenset[str],
        derived: dict[str, bool | CelEvalError],
        activation: Any,
        *,
        counted: bool = False,
        shadow: bool = False,
    ) -> list[RuleTrace]:
        """Each rule's outcome, for a caller who asked; evaluates again what the decision did
        (explaining is not the hot path) and whatever it skipped."""
        out = []
        for rule in rules:
            error = ""
            selected = self._selected(rule, roles, derived, activation)
            try:
                if selected is False:
                    outcome = RuleOutcome.ROLE_NOT_HELD
                elif rule.program is not None and not rule.program.evaluate(activation):
                    outcome = RuleOutcome.NOT_MATCHED
                elif isinstance(selected, CelEvalError):
                    outcome, error = RuleOutcome.ERROR, str(selected)
                else:
                    outcome = RuleOutcome.MATCHED
            except CelEvalError as exc:
                outcome, error = RuleOutcome.ERROR, str(exc)
            out.append(
                RuleTrace(
                    rule.rule_id,
                    rule.effect,
                    outcome,
                    condition=rule.program.source if rule.program is not None else "",
                    roles=tuple(sorted(rule.static_roles)) + rule.derived_roles,
                    error=error,
                    counted=counted,
                    shadow=shadow,
                )
            )
        return out

    def holds_derived(self, name: str, roles: frozenset[str], activation: Any) -> bool:
        """Whether the principal holding `roles` holds derived role `name` in `activation`;
        raises CelEvalError when its condition fails."""
        held = self._derived(name, roles, {}, activation)
        if isinstance(held, CelEvalError):
            raise held
        return held

    def _derived(
        self,
        name: str,
        roles: frozenset[str],
        memo: dict[str, bool | CelEvalError],
        activation: Any,
    ) -> bool | CelEvalError:
        """The derived role's value, its evaluation error as a value, memoised per decision."""
        if name not in memo:
            role = self.bundle.derived_roles[name]
            if role.parent_roles and not _holds_static(role.parent_roles, roles):
                memo[name] = False
            else:
                try:
                    memo[name] = role.program.evaluate(activation)
                except CelEvalError as exc:
                    memo[name] = CelEvalError(f"derived role {name}: {exc}")
        return memo[name]


def _fast_holds(entry: _FastRule, values: tuple[bool, ...], roles: frozenset[str]) -> bool:
    """`Engine._holds` from conditions already evaluated (none failed)."""
    rule, cond, derived = entry
    selected = (
        not (rule.static_roles or derived)
        or _holds_static(rule.static_roles, roles)
        or any(
            values[i] and (not parents or _holds_static(parents, roles)) for parents, i in derived
        )
    )
    return selected and (cond < 0 or values[cond])


def _holds_static(wanted: frozenset[str], held: frozenset[str]) -> bool:
    """A listed role is held, or `*` is listed and the principal holds any role at all."""
    return bool(wanted & held) or (ANY_ROLE in wanted and bool(held))


def _plain_text(request: Request) -> None:
    """Refuse NUL in the request's own strings (attributes are checked by the schema)."""
    p, r, c = request.principal, request.resource, request.context
    # One membership test over every string on the hot path; each is looked at, and the
    # field named, only when a NUL is somewhere.
    joined = "".join((p.id, request.action, r.kind, r.id, c.environment, c.source_ip, *p.roles))
    if "\0" not in joined and not r.fields:
        return
    for where, value in (
        ("principal.id", p.id),
        ("action", request.action),
        ("resource.kind", r.kind),
        ("resource.id", r.id),
        ("context.environment", c.environment),
        ("context.source_ip", c.source_ip),
    ):
        if "\0" in value:
            text(value, where)
    for i, role in enumerate(p.roles):
        if "\0" in role:
            text(role, f"principal.roles[{i}]")
    for i, f in enumerate(r.fields):
        if "\0" in f.path:
            text(f.path, f"resource.fields[{i}].path")
        for t in f.tags:
            if "\0" in t:
                text(t, f"resource.fields[{i}].tags")


def _decided_by(decision: Decision, trace: list[RuleTrace]) -> tuple[str, ...]:
    counted = [t for t in trace if t.counted]
    if decision.verdict is Verdict.DENY:
        failed = [
            t.rule_id
            for t in counted
            if t.outcome is RuleOutcome.ERROR
            or (t.outcome is RuleOutcome.MATCHED and t.effect is Verdict.DENY)
        ]
        # Otherwise: no rule matched (default deny), or an approval nobody may grant.
        return tuple(sorted(failed)) if failed else decision.matched_rules
    return tuple(
        sorted(
            t.rule_id
            for t in counted
            if t.outcome is RuleOutcome.MATCHED and t.effect is decision.verdict
        )
    )


def _has_deny(matched: list[CompiledRule]) -> bool:
    return any(r.effect is Verdict.DENY for r in matched)


def _combine(
    revision: str,
    matched: list[CompiledRule],
    errored: list[str],
    request: Request,
    principal_attrs: dict[str, Any],
    plans: _Plans | None = None,
) -> Decision:
    ids = tuple(sorted(r.rule_id for r in matched))
    denies = [r for r in matched if r.effect is Verdict.DENY]
    if errored or denies:
        reasons = [
            r.reason or f"denied by {r.rule_id}" for r in sorted(denies, key=lambda r: r.rule_id)
        ]
        if errored:
            reasons.append(EVALUATION_ERROR)
        return Decision(
            Verdict.DENY,
            revision,
            matched_rules=ids,
            reasons=tuple(dict.fromkeys(reasons)),
            errored_rules=tuple(sorted(errored)),
        )
    if not matched:
        return Decision(Verdict.DENY, revision, reasons=(NO_MATCH,))
    verdict = max(r.effect for r in matched)
    masks = [r for r in matched if r.effect is Verdict.MASK]
    if plans is None or not masks:
        plan = masking_plan(masks, request)
    else:
        plan = plans.plan(masks, request)
    approval = merge_approvals([r.approval for r in matched if r.approval is not None])
    if approval is not None and verdict is Verdict.REQUIRE_APPROVAL:
        declared = declared_identities(approval.requester_attrs, principal_attrs)
        if approval.requester_attrs and not declared and request.principal.kind is not HUMAN:
            # An agent or service acts for someone, who must be known or could approve its
            # request: leaving the owner out cannot switch the self-approval rule off.
            return Decision(
                Verdict.DENY,
                revision,
                matched_rules=ids,
                reasons=(REQUESTER_IDENTITY_MISSING,),
            )
        own = tuple(sorted({request.principal.id, *declared}))
        approval = replace(approval, requester_ids=own)
    because = tuple(
        dict.fromkeys(
            r.reason
            for r in sorted(matched, key=lambda r: r.rule_id)
            if r.effect is verdict and r.reason
        )
    )
    return Decision(
        verdict,
        revision,
        matched_rules=ids,
        reasons=because,
        masking_plan=plan,
        approval=approval if verdict is Verdict.REQUIRE_APPROVAL else None,
    )


class _Plans:
    """Masking plans of one bundle, by the masking rules that matched and the request's
    fields: the plan is a function of both alone, and repeats as requests do."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._plans: dict[tuple[tuple[str, ...], tuple[FieldRef, ...]], tuple[FieldMask, ...]]
        self._plans = {}
        self._max = max_entries

    def plan(self, rules: list[CompiledRule], request: Request) -> tuple[FieldMask, ...]:
        # Rule ids are unique within the bundle this cache belongs to.
        key = (tuple(r.rule_id for r in rules), request.resource.fields)
        found = self._plans.get(key)
        if found is None:
            found = masking_plan(rules, request)
            if len(self._plans) >= self._max:
                self._plans.clear()  # bounded: a caller inventing fields cannot grow it
            self._plans[key] = found
        return found


def masking_plan(rules: list[CompiledRule], request: Request) -> tuple[FieldMask, ...]:
    """Per request field, the strictest mask any matched rule asks for."""
    plan: dict[str, FieldMask] = {}
    for rule in rules:
        for spec in rule.masks:
            for f in request.resource.fields:
                hit = any(g.matches(f.path) for g in spec.paths) or any(
                    g.matches(t) for g in spec.tags for t in f.tags
                )
                if not hit:
                    continue
                new = FieldMask(f.path, spec.op, spec.keep_first, spec.keep_last, (rule.rule_id,))
                plan[f.path] = _stricter(plan.get(f.path), new)
    return tuple(plan[k] for k in sorted(plan))


def _stricter(old: FieldMask | None, new: FieldMask) -> FieldMask:
    if old is None:
        return new
    rule_ids = tuple(sorted(set(old.rule_ids) | set(new.rule_ids)))
    if old.op is new.op:
        if old.op is MaskOp.PARTIAL:
            # Fewer characters revealed is stricter, on each end independently.
            return FieldMask(
                old.path,
                old.op,
                min(old.keep_first, new.keep_first),
                min(old.keep_last, new.keep_last),
                rule_ids,
            )
        return FieldMask(old.path, old.op, rule_ids=rule_ids)
    winner = old if old.op > new.op else new
    return FieldMask(winner.path, winner.op, winner.keep_first, winner.keep_last, rule_ids)


def declared_identities(attrs: tuple[str, ...], principal_attrs: dict[str, Any]) -> set[str]:
    """The identities the policy says are the principal's own (e.g. an agent's owner)."""
    found: set[str] = set()
    for name in attrs:
        value = principal_attrs.get(name)
        for v in value if isinstance(value, list) else [value]:
            # An owner that is blank once invisible characters are gone names nobody: it would
            # switch the self-approval rule off as surely as leaving the owner out.
            if isinstance(v, str) and not is_blank_identity(v):
                found.add(v)
    return found


def merge_approvals(reqs: list[ApprovalRequirement]) -> ApprovalRequirement | None:
    """The strictest combination: every approver set, the largest quorum, the shortest windows."""
    if not reqs:
        return None
    sets = sorted({s for r in reqs for s in r.approvers}, key=lambda s: (s.roles, s.groups))
    return ApprovalRequirement(
        approvers=tuple(sets),
        quorum=max(r.quorum for r in reqs),
        pending_ttl=min(r.pending_ttl for r in reqs),
        grant_ttl=min(r.grant_ttl for r in reqs),
        rule_ids=tuple(sorted({i for r in reqs for i in r.rule_ids})),
        requester_attrs=tuple(sorted({a for r in reqs for a in r.requester_attrs})),
        labels=merge_labels([r.labels for r in reqs]),
    )
