"""The bundle as written: each policy file parsed and validated once, items with positions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from signoff.engine.model import Labels
from signoff.engine.schema import SECTIONS
from signoff.errors import Problem
from signoff.policy import source

SUITE_SUFFIXES = ("_test.yaml", "_test.yml")
EFFECTS = ("allow", "deny", "mask", "require_approval")


@cache
def file_schema() -> dict[str, Any]:
    """The JSON Schema every policy file must satisfy (also shipped for editors)."""
    text = (Path(__file__).parent / "policy.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _quick_check() -> Callable[[Any], Any]:
    """Answers valid/invalid like jsonschema, many times faster: fastjsonschema compiles the
    schema to Python. It implements draft-07, whose meaning for every keyword this schema
    uses is the same as 2020-12's; a file it rejects goes to jsonschema for the messages."""
    schema = {**file_schema(), "$schema": "http://json-schema.org/draft-07/schema#"}
    check: Callable[[Any], Any] = fastjsonschema.compile(schema)
    return check


def policy_files(rules_dir: Path) -> list[Path]:
    """Policy files of a bundle, in a fixed order; suites (`*_test.yaml`) are not policies."""
    files = [
        p
        for pattern in ("*.yaml", "*.yml")
        for p in rules_dir.rglob(pattern)
        if p.is_file() and not p.name.endswith(SUITE_SUFFIXES)
    ]
    return sorted(files, key=lambda p: p.relative_to(rules_dir).as_posix())


# --- what a file says -------------------------------------------------------------------------
# Items are read defensively from every file that parses to a mapping: a malformed item is
# left out, never guessed at. Lint analyses all of them; the compiler takes only the items
# schema validation left usable (`PolicyFile.usable`).


@dataclass(frozen=True)
class Declaration:
    """One `schema.<section>.<name>: <type>`; `type_name` as written (maybe not a type)."""

    path: source.Path_
    section: str
    name: str
    type_name: Any


@dataclass(frozen=True)
class DerivedRoleSpec:
    src: source.SourceFile
    path: source.Path_
    name: str
    parent_roles: tuple[str, ...]
    when: str


@dataclass(frozen=True)
class MaskSpec:
    path: source.Path_
    operator: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    keep_first: int | None  # None: not written
    keep_last: int | None


@dataclass(frozen=True)
class ApprovalSpec:
    path: source.Path_
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    quorum: int
    pending_ttl: str | None  # None: not written
    grant_ttl: str | None
    requester_identities: tuple[str, ...]


@dataclass
class PolicySpec:
    src: source.SourceFile
    path: source.Path_
    policy_id: str
    resources: tuple[str, ...]
    actions: tuple[str, ...]
    variables: dict[str, str]
    shadow: bool
    rules: list[RuleSpec] = field(default_factory=list)


@dataclass
class RuleSpec:
    policy: PolicySpec
    path: source.Path_
    id: str  # as written; `rule_id` is the `policy/rule` the rest of signoff names it by
    effect: str
    roles: tuple[str, ...]
    when: str | None
    shadow: bool  # its own, or its policy's
    reason: str
    masks: tuple[MaskSpec, ...]
    approval: ApprovalSpec | None
    labels: Labels = ()

    @property
    def rule_id(self) -> str:
        return f"{self.policy.policy_id}/{self.id}"


@dataclass
class PolicyFile:
    src: source.SourceFile
    # False when schema validation rejects the file as a whole.
    usable: bool
    declarations: list[Declaration] = field(default_factory=list)
    derived_roles: list[DerivedRoleSpec] = field(default_factory=list)
    policies: list[PolicySpec] = field(default_factory=list)
    # Every role name any rule selects on, including rules too broken to read further.
    selected_roles: set[str] = field(default_factory=set)

    def compiles(self, path: source.Path_) -> bool:
        """Whether the compiler takes the item at `path` (validation left it usable)."""
        return self.usable and path not in self.src.unusable


@dataclass
class Bundle:
    """Every policy file of a rules directory as written, and the problems parsing found."""

    root: Path
    files: list[Path]
    contents: dict[Path, bytes]  # the bytes that were parsed, by file
    parsed: list[PolicyFile]
    problems: list[Problem]

    @property
    def complete(self) -> bool:
        """False when a file could not be read as a mapping: bundle-wide claims are guesses."""
        return len(self.parsed) == len(self.files)

    def policies(self) -> Iterator[PolicySpec]:
        for f in self.parsed:
            yield from f.policies

    def derived_roles(self) -> Iterator[DerivedRoleSpec]:
        for f in self.parsed:
            yield from f.derived_roles

    def selected_roles(self) -> set[str]:
        return {name for f in self.parsed for name in f.selected_roles}


def read(root: Path) -> Bundle:
    """Parse and validate every policy file under `root` (a directory that exists)."""
    files = policy_files(root)
    bundle = Bundle(root, files, {}, [], [])
    for path in files:
        name = str(path)
        try:
            raw = bundle.contents[path] = path.read_bytes()
            # Universal newlines, as reading in text mode gives.
            text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            src = source.parse(name, text)
        except OSError as exc:
            bundle.problems.append(Problem(name, 0, 0, "", f"cannot read the file: {exc.strerror}"))
            continue
        except UnicodeDecodeError:
            bundle.problems.append(Problem(name, 1, 1, "", "file is not valid UTF-8"))
            continue
        except source.YamlSyntaxError as exc:
            bundle.problems.append(
                Problem(name, exc.position.line, exc.position.column, "", str(exc))
            )
            continue
        if src.data is None:
            bundle.problems.append(Problem(name, 1, 1, "", "file is empty"))
            continue
        bad = _validate_structure(bundle.problems, src)
        src.unusable = frozenset(bad)
        if isinstance(src.data, dict):
            bundle.parsed.append(_read_file(src, () not in bad))
    return bundle


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _read_labels(value: Any) -> Labels:
    """`labels: {compliance: [soc2, gdpr]}` as sorted pairs; the schema has vetted the shape."""
    if not isinstance(value, dict):
        return ()
    return tuple(
        (key, tuple(sorted(set(values))))
        for key, written in sorted(value.items(), key=lambda kv: str(kv[0]))
        if isinstance(key, str) and (values := _strings(written))
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _read_file(src: source.SourceFile, usable: bool) -> PolicyFile:
    data: dict[str, Any] = src.data
    out = PolicyFile(src, usable)
    schema = data.get("schema")
    if isinstance(schema, dict):
        for section, attrs in schema.items():
            if section in SECTIONS and isinstance(attrs, dict):
                out.declarations.extend(
                    Declaration(("schema", section, name), section, name, type_name)
                    for name, type_name in attrs.items()
                )
    for i, spec in enumerate(_list(data.get("derived_roles"))):
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            when = spec.get("when")
            if isinstance(when, str):
                parents = _strings(spec.get("parent_roles", [])) or ()
                out.derived_roles.append(
                    DerivedRoleSpec(src, ("derived_roles", i), spec["name"], parents, when)
                )
    for i, spec in enumerate(_list(data.get("policies"))):
        policy = _read_policy(out, src, i, spec)
        if policy is not None:
            out.policies.append(policy)
    return out


def _read_policy(out: PolicyFile, src: source.SourceFile, i: int, spec: Any) -> PolicySpec | None:
    if not isinstance(spec, dict):
        return None
    for rule in _list(spec.get("rules")):
        if isinstance(rule, dict):
            out.selected_roles.update(_strings(rule.get("roles")) or ())
    pid = spec.get("id")
    resources, actions = _strings(spec.get("resources")), _strings(spec.get("actions"))
    variables = spec.get("variables") or {}
    if not isinstance(pid, str) or not resources or not actions or not isinstance(variables, dict):
        return None
    policy = PolicySpec(
        src,
        ("policies", i),
        pid,
        resources,
        actions,
        {k: v for k, v in variables.items() if isinstance(v, str)},
        spec.get("shadow") is True,
    )
    for j, rule in enumerate(_list(spec.get("rules"))):
        if not isinstance(rule, dict):
            continue
        rid, effect, when = rule.get("id"), rule.get("effect"), rule.get("when")
        roles = _strings(rule.get("roles", []))
        if not isinstance(rid, str) or effect not in EFFECTS or roles is None:
            continue
        if when is not None and not isinstance(when, str):
            continue
        path = ("policies", i, "rules", j)
        reason = rule.get("reason")
        policy.rules.append(
            RuleSpec(
                policy,
                path,
                rid,
                str(effect),
                roles,
                when,
                policy.shadow or rule.get("shadow") is True,
                reason if isinstance(reason, str) else "",
                tuple(
                    m
                    for k, item in enumerate(_list(rule.get("mask")))
                    if (m := _read_mask((*path, "mask", k), item)) is not None
                ),
                _read_approval((*path, "approval"), rule.get("approval")),
                _read_labels(rule.get("labels")),
            )
        )
    return policy


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_mask(path: source.Path_, spec: Any) -> MaskSpec | None:
    if not isinstance(spec, dict) or not isinstance(spec.get("operator"), str):
        return None
    return MaskSpec(
        path,
        spec["operator"],
        _strings(spec.get("paths", [])) or (),
        _strings(spec.get("tags", [])) or (),
        _whole(spec.get("keep_first")),
        _whole(spec.get("keep_last")),
    )


def _read_approval(path: source.Path_, spec: Any) -> ApprovalSpec | None:
    if not isinstance(spec, dict) or not isinstance(spec.get("approvers"), dict):
        return None
    approvers = spec["approvers"]
    pending, grant = spec.get("pending_ttl"), spec.get("grant_ttl")
    return ApprovalSpec(
        path,
        _strings(approvers.get("roles", [])) or (),
        _strings(approvers.get("groups", [])) or (),
        _whole(spec.get("quorum", 1)) or 1,
        pending if isinstance(pending, str) else None,
        grant if isinstance(grant, str) else None,
        _strings(spec.get("requester_identities", [])) or (),
    )


# --- validation -------------------------------------------------------------------------------


def _rule_id_at(data: Any, path: tuple[Any, ...]) -> str:
    """`policy/rule` (or `policy`, or a derived role name) for a path inside a file."""
    try:
        if len(path) >= 2 and path[0] == "policies":
            pid = str(data["policies"][path[1]].get("id", f"#{path[1]}"))
            if len(path) >= 4 and path[2] == "rules":
                rid = str(data["policies"][path[1]]["rules"][path[3]].get("id", f"#{path[3]}"))
                return f"{pid}/{rid}"
            return pid
        if len(path) >= 2 and path[0] == "derived_roles":
            return f"derived_role:{data['derived_roles'][path[1]].get('name', path[1])}"
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return ""


def _validate_structure(problems: list[Problem], src: source.SourceFile) -> set[tuple[Any, ...]]:
    """Report schema violations; return the prefixes of the items they make unusable.

    Only the broken policy, derived role or schema section is skipped, so the rest of the file
    is still compiled and its CEL problems are reported in the same run.
    """
    try:
        _quick_check()(src.data)
        return set()
    except fastjsonschema.JsonSchemaException:
        pass  # jsonschema below says what is wrong, and where
    validator = jsonschema.Draft202012Validator(file_schema())
    bad: set[tuple[Any, ...]] = set()
    for error in sorted(validator.iter_errors(src.data), key=lambda e: list(map(str, e.path))):
        path = tuple(error.absolute_path)
        if len(path) >= 4 and path[0] == "policies" and path[2] == "rules":
            bad.add(path[:4])
        elif len(path) >= 2 and path[0] in ("policies", "derived_roles"):
            bad.add(path[:2])
        elif len(path) >= 3 and path[0] == "schema":
            bad.add(path[:3])  # one bad declaration: declared as dyn so users don't cascade
        elif path and path[0] == "schema":
            bad.add(("schema",))
        else:
            bad.add(())
        where = ".".join(str(p) for p in path) or "file"
        pos = src.position(path)
        problems.append(
            Problem(
                src.name,
                pos.line,
                pos.column,
                _rule_id_at(src.data, path),
                f"{where}: {_schema_message(error)}",
            )
        )
    return bad


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = sorted(schema.get("properties", {}))
        if allowed:
            return f"{error.message}; allowed keys: {', '.join(allowed)}"
    if error.validator == "not":
        return (
            "this effect does not take that section "
            "(mask only with effect mask, approval only with require_approval)"
        )
    return error.message
