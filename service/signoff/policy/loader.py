"""Loads `rules/` into a compiled Bundle, reporting every problem at once with its position."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from signoff.engine import cel, celscan
from signoff.engine.compiled import (
    ANY_ROLE,
    Bundle,
    CompiledPolicy,
    CompiledRule,
    DerivedRole,
    Glob,
    MaskSpec,
)
from signoff.engine.model import ApprovalRequirement, ApproverSet, MaskOp, Verdict
from signoff.engine.schema import SECTIONS, AttributeSchema, parse_duration
from signoff.errors import PolicyError, Problem
from signoff.policy import expand, model, source

# Where they were before the policy-as-written model; signed bundles and reloads use them.
DEFAULT_PENDING_TTL = dt.timedelta(hours=1)
DEFAULT_GRANT_TTL = dt.timedelta(minutes=15)
_EFFECTS = {
    "allow": Verdict.ALLOW,
    "deny": Verdict.DENY,
    "mask": Verdict.MASK,
    "require_approval": Verdict.REQUIRE_APPROVAL,
}
_OPS = {op.name.lower(): op for op in MaskOp}
# The checker names its synthetic message types; policy authors know them as CEL paths.
_FRIENDLY = {
    f"struct 'signoff.celtypes.{section.title()}Attributes'": f"{section}.attr"
    for section in ("principal", "resource", "context")
} | {
    "struct 'signoff.celtypes.PayloadAttributes'": "payload (declare it under schema.payload)",
    "struct 'signoff.celtypes.Principal'": "principal",
    "struct 'signoff.celtypes.Resource'": "resource",
    "struct 'signoff.celtypes.Context'": "context",
}


def revision_of(rules_dir: Path, contents: dict[Path, bytes]) -> str:
    """SHA-256 over every file's relative name and bytes: the bundle's identity. The bytes are
    those that were parsed, so a file changing during a load cannot lend its new revision to
    what was compiled from the old."""
    digest = hashlib.sha256()
    for path, data in contents.items():
        name = path.relative_to(rules_dir).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@dataclass
class _Context:
    """Problems found so far and the shared compile machinery."""

    backend: cel.Backend
    problems: list[Problem] = field(default_factory=list)
    checker: cel.Checker | None = None
    # Type-check and compile results by (expanded text, condition): bundles repeat conditions
    # (the same guard in many policies), and both results depend on the text alone.
    _compiled: dict[tuple[str, bool], cel.Program | list[cel.CelIssue]] = field(
        default_factory=dict
    )

    def add(self, src: source.SourceFile, path: source.Path_, rule_id: str, msg: str) -> None:
        pos = src.position(path)
        self.problems.append(Problem(src.name, pos.line, pos.column, rule_id, msg))

    def compile(
        self,
        src: source.SourceFile,
        path: source.Path_,
        rule_id: str,
        text: str,
        variables: dict[str, str] | None = None,
        *,
        condition: bool = True,
    ) -> cel.Program | None:
        """Expand, type-check and compile one condition; record problems and return None.
        `variables` None: the text may not use policy variables (a derived role's)."""
        assert self.checker is not None
        try:
            expansion = expand.expand(text, (variables or {}).get)
        except expand.UnknownVariable as exc:
            pos = src.scalar_locator(path).locate(exc.offset)
            message = (
                f"unknown variable V.{exc.name}"
                if variables is not None
                else f"V.{exc.name}: derived roles cannot read policy variables (each policy's "
                "variables are its own); write the expression in the derived role"
            )
            self.problems.append(Problem(src.name, pos.line, pos.column, rule_id, message))
            return None
        key = (expansion.text, condition)
        result = self._compiled.get(key)
        if result is None:
            try:
                self.checker.check(expansion.text, condition=condition)
                result = self.backend.compile(expansion.text)
            except cel.CelCompileError as exc:
                result = exc.issues
            self._compiled[key] = result
        if isinstance(result, list):
            locator = src.scalar_locator(path)
            for issue in result:
                offset = expansion.original_offset(expansion.offset_of(issue.line, issue.column))
                pos = locator.locate(offset)
                message = _friendly(issue.message)
                self.problems.append(Problem(src.name, pos.line, pos.column, rule_id, message))
            return None
        return result


def _friendly(message: str) -> str:
    """The checker's message in the words of a policy author."""
    if message.startswith("undeclared reference to 'now'"):
        return "`now` is a variable (the time of the decision), not a function: write `now`"
    for raw, friendly in _FRIENDLY.items():
        message = message.replace(raw, friendly)
    return message


def _role_problems(names: Sequence[str]) -> list[tuple[int, str]]:
    """Role names are matched exactly; a lone `*` (any role) is the one pattern."""
    return [
        (k, f"role {name!r}: role names are matched exactly; only a lone '*' means any role")
        for k, name in enumerate(names)
        if name != ANY_ROLE and any(ch in name for ch in "*?[")
    ]


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    A large bundle allocates millions of acyclic objects (parse trees, compiled rules), and
    each 700 allocations start a collection that finds nothing: a third of the load time for
    10,000 rules. Reference counting still frees everything as usual; any cyclic garbage
    waits for the first collection after the load. Overlapping loads resume it once, at the end.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def load_bundle(rules_dir: str | Path, *, backend: str = cel.DEFAULT_BACKEND) -> Bundle:
    """Parse, validate and compile every policy file under `rules_dir`.

    Raises PolicyError listing every problem found (file, line, column, rule id).
    """
    with _gc_paused():
        return _load_bundle(rules_dir, backend)


def _load_bundle(rules_dir: str | Path, backend: str) -> Bundle:
    root = Path(rules_dir)
    if not root.is_dir():
        raise PolicyError([Problem(str(root), 0, 0, "", "rules directory not found")])
    return compile_bundle(model.read(root), backend=backend)


def compile_bundle(written: model.Bundle, *, backend: str = cel.DEFAULT_BACKEND) -> Bundle:
    """Compile a bundle as written; raises PolicyError listing every problem found."""
    if not written.files:
        raise PolicyError([Problem(str(written.root), 0, 0, "", "no policy files (*.yaml) found")])
    ctx = _Context(backend=cel.backend(backend), problems=list(written.problems))
    sources = [f for f in written.parsed if f.usable]
    schema = _merge_schema(ctx, sources)
    ctx.checker = cel.Checker(schema)
    derived = _derived_roles(ctx, sources)
    policies = _policies(ctx, sources, derived)
    if ctx.problems:
        raise PolicyError(ctx.problems)
    return Bundle(
        revision=revision_of(written.root, written.contents),
        backend=ctx.backend,
        schema=schema,
        policies=tuple(policies),
        derived_roles=derived,
        files=tuple(str(p) for p in written.files),
    )


def _merge_schema(ctx: _Context, files: list[model.PolicyFile]) -> AttributeSchema:
    merged: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    origin: dict[tuple[str, str], str] = {}
    for f in files:
        src = f.src
        if ("schema",) in src.unusable:
            continue
        for decl in f.declarations:
            section, name = decl.section, decl.name
            type_name = decl.type_name if decl.path not in src.unusable else "dyn"
            key = (section, name)
            if name in merged[section] and merged[section][name] != type_name:
                ctx.add(
                    src,
                    decl.path,
                    "",
                    f"{section}.attr {name!r} declared as {type_name} here but as "
                    f"{merged[section][name]} in {origin[key]}",
                )
                continue
            merged[section][name] = type_name
            origin.setdefault(key, src.name)
    return AttributeSchema({s: dict(sorted(a.items())) for s, a in merged.items()})


def _usable(files: list[model.PolicyFile], kind: str) -> Iterator[tuple[Any, Any]]:
    """(source, item) for each item of `kind` (derived_roles, policies) that validation left
    usable, file by file in bundle order."""
    for f in files:
        for spec in getattr(f, kind):
            if f.compiles(spec.path):
                yield f.src, spec


def _derived_roles(ctx: _Context, files: list[model.PolicyFile]) -> dict[str, DerivedRole]:
    roles: dict[str, DerivedRole] = {}
    seen: dict[str, str] = {}
    for src, spec in _usable(files, "derived_roles"):
        name = spec.name
        rid = f"derived_role:{name}"
        if name in seen:
            ctx.add(
                src,
                (*spec.path, "name"),
                rid,
                f"derived role {name!r} is also defined in {seen[name]}",
            )
            continue
        seen[name] = src.name
        for k, message in _role_problems(spec.parent_roles):
            ctx.add(src, (*spec.path, "parent_roles", k), rid, message)
        program = ctx.compile(src, (*spec.path, "when"), rid, spec.when)
        if program is not None:
            roles[name] = DerivedRole(name, frozenset(spec.parent_roles), program)
    return roles


def _policies(
    ctx: _Context, files: list[model.PolicyFile], derived: dict[str, DerivedRole]
) -> list[CompiledPolicy]:
    compiled: list[CompiledPolicy] = []
    seen: dict[str, str] = {}
    for src, spec in _usable(files, "policies"):
        pid = spec.policy_id
        base = spec.path
        duplicate = pid in seen
        if duplicate:
            # Still compiled below so its own problems are reported in the same run.
            ctx.add(src, (*base, "id"), pid, f"policy id {pid!r} is also used in {seen[pid]}")
        seen.setdefault(pid, src.name)
        variables = _variables(ctx, src, base, pid, spec.variables)
        rules: list[CompiledRule] = []
        rule_ids: set[str] = set()
        for rule in spec.rules:
            if rule.path in src.unusable:
                continue
            if rule.id in rule_ids:
                ctx.add(src, (*rule.path, "id"), rule.rule_id, "duplicate rule id in this policy")
                continue
            rule_ids.add(rule.id)
            compiled_rule = _rule(ctx, src, rule, variables, derived)
            if compiled_rule is not None:
                rules.append(compiled_rule)
        if duplicate:
            continue
        compiled.append(
            CompiledPolicy(
                policy_id=pid,
                resources=tuple(Glob.of(g) for g in spec.resources),
                actions=tuple(Glob.of(g) for g in spec.actions),
                rules=tuple(sorted(rules, key=lambda r: r.sort_key)),
            )
        )
    return compiled


def _variables(
    ctx: _Context, src: source.SourceFile, base: source.Path_, pid: str, specs: dict[str, str]
) -> dict[str, str]:
    """Expanded variable bodies; each is checked on its own so errors point into it."""
    expanded: dict[str, str] = {}
    failed: set[str] = set()
    visiting: list[str] = []

    def resolve(name: str) -> str | None:
        if name in expanded:
            return expanded[name]
        if name not in specs or name in failed:
            return None
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            ctx.add(
                src,
                (*base, "variables", name),
                pid,
                f"variables refer to each other in a cycle: {cycle}",
            )
            failed.add(name)
            return None
        visiting.append(name)
        try:
            result = expand.expand(specs[name], resolve)
        except expand.UnknownVariable as exc:
            if exc.name not in failed:
                pos = src.scalar_locator((*base, "variables", name)).locate(exc.offset)
                ctx.problems.append(
                    Problem(src.name, pos.line, pos.column, pid, f"unknown variable V.{exc.name}")
                )
            failed.add(name)
            return None
        finally:
            visiting.pop()
        expanded[name] = result.text
        return result.text

    for name in specs:
        resolve(name)
    checker = ctx.checker
    assert checker is not None
    checked: dict[str, bool] = {}

    def broken(name: str) -> bool:
        """Whether the variable fails to type-check; only a variable whose own text is at
        fault is reported, never one that merely uses a broken variable (one root cause,
        reported once)."""
        if name in failed:
            return True
        if name not in checked:
            checked[name] = False
            if any(
                broken(ref) for ref, _ in celscan.variable_references(specs[name]) if ref in specs
            ):
                checked[name] = True
                return True
            try:
                checker.check(expanded[name], condition=False)
            except cel.CelCompileError:
                # Re-run through compile() on the raw text so positions point into it.
                ctx.compile(
                    src,
                    (*base, "variables", name),
                    f"{pid}:V.{name}",
                    specs[name],
                    expanded,
                    condition=False,
                )
                checked[name] = True
        return checked[name]

    for name in list(expanded):
        if broken(name):
            failed.add(name)
    for name in failed:
        expanded.pop(name, None)
    # Variables with errors are reported once; rules using them are skipped by returning a
    # sentinel that compiles but whose problems are already recorded.
    return expanded | {name: "true" for name in failed}


def _rule(
    ctx: _Context,
    src: source.SourceFile,
    spec: model.RuleSpec,
    variables: dict[str, str],
    derived: dict[str, DerivedRole],
) -> CompiledRule | None:
    before = len(ctx.problems)
    rule_id = spec.rule_id
    program = None
    if spec.when is not None:
        program = ctx.compile(src, (*spec.path, "when"), rule_id, spec.when, variables)
    roles = spec.roles
    for k, message in _role_problems(roles):
        ctx.add(src, (*spec.path, "roles", k), rule_id, message)
    derived_roles = tuple(sorted(r for r in roles if r in derived))
    static_roles = frozenset(r for r in roles if r not in derived)
    effect = _EFFECTS[spec.effect]
    masks = tuple(_mask(ctx, src, rule_id, m) for m in spec.masks)
    approval = None
    if spec.approval is not None:
        approval = replace(_approval(ctx, src, rule_id, spec.approval), labels=spec.labels)
    if len(ctx.problems) > before:
        return None
    return CompiledRule(
        rule_id=rule_id,
        effect=effect,
        program=program,
        static_roles=static_roles,
        derived_roles=derived_roles,
        reason=spec.reason,
        masks=masks,
        approval=approval,
        shadow=spec.shadow,
        labels=spec.labels,
    )


def _mask(ctx: _Context, src: source.SourceFile, rule_id: str, spec: model.MaskSpec) -> MaskSpec:
    op = _OPS[spec.operator]
    keep_first = spec.keep_first or 0
    keep_last = spec.keep_last or 0
    written = spec.keep_first is not None or spec.keep_last is not None
    if op is not MaskOp.PARTIAL and written:
        ctx.add(src, spec.path, rule_id, "keep_first/keep_last apply only to the partial operator")
    if op is MaskOp.PARTIAL and keep_first == 0 and keep_last == 0:
        ctx.add(
            src, spec.path, rule_id, "partial needs keep_first or keep_last (otherwise use redact)"
        )
    return MaskSpec(
        paths=tuple(Glob.of(p) for p in spec.paths),
        tags=tuple(Glob.of(t) for t in spec.tags),
        op=op,
        keep_first=keep_first,
        keep_last=keep_last,
    )


def _approval(
    ctx: _Context, src: source.SourceFile, rule_id: str, spec: model.ApprovalSpec
) -> ApprovalRequirement:
    path = spec.path
    roles = tuple(sorted(set(spec.roles)))
    groups = tuple(sorted(set(spec.groups)))
    if not roles and not groups:
        ctx.add(src, (*path, "approvers"), rule_id, "approvers needs at least one role or group")
    ttls = {}
    for key, written, default in (
        ("pending_ttl", spec.pending_ttl, DEFAULT_PENDING_TTL),
        ("grant_ttl", spec.grant_ttl, DEFAULT_GRANT_TTL),
    ):
        try:
            ttls[key] = parse_duration(written) if written is not None else default
        except ValueError as exc:
            ctx.add(src, (*path, key), rule_id, str(exc))
            ttls[key] = default
            continue
        if ttls[key] <= dt.timedelta(0):
            ctx.add(src, (*path, key), rule_id, f"{key} must be positive")
    attrs = []
    declared = ctx.checker.schema.attrs("principal") if ctx.checker else {}
    for k, ref in enumerate(spec.requester_identities):
        name = ref.split(".", 2)[2]
        if declared.get(name) not in ("string", "list<string>"):
            ctx.add(
                src,
                (*path, "requester_identities", k),
                rule_id,
                f"{ref} must be a declared principal attribute of type string or list<string>",
            )
        attrs.append(name)
    return ApprovalRequirement(
        approvers=(ApproverSet(roles, groups),),
        quorum=spec.quorum,
        pending_ttl=ttls["pending_ttl"],
        grant_ttl=ttls["grant_ttl"],
        rule_ids=(rule_id,),
        requester_attrs=tuple(sorted(set(attrs))),
    )
