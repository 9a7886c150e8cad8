"""YAML parsing that keeps the line and column of every node, so errors point into the file."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


class YamlSyntaxError(Exception):
    """The file is not valid YAML (or has duplicate keys); carries the position."""

    def __init__(self, position: Position, message: str) -> None:
        self.position = position
        super().__init__(message)


@dataclass
class SourceFile:
    """A parsed YAML file: plain data plus a position for every node path."""

    name: str
    text: str
    data: Any
    nodes: dict[Path_, yaml.Node]
    # Item paths that failed structural validation and are skipped when compiling.
    unusable: frozenset[Path_] = frozenset()

    def position(self, path: Path_) -> Position:
        """Position of the node at `path`, or of its nearest existing ancestor."""
        while path not in self.nodes and path:
            path = path[:-1]
        node = self.nodes.get(path)
        if node is None:
            return Position(1, 1)
        return Position(node.start_mark.line + 1, node.start_mark.column + 1)

    def key_position(self, path: Path_) -> Position:
        """Position of the mapping key that introduces `path` (better for 'missing x' errors)."""
        key = self.nodes.get(("<key>", *path))
        if key is None:
            return self.position(path)
        return Position(key.start_mark.line + 1, key.start_mark.column + 1)

    def scalar_locator(self, path: Path_) -> ScalarLocator:
        node = self.nodes.get(path)
        if not isinstance(node, yaml.ScalarNode):
            pos = self.position(path)
            return ScalarLocator(pos, None)
        return ScalarLocator.for_node(node, self.text)


@dataclass(frozen=True)
class ScalarLocator:
    """Maps a character offset inside a scalar's value back to a file position."""

    start: Position
    offsets: tuple[tuple[int, int, int], ...] | None  # (value_offset, line, column) per line start

    @staticmethod
    def for_node(node: yaml.ScalarNode, text: str) -> ScalarLocator:
        start = Position(node.start_mark.line + 1, node.start_mark.column + 1)
        lines = text.splitlines()
        style = node.style
        if style in ("'", '"') or style is None:
            if node.start_mark.line != node.end_mark.line:
                return ScalarLocator(start, None)  # folded flow scalar: only the start is exact
            shift = 1 if style in ("'", '"') else 0
            return ScalarLocator(start, ((0, start.line, start.column + shift),))
        if style == "|":
            # The literal block's content begins on the line after the indicator.
            first = node.start_mark.line + 1
            table: list[tuple[int, int, int]] = []
            offset = 0
            indent: int | None = None
            for lineno in range(first, min(node.end_mark.line + 1, len(lines))):
                raw = lines[lineno]
                if indent is None and raw.strip():
                    indent = len(raw) - len(raw.lstrip(" "))
                col = (indent or 0) + 1
                table.append((offset, lineno + 1, col))
                offset += max(len(raw) - (indent or 0), 0) + 1
            return ScalarLocator(start, tuple(table) if table else None)
        return ScalarLocator(start, None)

    def locate(self, offset: int) -> Position:
        if not self.offsets:
            return self.start
        starts = [o[0] for o in self.offsets]
        i = max(bisect.bisect_right(starts, offset) - 1, 0)
        base, line, col = self.offsets[i]
        return Position(line, col + offset - base)


def _construct(node: yaml.Node, path: Path_, nodes: dict[Path_, yaml.Node]) -> Any:
    nodes[path] = node
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar_value(key_node)
            if not isinstance(key, str):
                raise YamlSyntaxError(_pos(key_node), "mapping keys must be strings")
            if key in out:
                raise YamlSyntaxError(_pos(key_node), f"duplicate key {key!r}")
            nodes[("<key>", *path, key)] = key_node
            out[key] = _construct(value_node, (*path, key), nodes)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), nodes) for i, item in enumerate(node.value)]
    return _scalar_value(node)


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


_RESOLVER = yaml.SafeLoader("")


def _scalar_value(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise YamlSyntaxError(_pos(node), "expected a scalar")
    # Resolve tags the way SafeLoader does, without PyYAML's timestamp magic: dates stay strings.
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    constructor = yaml.SafeLoader.yaml_constructors.get(node.tag)
    if constructor is None:
        raise YamlSyntaxError(_pos(node), f"unsupported YAML tag {node.tag}")
    return constructor(_RESOLVER, node)


def parse(name: str, text: str) -> SourceFile:
    """Parse one YAML document, raising YamlSyntaxError with a position on failure."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        raise YamlSyntaxError(pos, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(1, 1), f"invalid YAML: {exc}") from None
    nodes: dict[Path_, yaml.Node] = {}
    data = None if root is None else _construct(root, (), nodes)
    return SourceFile(name=name, text=text, data=data, nodes=nodes)
