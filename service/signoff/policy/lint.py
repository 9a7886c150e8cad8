"""`signoff lint`: load problems, rules that never fire, unused names and backend-dependent CEL."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import lark

from signoff.client.cmd import exitcodes
from signoff.engine import cel, celscan
from signoff.engine.compiled import Glob
from signoff.engine.schema import SECTIONS, TYPES, AttributeSchema
from signoff.errors import PolicyError, Problem, located
from signoff.policy import expand, model, source
from signoff.policy.loader import compile_bundle, load_bundle

ERROR = "error"
WARNING = "warning"

EXIT_CLEAN = exitcodes.OK  # no findings, or warnings only without --strict
EXIT_FINDINGS = exitcodes.REFUSED  # errors, or warnings with --strict
EXIT_USAGE = exitcodes.USAGE  # bad arguments or no rules directory

LOAD_ERROR = "load-error"
UNREACHABLE = "unreachable-rule"
NEVER_MATCHES = "never-matches"
UNUSED_VARIABLE = "unused-variable"
UNUSED_DERIVED_ROLE = "unused-derived-role"
MIXED_NUMERIC = "mixed-numeric"
NULL_COMPARISON = "null-comparison"

_EFFECTS = ("allow", "deny", "mask", "require_approval")
_ROOTS = frozenset({"principal", "resource", "context", "payload", "action", "now"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_GLOB_CHARS = "*?["
# The cel-python parse tree wraps every operand in one node per precedence level.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication"}
    | {"unary", "member", "primary"}
)
_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
_NUMERIC = frozenset({"int", "uint", "double"})
_BUILTIN_TYPES = {
    ("principal", "id"): "string",
    ("principal", "kind"): "string",
    ("resource", "kind"): "string",
    ("resource", "id"): "string",
    ("context", "environment"): "string",
    ("context", "source_ip"): "string",
    ("context", "time"): "timestamp",
    ("action",): "string",
    ("now",): "timestamp",
}
# Declared types the checker refuses to compare with null (a load error says so already).
_NOT_NULLABLE = frozenset({"string", "int", "uint", "double", "bool", "bytes"}) | {
    t for t in TYPES if t.startswith(("list<", "map<"))
}
_PROBE_NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True, order=True)
class Finding(Problem):
    """One lint finding: a load problem's place and message, with a severity and a code."""

    severity: str
    code: str

    def __str__(self) -> str:
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        where = located(self.file, self.line, self.column)
        return f"{where}{rule}: {self.severity}: {self.message} ({self.code})"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule_id,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


# --- the bundle as written ---------------------------------------------------------------------


@dataclass
class _Raw:
    """What the files say (`model`), with the schema merged for analysis."""

    policies: list[model.PolicySpec]
    derived_roles: list[model.DerivedRoleSpec]
    # Every role name any rule selects on, including rules too broken to analyse further.
    selected_roles: set[str]
    schema: dict[str, dict[str, str]]
    # False when a file could not be read: bundle-wide "unused" claims would then be guesses.
    complete: bool


def _read(written: model.Bundle) -> _Raw:
    schema: dict[str, dict[str, str]] = {}
    conflicts: set[tuple[str, str]] = set()
    for f in written.parsed:
        for decl in f.declarations:
            merged = schema.setdefault(decl.section, {})
            known = isinstance(decl.type_name, str) and decl.type_name in TYPES
            if not known or merged.setdefault(decl.name, decl.type_name) != decl.type_name:
                conflicts.add((decl.section, decl.name))
    for section, name in conflicts:
        schema[section].pop(name, None)  # declared twice, differently: type unknown
    return _Raw(
        list(written.policies()),
        list(written.derived_roles()),
        written.selected_roles(),
        schema,
        written.complete,
    )


def item_locations(rules_dir: str | Path) -> dict[str, tuple[str, int]]:
    """`file, line` of every rule (`policy/rule`) and derived role (`derived_role:name`)."""
    written = model.read(Path(rules_dir))
    found: dict[str, tuple[str, int]] = {}
    for policy in written.policies():
        for rule in policy.rules:
            found.setdefault(rule.rule_id, (policy.src.name, policy.src.position(rule.path).line))
    for role in written.derived_roles():
        found.setdefault(
            f"derived_role:{role.name}", (role.src.name, role.src.position(role.path).line)
        )
    return found


# --- CEL: parse trees, constants and probes --------------------------------------------------


def _mentions_roots(node: lark.Tree[Any]) -> bool:
    # Any identifier spelled like a request variable counts, even a field name: that only
    # leaves an expression unevaluated, never calls a variable expression constant.
    return celscan.mentions(node, _ROOTS)


@dataclass(frozen=True)
class _Operand:
    text: str
    type: str | None  # a schema type, a literal's type, "list-literal", "message" or unknown
    literal: bool
    value: Any = None  # a numeric literal's value, or a list literal's numeric values


def _render(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dt.datetime):
        return "a timestamp"
    if isinstance(value, dt.timedelta):
        return "a duration"
    return str(value)


def _outcome(result: bool | None) -> str:
    return "an error" if result is None else str(result).lower()


class _Cel:
    """Evaluates small expressions on both backends, each result cached."""

    def __init__(self) -> None:
        self._backends = {name: cel.backend(name) for name in cel.BACKENDS}
        self._results: dict[tuple[str, str], dict[str, bool | None]] = {}

    def parse(self, text: str) -> lark.Tree[Any] | None:
        return celscan.parse(text)

    def evaluate(self, text: str, attrs: dict[str, Any] | None = None) -> dict[str, bool | None]:
        """Per backend: the bool `text` yields (None: an error), with `principal.attr` bound
        to `attrs`, or with nothing bound at all when `attrs` is None."""
        key = (text, repr(sorted((attrs or {}).items())) if attrs is not None else "")
        if key not in self._results:
            out: dict[str, bool | None] = {}
            for name, backend in self._backends.items():
                data: dict[str, Any] = {}
                if attrs is not None:
                    data = {
                        "principal": {"id": "p", "kind": "human", "roles": [], "attr": attrs},
                        "now": _PROBE_NOW,
                    }
                try:
                    out[name] = backend.compile(text).evaluate(backend.activation(data))
                except (cel.CelCompileError, cel.CelEvalError):
                    out[name] = None
            self._results[key] = out
        return self._results[key]

    def constant(self, text: str) -> bool | None:
        """True or False when `text` yields that for every request on both backends."""
        tree = self.parse(text)
        return None if tree is None else self._constant(tree, text)

    def _constant(self, node: Any, text: str) -> bool | None:
        node = celscan.unwrap(node)
        if not isinstance(node, lark.Tree):
            return None
        kids = node.children
        # `x || true` and `x && false` hold whatever x is, errors included (CEL's logical
        # operators absorb errors on both backends), so one constant side decides.
        if node.data in ("conditionalor", "conditionaland") and len(kids) == 2:
            a, b = self._constant(kids[0], text), self._constant(kids[1], text)
            decisive = node.data == "conditionalor"
            if decisive in (a, b):
                return decisive
            return None if a is None or b is None else not decisive
        if node.data == "unary" and len(kids) == 2 and getattr(kids[0], "data", "") == "unary_not":
            inner = self._constant(kids[1], text)
            return None if inner is None else not inner
        if _mentions_roots(node):
            return None
        results = set(self.evaluate(celscan.span(node, text)[2]).values())
        if len(results) == 1 and (value := results.pop()) is not None:
            return value
        return None


def _path_type(path: tuple[str, ...], schema: AttributeSchema) -> str | None:
    if path in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[path]
    if path[0] in ("principal", "resource", "context") and len(path) >= 3 and path[1] == "attr":
        declared, rest = schema.attrs(path[0]).get(path[2]), path[3:]
    elif path[0] == "payload" and len(path) >= 2:
        declared, rest = schema.attrs("payload").get(path[1]), path[2:]
    elif path[0] in _ROOTS and len(path) <= 2 and path[-1] in (path[0], "attr"):
        return "message"
    else:
        return None
    for step in rest:
        if declared == "dyn":
            continue
        if declared == "map<string,string>":
            declared = "string"
        elif declared is not None and declared.startswith("list<") and step == "[]":
            declared = declared[5:-1]
        else:
            return None
    return declared


_LITERAL_TYPES = {
    "INT_LIT": "int",
    "UINT_LIT": "uint",
    "FLOAT_LIT": "double",
    "NULL_LIT": "null",
    "BOOL_LIT": "bool",
    "STRING_LIT": "string",
    "MLSTRING_LIT": "string",
    "BYTES_LIT": "bytes",
}


def _number(token: str, type_name: str) -> float | int:
    digits = token.rstrip("uU")
    if type_name == "double":
        return float(digits)
    # Not int(digits, 0): CEL reads `010` as ten, where Python refuses the leading zero.
    return int(digits, 16) if "x" in digits.lower() else int(digits)


def _operand(node: Any, bound: frozenset[str], text: str, schema: AttributeSchema) -> _Operand:
    span = celscan.span(node, text)[2].strip()
    inner = celscan.unwrap(node)
    sign = 1
    if (
        isinstance(inner, lark.Tree)
        and inner.data == "unary"
        and getattr(inner.children[0], "data", "") == "unary_neg"
    ):
        sign, inner = -1, celscan.unwrap(inner.children[1])
    if isinstance(inner, lark.Tree) and inner.data == "literal":
        token = inner.children[0]
        type_name = _LITERAL_TYPES.get(getattr(token, "type", ""))
        value = None
        if type_name in _NUMERIC:
            value = sign * _number(str(token), type_name)
        return _Operand(span, type_name, True, value)
    if isinstance(inner, lark.Tree) and inner.data == "list_lit" and sign == 1:
        items = inner.children[0].children if inner.children else []
        values = [_operand(item, bound, text, schema) for item in items]
        if values and all(v.literal and v.type in _NUMERIC for v in values):
            return _Operand(span, "list-literal", True, [v.value for v in values])
        return _Operand(span, None, False)
    path = celscan.path_of(inner, bound) if sign == 1 else None
    return _Operand(span, _path_type(path, schema) if path else None, False)


def _json_probe(other: _Operand) -> float:
    """A number a dyn operand may hold next to `other`: the first whole one at or above its
    value, as a double, since every JSON number reaches CEL as a double (CEL's JSON mapping)."""
    value = other.value[0] if isinstance(other.value, list) else other.value
    if isinstance(value, int | float) and math.isfinite(value):
        return float(math.ceil(value))
    return 2.0


def _sample(type_name: str | None) -> Any:
    return {"int": 2, "uint": 2, "double": 2.5}.get(type_name or "")


def _snippet(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= 60 else flat[:57] + "..."


@dataclass(frozen=True)
class _Construct:
    offset: int
    code: str
    message: str


def _backend_constructs(celx: _Cel, text: str, schema: AttributeSchema) -> list[_Construct]:
    """Comparisons with null, and int/double mixes a dyn value makes, in one CEL text."""
    tree = celx.parse(text)
    if tree is None:
        return []
    found: list[_Construct] = []

    def visit(node: lark.Tree[Any], bound: frozenset[str]) -> None:
        kids = node.children
        if len(kids) != 2 or not isinstance(kids[0], lark.Tree) or kids[0].data not in _OPERATORS:
            return
        op = _OPERATORS[kids[0].data]
        left = _operand(kids[0].children[0], bound, text, schema)
        right = _operand(kids[1], bound, text, schema)
        start, _, whole = celscan.span(node, text)
        if op in ("==", "!=") and (left.type == "null") != (right.type == "null"):
            other = right.type if left.type == "null" else left.type
            if other in _NOT_NULLABLE:
                return  # the checker refuses these: already a load error
            found.append(
                _Construct(start, NULL_COMPARISON, _null_message(celx, op, left, right, whole))
            )
            return
        message = _mixed_message(celx, op, left, right, whole)
        if message:
            found.append(_Construct(start, MIXED_NUMERIC, message))

    celscan.walk(tree, frozenset(), visit)
    return found


def _null_message(celx: _Cel, op: str, left: _Operand, right: _Operand, whole: str) -> str:
    value = right if left.type == "null" else left
    if value.type == "message":
        return (
            f"`{_snippet(whole)}` compares with null: {value.text} is always present and never "
            f"null, so this is constant; test presence of a field with has()"
        )
    samples: dict[str, list[Any]] = {
        "dyn": [2, "x"],
        "timestamp": [_PROBE_NOW],
        "duration": [dt.timedelta(minutes=5)],
    }
    probes = samples.get(value.type or "", [])
    demo = ""
    for probe in probes:
        results = celx.evaluate(f"principal.attr.a {op} null", {"a": probe})
        if len(set(results.values())) > 1:
            demo = (
                f"; with {value.text} = {_render(probe)} cel-expr gives "
                f"{_outcome(results['cel-expr'])} and cel-python {_outcome(results['cel-python'])}"
            )
            break
    return (
        f"`{_snippet(whole)}` compares with null, which is not a presence test: an absent "
        f"value is an evaluation error on both backends{demo}; test presence with has()"
    )


def _mixed_message(celx: _Cel, op: str, left: _Operand, right: _Operand, whole: str) -> str:
    """A message when a dyn operand (a JSON number: a double) meets an int in a way a probe
    shows to fail or to differ between the backends."""
    if (left.type == "dyn") == (right.type == "dyn"):
        return ""  # neither: the checker decides; both: nothing is known about either
    dyn_side, other = (left, right) if left.type == "dyn" else (right, left)
    if op == "in":
        if dyn_side is not left or other.type != "list-literal":
            return ""
    elif other.type not in _NUMERIC:
        return ""
    probe = _json_probe(other)
    attrs: dict[str, Any] = {"a" if dyn_side is left else "b": probe}
    if not other.literal:
        attrs["b" if dyn_side is left else "a"] = _sample(other.type)
    a = left.text if left.literal else "principal.attr.a"
    b = right.text if right.literal else "principal.attr.b"
    expr = f"{a} {op} {b}"
    if op in _ARITHMETIC:
        expr = f"({expr}) == ({expr})"  # true, or an error: the value itself is not the point
    results = celx.evaluate(expr, attrs)
    if len(set(results.values())) > 1:
        what = (
            f"cel-expr gives {_outcome(results['cel-expr'])} and "
            f"cel-python {_outcome(results['cel-python'])}"
        )
    elif op in _ARITHMETIC and None in results.values():
        what = "both backends fail"
    else:
        return ""
    return (
        f"`{_snippet(whole)}` mixes a JSON number with an int: every JSON number is a double, "
        f"so with {dyn_side.text} = {probe} {what}; use a double literal or convert "
        f"explicitly, e.g. int({dyn_side.text})"
    )


# --- the checks ------------------------------------------------------------------------------


class _Linter:
    def __init__(self, raw: _Raw, schema: AttributeSchema) -> None:
        self.raw = raw
        self.schema = schema
        self.cel = _Cel()
        self.findings: list[Finding] = []

    def add(
        self,
        src: source.SourceFile,
        pos: source.Position,
        rule_id: str,
        code: str,
        message: str,
    ) -> None:
        self.findings.append(
            Finding(src.name, pos.line, pos.column, rule_id, message, WARNING, code)
        )

    def run(self) -> list[Finding]:
        never_held = self.derived_roles()
        expanded = {id(p): _resolve(p.variables) for p in self.raw.policies}
        constant: dict[str, bool | None] = {}
        for policy in self.raw.policies:
            for rule in policy.rules:
                constant[rule.rule_id] = self.rule_constant(rule, expanded[id(policy)])
        self.never_matching(constant, never_held)
        self.shadowed(constant, never_held)
        self.unused_variables()
        if self.raw.complete:
            self.unused_derived_roles()
        self.backend_constructs()
        return self.findings

    def rule_constant(self, rule: model.RuleSpec, variables: dict[str, str | None]) -> bool | None:
        if rule.when is None:
            return True
        try:
            text = expand.expand(rule.when, variables.get).text
        except expand.UnknownVariable:
            return None
        return self.cel.constant(text)

    def derived_roles(self) -> dict[str, model.DerivedRoleSpec]:
        """Derived roles whose condition is always false: nobody ever holds them."""
        never: dict[str, model.DerivedRoleSpec] = {}
        seen: set[str] = set()
        for role in self.raw.derived_roles:
            if role.name in seen:
                continue  # a duplicate is a load error; only the first one counts
            seen.add(role.name)
            if self.cel.constant(role.when) is False:
                never[role.name] = role
                self.add(
                    role.src,
                    role.src.position((*role.path, "when")),
                    f"derived_role:{role.name}",
                    NEVER_MATCHES,
                    f"derived role {role.name!r} is never held: its condition is always false",
                )
        return never

    def never_matching(
        self, constant: dict[str, bool | None], never_held: dict[str, model.DerivedRoleSpec]
    ) -> None:
        for policy in self.raw.policies:
            for rule in policy.rules:
                src = policy.src
                if constant[rule.rule_id] is False:
                    self.add(
                        src,
                        src.position((*rule.path, "when")),
                        rule.rule_id,
                        NEVER_MATCHES,
                        "can never match: its condition is always false",
                    )
                elif rule.roles and all(r in never_held for r in rule.roles):
                    names = ", ".join(rule.roles)
                    self.add(
                        src,
                        src.position((*rule.path, "roles")),
                        rule.rule_id,
                        NEVER_MATCHES,
                        f"can never match: it selects only derived roles nobody holds ({names})",
                    )

    def shadowed(
        self, constant: dict[str, bool | None], never_held: dict[str, model.DerivedRoleSpec]
    ) -> None:
        """Non-deny rules that an always-matching deny overrides whenever they apply."""
        # A shadow (audit-only) deny is never enforced, so it overrides nothing.
        denies = sorted(
            (
                r
                for p in self.raw.policies
                for r in p.rules
                if r.effect == "deny" and not r.shadow and constant[r.rule_id] is True
            ),
            key=lambda r: r.rule_id,
        )
        for policy in self.raw.policies:
            for rule in policy.rules:
                if rule.effect == "deny" or constant[rule.rule_id] is False:
                    continue
                if rule.roles and all(r in never_held for r in rule.roles):
                    continue  # already reported as never matching
                deny = next((d for d in denies if _overrides(d, rule)), None)
                if deny is None:
                    continue
                where = f"{deny.policy.src.name}:{deny.policy.src.position(deny.path).line}"
                why = (
                    "it selects no roles"
                    if not deny.roles
                    else "its roles include all of this rule's"
                )
                self.add(
                    policy.src,
                    policy.src.position(rule.path),
                    rule.rule_id,
                    UNREACHABLE,
                    f"never decides anything: deny rule {deny.rule_id} ({where}) has no "
                    f"condition (or an always-true one), matches every principal this rule "
                    f"selects ({why}) on every resource kind and action this rule applies to, "
                    "and deny wins",
                )

    def unused_variables(self) -> None:
        for policy in self.raw.policies:
            refs = {
                name: {n for n, _ in celscan.variable_references(body)}
                for name, body in policy.variables.items()
            }
            used: set[str] = set()
            todo = [
                n for r in policy.rules if r.when for n, _ in celscan.variable_references(r.when)
            ]
            while todo:
                name = todo.pop()
                if name not in used:
                    used.add(name)
                    todo.extend(refs.get(name, ()))
            for name in policy.variables:
                if name in used:
                    continue
                users = sorted(n for n, r in refs.items() if name in r and n != name)
                detail = (
                    "used only by unused variable(s) " + ", ".join(f"V.{u}" for u in users)
                    if users
                    else "used by no rule and no other variable"
                )
                self.add(
                    policy.src,
                    policy.src.key_position((*policy.path, "variables", name)),
                    f"{policy.policy_id}:V.{name}",
                    UNUSED_VARIABLE,
                    f"variable V.{name} is {detail}",
                )

    def unused_derived_roles(self) -> None:
        for role in self.raw.derived_roles:
            if role.name not in self.raw.selected_roles:
                self.add(
                    role.src,
                    role.src.position((*role.path, "name")),
                    f"derived_role:{role.name}",
                    UNUSED_DERIVED_ROLE,
                    f"derived role {role.name!r} is named in no rule's roles "
                    "(CEL cannot read derived roles, so it has no effect)",
                )

    def backend_constructs(self) -> None:
        for role in self.raw.derived_roles:
            self.constructs(role.src, (*role.path, "when"), f"derived_role:{role.name}", role.when)
        for policy in self.raw.policies:
            for name, body in policy.variables.items():
                path = (*policy.path, "variables", name)
                self.constructs(policy.src, path, f"{policy.policy_id}:V.{name}", body)
            for rule in policy.rules:
                if rule.when is not None:
                    self.constructs(policy.src, (*rule.path, "when"), rule.rule_id, rule.when)

    def constructs(
        self, src: source.SourceFile, path: source.Path_, rule_id: str, text: str
    ) -> None:
        locator = src.scalar_locator(path)
        for construct in _backend_constructs(self.cel, text, self.schema):
            pos = locator.locate(construct.offset)
            self.add(src, pos, rule_id, construct.code, construct.message)


def _resolve(specs: dict[str, str]) -> dict[str, str | None]:
    """Each variable fully expanded; None for one that is undefined inside or cyclic."""
    done: dict[str, str | None] = {}
    visiting: set[str] = set()

    def resolve(name: str) -> str | None:
        if name in done:
            return done[name]
        if name not in specs or name in visiting:
            return None
        visiting.add(name)
        try:
            text: str | None = expand.expand(specs[name], resolve).text
        except expand.UnknownVariable:
            text = None
        visiting.discard(name)
        done[name] = text
        return text

    for name in specs:
        resolve(name)
    return done


def _pattern_covers(broad: str, narrow: str) -> bool:
    """True only when every name `narrow` matches is provably matched by `broad`."""
    if broad == narrow or (broad and set(broad) == {"*"}):
        return True
    first = min((narrow.find(c) for c in _GLOB_CHARS if c in narrow), default=-1)
    if first < 0:
        return Glob.of(broad).matches(narrow)
    # `prefix*` covers a pattern whose literal start already begins with `prefix`.
    prefix = broad[:-1]
    return (
        broad.endswith("*")
        and not any(c in prefix for c in _GLOB_CHARS)
        and narrow[:first].startswith(prefix)
    )


def _covers(broad: Sequence[str], narrow: Sequence[str]) -> bool:
    return all(any(_pattern_covers(b, n) for b in broad) for n in narrow)


def _overrides(deny: model.RuleSpec, rule: model.RuleSpec) -> bool:
    """`deny` (always true once selected) applies whenever `rule` could match."""
    if deny is rule:
        return False
    # Holding any of the rule's roles must mean holding one of the deny's: a superset.
    roles_covered = not deny.roles or (bool(rule.roles) and set(rule.roles) <= set(deny.roles))
    return (
        roles_covered
        and _covers(deny.policy.resources, rule.policy.resources)
        and _covers(deny.policy.actions, rule.policy.actions)
    )


# --- entry points ----------------------------------------------------------------------------


def _load(root: Path, written: model.Bundle | None) -> tuple[list[Finding], AttributeSchema | None]:
    """Every load problem on either backend, and the schema when the bundle loads."""
    problems: dict[Problem, list[str]] = {}
    schema = None
    for name in cel.BACKENDS:
        try:
            if written is None:
                schema = load_bundle(root, backend=name).schema
            else:
                schema = compile_bundle(written, backend=name).schema
        except PolicyError as exc:
            for problem in exc.problems:
                problems.setdefault(problem, []).append(name)
    findings = []
    for problem, backends in sorted(problems.items()):
        only = f" (only on {', '.join(backends)})" if len(backends) < len(cel.BACKENDS) else ""
        findings.append(
            Finding(
                problem.file,
                problem.line,
                problem.column,
                problem.rule_id,
                problem.message + only,
                ERROR,
                LOAD_ERROR,
            )
        )
    return findings, schema if not problems else None


def lint(rules_dir: str | Path) -> list[Finding]:
    """Every finding for the bundle in `rules_dir`, sorted by file and position."""
    root = Path(rules_dir)
    # Parsed once: both backends compile, and the analysis reads, the same files as written.
    written = model.read(root) if root.is_dir() else None
    findings, schema = _load(root, written)
    if written is None:
        return findings
    raw = _read(written)
    if schema is None:
        schema = AttributeSchema({s: dict(raw.schema.get(s, {})) for s in SECTIONS})
    findings += _Linter(raw, schema).run()
    return sorted(set(findings))


def exit_code(findings: Sequence[Finding], *, strict: bool = False) -> int:
    """1 with an error, or with a warning under `strict`; otherwise 0."""
    if any(f.severity == ERROR for f in findings) or (strict and findings):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def report(
    rules_dir: Path,
    *,
    as_json: bool = False,
    strict: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the findings for `rules_dir` (default: to stdout) and return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not rules_dir.is_dir():
        print(f"signoff lint: rules directory not found: {rules_dir}", file=err)
        return EXIT_USAGE
    findings = lint(rules_dir)
    errors = sum(f.severity == ERROR for f in findings)
    warnings = len(findings) - errors
    code = exit_code(findings, strict=strict)
    if as_json:
        document = {
            "rules_dir": str(rules_dir),
            "findings": [f.as_json() for f in findings],
            "errors": errors,
            "warnings": warnings,
            "exit_code": code,
        }
        print(json.dumps(document, indent=2), file=out)
        return code
    for finding in findings:
        print(finding, file=out)
    summary = f"{errors} error(s), {warnings} warning(s)" if findings else "no findings"
    print(f"signoff lint {rules_dir}: {summary}", file=out)
    return code
