"""YAML parsing that keeps the line and column of every node, so errors point into the file."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
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
    """A parsed YAML file: plain data plus a position for every node path.

    Positions are only needed to report a problem, so a file parsed on the fast path keeps
    no nodes: they are composed on first use, by the same parser as the slow path, so every
    reported position is the same either way.
    """

    name: str
    text: str
    data: Any
    # Item paths that failed structural validation and are skipped when compiling.
    unusable: frozenset[Path_] = frozenset()
    _nodes: dict[Path_, yaml.Node] | None = field(default=None, repr=False, compare=False)

    @property
    def nodes(self) -> dict[Path_, yaml.Node]:
        if self._nodes is None:
            self._nodes = _positions(self.text)
        return self._nodes

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
            key = _key(key_node)
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


_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"


def _key(node: yaml.Node) -> str:
    """A mapping key, always a name. YAML 1.1 reads a plain `on`, `off`, `yes`, `no`, `y` or
    `n` as a boolean; as a key that is never what a policy means (`off:` as an attribute
    name), so such a key is taken as written."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG and node.style is None:
        return str(node.value)
    key = _scalar_value(node)
    if not isinstance(key, str):
        kind = type(key).__name__ if key is not None else "null"
        raise YamlSyntaxError(
            _pos(node),
            f"mapping key {node.value!r} reads as a YAML {kind}, not a name: quote it "
            f'("{node.value}":) to use it as one',
        )
    return key


def _scalar_value(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise YamlSyntaxError(_pos(node), "expected a scalar")
    if node.tag == _STR_TAG:
        return node.value  # what SafeLoader's str constructor returns, without the call
    # Resolve tags the way SafeLoader does, without PyYAML's timestamp magic: dates stay strings.
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    constructor = yaml.SafeLoader.yaml_constructors.get(node.tag)
    if constructor is None:
        raise YamlSyntaxError(_pos(node), f"unsupported YAML tag {node.tag}")
    try:
        return constructor(_RESOLVER, node)
    except (ValueError, KeyError, TypeError, yaml.YAMLError):
        # An explicit tag on a value it cannot take, e.g. `!!bool ""` or `!!int x`.
        raise YamlSyntaxError(_pos(node), f"not a valid {node.tag.rsplit(':', 1)[-1]}") from None


def parse(name: str, text: str) -> SourceFile:
    """Parse one YAML document, raising YamlSyntaxError with a position on failure."""
    data = _fast_data(text)
    if data is not _SLOW:
        return SourceFile(name=name, text=text, data=data)
    nodes: dict[Path_, yaml.Node] = {}
    data = _slow_data(text, nodes)
    return SourceFile(name=name, text=text, data=data, _nodes=nodes)


def _slow_data(text: str, nodes: dict[Path_, yaml.Node]) -> Any:
    """PyYAML's pure-Python parser: the reference for data, positions and error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError(*_located(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(1, 1), f"invalid YAML: {exc}") from None
    return None if root is None else _construct(root, (), nodes)


# Openings PyYAML names as the context of an error found later, while looking for their end.
_UNCLOSED = {
    "while parsing a flow sequence": "'[' is never closed",
    "while parsing a flow mapping": "'{' is never closed",
    "while scanning a quoted scalar": "the quoted string is never closed",
}


def _located(exc: yaml.MarkedYAMLError) -> tuple[Position, str]:
    """Where to point for a YAML error, and what to say.

    PyYAML marks where it gave up; for an unclosed `[`, `{` or quote that is on some later
    line, where the mistake is not. Then the opening is reported, and where parsing stopped.
    """
    problem, context = exc.problem_mark, exc.context_mark
    message = f"invalid YAML: {exc.problem or exc}"
    opening = _UNCLOSED.get(exc.context or "")
    if opening and problem and context and problem.line > context.line:
        found = f"{exc.problem} at line {problem.line + 1}, column {problem.column + 1}"
        return Position(context.line + 1, context.column + 1), f"invalid YAML: {opening} ({found})"
    mark = problem or context
    return (Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)), message


class _Slow:
    """Marker: the fast path declined; parse with the reference parser."""


_SLOW = _Slow()
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


_CLOADER: Any = getattr(yaml, "CSafeLoader", None)  # None without libyaml


def _fast_path_exact() -> bool:
    """True while libyaml's loader resolves tags exactly as SafeLoader does (nothing added)."""
    return (
        _CLOADER is not None
        and _CLOADER.yaml_implicit_resolvers is yaml.SafeLoader.yaml_implicit_resolvers
        and _CLOADER.yaml_path_resolvers is yaml.SafeLoader.yaml_path_resolvers
        and not yaml.SafeLoader.yaml_path_resolvers
    )


class _Decline(Exception):
    """The fast path does not take this file."""


# A block scalar header as PyYAML accepts it: indicator, chomping and indentation in either
# order, then nothing but spaces and a comment. libyaml is laxer (`>#-` passes).
_BLOCK_HEADER = re.compile(r"[|>](?:[+-][1-9]?|[1-9][+-]?)?(?: +(?:#.*)?)?")
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class _Builder:
    """Plain data from libyaml's tree, as `_construct` builds it, or _Decline.

    Declines whatever `_construct` would refuse, and the constructs libyaml accepts but
    PyYAML refuses (so the reference parser reports them as before).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None

    def header_ok(self, node: yaml.Node) -> bool:
        if self._lines is None:
            self._lines = _LINE_BREAK.split(self.text)
        mark = node.start_mark
        if mark.line >= len(self._lines):
            return False
        return _BLOCK_HEADER.fullmatch(self._lines[mark.line], mark.column) is not None

    def build(self, node: yaml.Node, flow: bool) -> Any:
        if isinstance(node, yaml.ScalarNode):
            style = node.style
            if style:
                if style in ("|", ">") and not self.header_ok(node):
                    raise _Decline
            elif flow and "?" in node.value:
                raise _Decline  # PyYAML ends a plain scalar at `?` inside [...] and {...}
            return _scalar_value(node)
        if isinstance(node, yaml.MappingNode):
            flow = flow or bool(node.flow_style)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _Decline
                self.build(key_node, flow)  # declines what the reference parser words
                key = _key(key_node)
                if key in out:
                    raise _Decline
                out[key] = self.build(value_node, flow)
            return out
        if isinstance(node, yaml.SequenceNode):
            flow = flow or bool(node.flow_style)
            return [self.build(item, flow) for item in node.value]
        raise _Decline


def _fast_data(text: str) -> Any:
    """The data of a well-formed file, parsed by libyaml (several times faster), or _SLOW.

    Anything libyaml or the construction rejects goes to the reference parser, which then
    reports it exactly as before; so do characters the reference reader refuses, which it
    checks before parsing. Only accepted files are taken from here, with the same tags
    (both parsers resolve them with SafeLoader's resolver) and the same construction.

    libyaml also takes a few things PyYAML does not, and those go to the reference parser
    too: tabs (PyYAML refuses them in plain scalars and between tokens), a byte order mark
    past the start (PyYAML reads it as content), `?` in a plain scalar inside a flow
    collection (`[a?b]`) and block scalar headers PyYAML refuses (`>#`). Differential fuzzing
    of mutated policy files against the reference parser turned up no other difference.
    """
    if not _fast_path_exact() or "\t" in text or "\ufeff" in text or _NON_PRINTABLE.search(text):
        return _SLOW
    try:
        root = yaml.compose(text, Loader=_CLOADER)
        return None if root is None else _Builder(text).build(root, False)
    except Exception:  # any refusal: let the reference parser find and word the problem
        return _SLOW


def _positions(text: str) -> dict[Path_, yaml.Node]:
    """Nodes by path for a file the fast path accepted, as the slow path records them."""
    nodes: dict[Path_, yaml.Node] = {}
    try:
        _slow_data(text, nodes)
    except YamlSyntaxError:
        # Only if libyaml accepted what the reference parser refuses: use libyaml's marks.
        nodes = {}
        root = yaml.compose(text, Loader=_CLOADER)
        if root is not None:
            _construct(root, (), nodes)
    return nodes
