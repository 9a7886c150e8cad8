"""Policy test suites (`*_test.yaml`): parsed into requests and expectations, errors located."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from signoff.engine.model import (
    Context,
    FieldRef,
    MaskOp,
    Principal,
    PrincipalKind,
    Request,
    Resource,
    Verdict,
)
from signoff.engine.schema import parse_duration
from signoff.policy import source

SUITE_SUFFIX = "_test.yaml"
_T = TypeVar("_T")

VERDICTS: dict[str, Verdict] = {
    "allow": Verdict.ALLOW,
    "deny": Verdict.DENY,
    "mask": Verdict.MASK,
    "require_approval": Verdict.REQUIRE_APPROVAL,
}
MASK_OPS: dict[str, MaskOp] = {op.name.lower(): op for op in MaskOp}
KINDS: dict[str, PrincipalKind] = {k.value: k for k in PrincipalKind}

_SUITE_KEYS = ("suite", "description", "now", "principals", "resources", "contexts", "cases")
_CASE_KEYS = (
    "name",
    "description",
    "principal",
    "action",
    "resource",
    "context",
    "payload",
    "now",
    "expect",
)
_EXPECT_KEYS = ("verdict", "rules", "reasons", "masked", "approval", "errored")
_APPROVAL_KEYS = ("approvers", "quorum", "pending_ttl", "grant_ttl", "rules")
_FIXTURE_KEYS: dict[str, tuple[str, ...]] = {
    "principal": ("extends", "id", "kind", "roles", "attr"),
    "resource": ("extends", "kind", "id", "attr", "fields"),
    "context": ("extends", "environment", "source_ip", "time", "attr"),
}
_SECTIONS = {"principal": "principals", "resource": "resources", "context": "contexts"}


class SuiteError(Exception):
    """One problem in a suite file; `str()` is `file:line:col: message`."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{file}:{line}:{column}: {message}")


class MalformedSuite(Exception):
    """A suite file that cannot run; carries every problem found in it, not just the first."""

    def __init__(self, problems: list[SuiteError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class MaskExpectation:
    """Expected operator for one field; keep_* are checked only when given."""

    op: MaskOp
    keep_first: int | None = None
    keep_last: int | None = None


ApproverKey = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class ApprovalExpectation:
    """A subset of the approval requirement: only the fields given are compared."""

    approvers: frozenset[ApproverKey] | None = None
    quorum: int | None = None
    pending_ttl: dt.timedelta | None = None
    grant_ttl: dt.timedelta | None = None
    rules: frozenset[str] | None = None


@dataclass(frozen=True)
class Expectation:
    """What a case expects; every field but `verdict` is optional (None: not checked)."""

    verdict: Verdict
    rules: frozenset[str] | None = None
    reasons: tuple[str, ...] | None = None
    masked: Mapping[str, MaskExpectation] | None = None
    approval: ApprovalExpectation | None = None
    errored: frozenset[str] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    line: int
    request: Request
    now: dt.datetime
    expect: Expectation

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Suite:
    name: str
    file: str
    cases: tuple[Case, ...]


def suite_files(rules_dir: Path) -> list[Path]:
    """Every suite under `rules_dir`, in a fixed order."""
    found = [p for p in rules_dir.rglob(f"*{SUITE_SUFFIX}") if p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(rules_dir).as_posix())


class _Invalid(Exception):
    """Internal: one problem at a node path; recorded, then parsing goes on with the next item."""

    def __init__(self, path: source.Path_, message: str, *, key: bool = False) -> None:
        self.path = path
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class _Spec:
    """A fixture after `extends` is resolved, with the node path of its own definition."""

    data: dict[str, Any]
    path: source.Path_


def parse_suite(path: Path) -> Suite:
    """Parse one suite file; raises MalformedSuite listing every problem with its position."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedSuite([SuiteError(name, 1, 1, f"cannot read suite: {exc}")]) from None
    try:
        src = source.parse(name, text)
    except source.YamlSyntaxError as exc:
        pos = exc.position
        raise MalformedSuite([SuiteError(name, pos.line, pos.column, str(exc))]) from None
    parser = _Parser(src)
    suite = parser.suite()
    if suite is None:
        raise MalformedSuite(parser.errors)
    return suite


class _Parser:
    def __init__(self, src: source.SourceFile) -> None:
        self.src = src
        self.errors: list[SuiteError] = []
        self.fixtures: dict[str, dict[str, Any]] = {}

    def record(self, exc: _Invalid) -> None:
        pos = self.src.key_position(exc.path) if exc.key else self.src.position(exc.path)
        error = SuiteError(self.src.name, pos.line, pos.column, str(exc))
        # A broken fixture is reported where it is defined, once, not again per case using it.
        if not any(str(e) == str(error) for e in self.errors):
            self.errors.append(error)

    def attempt(self, fn: Callable[[], _T]) -> _T | None:
        """`fn()`, or None after recording the problem it raised."""
        try:
            return fn()
        except _Invalid as exc:
            self.record(exc)
            return None

    # --- the file ------------------------------------------------------------------------

    def suite(self) -> Suite | None:
        """The parsed suite, or None when any problem was recorded."""
        data = self.src.data
        if not isinstance(data, dict):
            self.record(_Invalid((), "a suite file is a mapping with `suite`, fixtures, `cases`"))
            return None
        title: str | None = None
        default_now: dt.datetime | None = None
        try:
            _check_keys(data, (), _SUITE_KEYS)
            title = _string(data, "suite", required=True)
            default_now = _timestamp(data, "now")
        except _Invalid as exc:
            self.record(exc)
        for section in _SECTIONS.values():
            try:
                self.load_fixtures(data, section)
            except _Invalid as exc:
                self.record(exc)
        builders = {"principals": self.principal, "resources": self.resource}
        for key in sorted(self.fixtures):
            section, fname = key.split("/", 1)
            build = builders.get(section, self.context)
            self.attempt(lambda: build(fname, (section, fname)))  # noqa: B023 - called at once
        raw_cases = data.get("cases")
        if not isinstance(raw_cases, list) or not raw_cases:
            self.record(_Invalid(("cases",), "`cases` must be a non-empty list", key=True))
            raw_cases = []
        cases: list[Case] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_cases):
            case = self.case(i, raw, default_now)
            if case is None:
                continue
            if case.name in seen:
                where = ("cases", i, "name")
                self.record(_Invalid(where, f"case name already used on line {seen[case.name]}"))
                continue
            seen[case.name] = case.line
            cases.append(case)
        if title is None or self.errors:
            self.errors.sort(key=lambda e: (e.line, e.column))
            return None
        return Suite(title, self.src.name, tuple(cases))

    def load_fixtures(self, data: dict[str, Any], section: str) -> None:
        raw = data.get(section)
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise _Invalid((section,), f"`{section}` must map fixture names to definitions")
        for fname, spec in raw.items():
            if not isinstance(spec, dict):
                self.record(_Invalid((section, fname), f"fixture {fname!r} must be a mapping"))
                continue
            self.fixtures[f"{section}/{fname}"] = spec

    # --- fixtures --------------------------------------------------------------------------

    def resolve(
        self, kind: str, ref: Any, path: source.Path_, chain: tuple[str, ...] = ()
    ) -> _Spec:
        """The merged definition of a fixture reference (a name or an inline mapping)."""
        section = _SECTIONS[kind]
        if isinstance(ref, str):
            if ref in chain:
                cycle = " -> ".join([*chain, ref])
                raise _Invalid(path, f"{kind} fixtures extend each other in a cycle: {cycle}")
            spec = self.fixtures.get(f"{section}/{ref}")
            if spec is None:
                prefix = f"{section}/"
                known = sorted(k[len(prefix) :] for k in self.fixtures if k.startswith(prefix))
                hint = f"; defined: {', '.join(known)}" if known else f"; `{section}` is empty"
                raise _Invalid(path, f"unknown {kind} fixture {ref!r}{hint}")
            return self.resolve(kind, spec, (section, ref), (*chain, ref))
        if not isinstance(ref, dict):
            raise _Invalid(path, f"{kind} must be a fixture name or a mapping")
        _check_keys(ref, path, _FIXTURE_KEYS[kind])
        if not isinstance(ref.get("attr", {}), dict):
            raise _Invalid((*path, "attr"), "`attr` must be a mapping of attribute values")
        merged: dict[str, Any] = {}
        if "extends" in ref:
            base = ref["extends"]
            if not isinstance(base, str):
                raise _Invalid((*path, "extends"), "`extends` names a fixture of the same kind")
            merged = dict(self.resolve(kind, base, (*path, "extends"), chain).data)
        attr = {**merged.get("attr", {}), **ref.get("attr", {})}
        merged.update({k: v for k, v in ref.items() if k != "extends"})
        # `null` removes an attribute inherited through `extends`.
        merged["attr"] = {k: v for k, v in attr.items() if v is not None}
        return _Spec(merged, path)

    def principal(self, ref: Any, path: source.Path_) -> Principal:
        spec = self.resolve("principal", ref, path)
        data, where = spec.data, spec.path
        kind = KINDS.get(_string(data, "kind", required=True, base=where) or "")
        if kind is None:
            raise _Invalid((*where, "kind"), f"kind must be one of {', '.join(KINDS)}")
        return Principal(
            id=_string(data, "id", required=True, base=where) or "",
            kind=kind,
            roles=tuple(_strings(data, "roles", base=where)),
            attributes=dict(data["attr"]),
        )

    def resource(self, ref: Any, path: source.Path_) -> Resource:
        spec = self.resolve("resource", ref, path)
        data, where = spec.data, spec.path
        fields_raw = data.get("fields") or []
        if not isinstance(fields_raw, list):
            raise _Invalid((*where, "fields"), "`fields` must be a list of {path, tags}")
        fields: list[FieldRef] = []
        for i, raw in enumerate(fields_raw):
            fpath: source.Path_ = (*where, "fields", i)
            if not isinstance(raw, dict):
                raise _Invalid(fpath, "a field is a mapping {path, tags}")
            _check_keys(raw, fpath, ("path", "tags"))
            field_path = _string(raw, "path", required=True, base=fpath) or ""
            fields.append(FieldRef(field_path, tuple(_strings(raw, "tags", base=fpath))))
        return Resource(
            kind=_string(data, "kind", required=True, base=where) or "",
            id=_string(data, "id", base=where) or "",
            attributes=dict(data["attr"]),
            fields=tuple(fields),
        )

    def context(self, ref: Any, path: source.Path_) -> Context:
        if ref is None:
            return Context()
        spec = self.resolve("context", ref, path)
        data, where = spec.data, spec.path
        return Context(
            environment=_string(data, "environment", base=where) or "",
            time=_timestamp(data, "time", base=where),
            source_ip=_string(data, "source_ip", base=where) or "",
            attributes=dict(data["attr"]),
        )

    # --- cases -----------------------------------------------------------------------------

    def case(self, index: int, raw: Any, default_now: dt.datetime | None) -> Case | None:
        """The parsed case, or None after recording every problem found in it."""
        path: source.Path_ = ("cases", index)
        if not isinstance(raw, dict):
            self.record(_Invalid(path, "a case is a mapping with name, principal, action, ..."))
            return None
        before = len(self.errors)
        self.attempt(lambda: _check_keys(raw, path, _CASE_KEYS))
        for key in ("principal", "resource", "expect"):
            if key not in raw:
                self.record(_Invalid(path, f"missing `{key}`"))
        name = self.attempt(lambda: _string(raw, "name", required=True, base=path))
        action = self.attempt(lambda: _string(raw, "action", required=True, base=path))
        now = self.attempt(lambda: _timestamp(raw, "now", base=path)) or default_now
        if now is None and "now" not in raw:
            self.record(_Invalid(path, "no `now`: pin the server clock on the suite or the case"))
        payload = raw.get("payload") or {}
        if not isinstance(payload, dict):
            self.record(_Invalid((*path, "payload"), "`payload` must be a mapping"))
        principal = resource = expect = None
        if "principal" in raw:
            principal = self.attempt(lambda: self.principal(raw["principal"], (*path, "principal")))
        if "resource" in raw:
            resource = self.attempt(lambda: self.resource(raw["resource"], (*path, "resource")))
        context = self.attempt(lambda: self.context(raw.get("context"), (*path, "context")))
        if "expect" in raw:
            expect = self.attempt(lambda: _expectation(raw["expect"], (*path, "expect")))
        if len(self.errors) > before:
            return None
        # Every part parsed (no new problem), so none of them is None.
        assert name is not None
        assert action is not None
        assert now is not None
        assert principal is not None
        assert resource is not None
        assert context is not None
        assert expect is not None
        request = Request(principal, action, resource, context, dict(payload))
        return Case(name, self.src.name, self.src.position(path).line, request, now, expect)


# --- expectations ------------------------------------------------------------------------------


def _expectation(raw: Any, path: source.Path_) -> Expectation:
    if not isinstance(raw, dict):
        raise _Invalid(path, "`expect` must be a mapping with at least `verdict`")
    _check_keys(raw, path, _EXPECT_KEYS)
    verdict_name = _string(raw, "verdict", required=True, base=path)
    verdict = VERDICTS.get(verdict_name or "")
    if verdict is None:
        raise _Invalid((*path, "verdict"), f"verdict must be one of {', '.join(VERDICTS)}")
    masked: dict[str, MaskExpectation] | None = None
    if "masked" in raw:
        masked = _masked(raw["masked"], (*path, "masked"))
    approval = None
    if "approval" in raw:
        approval = _approval(raw["approval"], (*path, "approval"))
    return Expectation(
        verdict=verdict,
        rules=frozenset(_strings(raw, "rules", base=path)) if "rules" in raw else None,
        reasons=tuple(_strings(raw, "reasons", base=path)) if "reasons" in raw else None,
        masked=masked,
        approval=approval,
        errored=frozenset(_strings(raw, "errored", base=path)) if "errored" in raw else None,
    )


def _masked(raw: Any, path: source.Path_) -> dict[str, MaskExpectation]:
    if not isinstance(raw, dict):
        raise _Invalid(path, "`masked` maps field paths to operators, e.g. {'a.*.email': email}")
    out: dict[str, MaskExpectation] = {}
    for field_path, spec in raw.items():
        where: source.Path_ = (*path, field_path)
        if isinstance(spec, str):
            spec = {"operator": spec}
        if not isinstance(spec, dict):
            raise _Invalid(where, "expected an operator name or {operator, keep_first, keep_last}")
        _check_keys(spec, where, ("operator", "keep_first", "keep_last"))
        op_name = spec.get("operator")
        op = MASK_OPS.get(op_name) if isinstance(op_name, str) else None
        if op is None:
            raise _Invalid(where, f"operator must be one of {', '.join(MASK_OPS)}")
        out[field_path] = MaskExpectation(
            op,
            _int(spec, "keep_first", base=where),
            _int(spec, "keep_last", base=where),
        )
    return out


def _approval(raw: Any, path: source.Path_) -> ApprovalExpectation:
    if not isinstance(raw, dict):
        raise _Invalid(path, "`approval` must be a mapping (a subset of the requirement)")
    _check_keys(raw, path, _APPROVAL_KEYS)
    approvers: frozenset[ApproverKey] | None = None
    if "approvers" in raw:
        sets = raw["approvers"]
        if not isinstance(sets, list):
            raise _Invalid((*path, "approvers"), "`approvers` is a list of {roles, groups}")
        keys: set[ApproverKey] = set()
        for i, item in enumerate(sets):
            where: source.Path_ = (*path, "approvers", i)
            if not isinstance(item, dict):
                raise _Invalid(where, "an approver set is a mapping {roles, groups}")
            _check_keys(item, where, ("roles", "groups"))
            roles = tuple(sorted(set(_strings(item, "roles", base=where))))
            groups = tuple(sorted(set(_strings(item, "groups", base=where))))
            keys.add((roles, groups))
        approvers = frozenset(keys)
    return ApprovalExpectation(
        approvers=approvers,
        quorum=_int(raw, "quorum", base=path),
        pending_ttl=_duration(raw, "pending_ttl", base=path),
        grant_ttl=_duration(raw, "grant_ttl", base=path),
        rules=frozenset(_strings(raw, "rules", base=path)) if "rules" in raw else None,
    )


# --- scalar helpers ----------------------------------------------------------------------------


def _check_keys(raw: dict[str, Any], path: source.Path_, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            raise _Invalid(
                (*path, key), f"unknown key {key!r}; allowed: {', '.join(allowed)}", key=True
            )


def _string(
    raw: dict[str, Any], key: str, *, required: bool = False, base: source.Path_ = ()
) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise _Invalid(base, f"missing `{key}`")
        return None
    if not isinstance(value, str):
        raise _Invalid((*base, key), f"`{key}` must be a string")
    return value


def _strings(raw: dict[str, Any], key: str, *, base: source.Path_ = ()) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid((*base, key), f"`{key}` must be a list of strings")
    return list(value)


def _int(raw: dict[str, Any], key: str, *, base: source.Path_ = ()) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid((*base, key), f"`{key}` must be an integer")
    return value


def _duration(raw: dict[str, Any], key: str, *, base: source.Path_ = ()) -> dt.timedelta | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_duration(value)
    except ValueError:
        raise _Invalid((*base, key), f"`{key}` must be a duration like 15m, 1h, 2h30m") from None


def _timestamp(raw: dict[str, Any], key: str, *, base: source.Path_ = ()) -> dt.datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    where = (*base, key)
    if not isinstance(value, str):
        raise _Invalid(where, f"`{key}` must be an RFC 3339 timestamp string")
    return _parse_timestamp(value, where)


def _parse_timestamp(text: str, where: source.Path_ = ()) -> dt.datetime:
    """An RFC 3339 timestamp with an explicit offset, e.g. 2026-03-02T14:00:00Z, in UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Invalid(where, f"{text!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise _Invalid(where, f"{text!r} needs a UTC offset, e.g. 2026-03-02T14:00:00Z")
    return value.astimezone(dt.UTC)
