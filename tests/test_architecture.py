"""The shape of the house: protobuf stays at the edge, the core rooms never reach it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

ROOTS = (REPO / "service", REPO / "clients" / "python")
GENERATED = "signoff.v1"
# Where protobuf may be imported: the gRPC surface, the commands that start it, and the client
# package (its stubs and the adapters that take protobuf from callers).
EDGE = ("signoff.server", "signoff.cmd", "signoff.cli", "signoff.client", "signoff.v1")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in (root / "signoff").rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: not function or class bodies
    (imports there are lazy), not `if TYPE_CHECKING:` blocks (only the type checker runs them)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _module_level(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _module_level([n for n in inner if isinstance(n, ast.stmt)])
        for handler in getattr(node, "handlers", []):
            yield from _module_level(handler.body)


def imports_of(name: str) -> Iterator[str]:
    """Every module that importing `name` imports (its module-level imports)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def reachable(start: str) -> dict[str, str]:
    """Each signoff module `start` reaches through imports, with the module that imports it."""
    seen = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in imports_of(current):
            if target in MODULES and target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def chain(seen: dict[str, str], end: str) -> str:
    path = [end]
    while seen[path[-1]]:
        path.append(seen[path[-1]])
    return " <- ".join(path)


def in_edge(name: str) -> bool:
    return any(name == e or name.startswith(e + ".") for e in EDGE)


CORE = sorted(name for name in MODULES if name.startswith("signoff.") and not in_edge(name))


def test_the_core_modules_are_found() -> None:
    assert {"signoff.engine.evaluator", "signoff.views", "signoff.approvals.store"} <= set(CORE)


@pytest.mark.parametrize("name", CORE)
def test_no_module_outside_the_edge_reaches_generated_protobuf_code(name: str) -> None:
    seen = reachable(name)
    reached = [m for m in seen if m == GENERATED or m.startswith(GENERATED + ".")]
    assert not reached, chain(seen, reached[0])
