"""Inline expansion of policy variables (`V.name`) with a map back to original offsets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from signoff.engine.celscan import variable_references


class UnknownVariable(Exception):
    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.offset = offset
        super().__init__(name)


@dataclass(frozen=True)
class Segment:
    expanded_start: int
    expanded_end: int
    original_start: int
    literal: bool  # False: text inserted for a variable reference at original_start


@dataclass(frozen=True)
class Expansion:
    text: str
    segments: tuple[Segment, ...]
    used: frozenset[str]

    def original_offset(self, expanded: int) -> int:
        for seg in self.segments:
            if seg.expanded_start <= expanded < seg.expanded_end:
                if seg.literal:
                    return seg.original_start + expanded - seg.expanded_start
                return seg.original_start
        if not self.segments:
            return 0
        last = self.segments[-1]  # past the end (e.g. "unexpected end of input"): clamp to it
        if last.literal:
            return last.original_start + max(last.expanded_end - last.expanded_start - 1, 0)
        return last.original_start

    def offset_of(self, line: int, column: int) -> int:
        """Offset in the expanded text of a 1-based line/column."""
        lines = self.text.split("\n")
        line = min(max(line, 1), len(lines))
        return sum(len(x) + 1 for x in lines[: line - 1]) + max(column - 1, 0)


def expand(text: str, lookup: Callable[[str], str | None]) -> Expansion:
    """Replace each `V.name` by `(definition)`; `lookup` returns the expanded definition."""
    out: list[str] = []
    segments: list[Segment] = []
    used: set[str] = set()
    pos = 0
    cursor = 0
    for name, offset in variable_references(text):
        body = lookup(name)
        if body is None:
            raise UnknownVariable(name, offset)
        used.add(name)
        if offset > cursor:
            out.append(text[cursor:offset])
            segments.append(Segment(pos, pos + offset - cursor, cursor, True))
            pos += offset - cursor
        inserted = f"({body})"
        out.append(inserted)
        segments.append(Segment(pos, pos + len(inserted), offset, False))
        pos += len(inserted)
        cursor = offset + len(name) + 2
    if cursor < len(text) or not segments:
        out.append(text[cursor:])
        segments.append(Segment(pos, pos + len(text) - cursor, cursor, True))
    return Expansion("".join(out), tuple(segments), frozenset(used))
