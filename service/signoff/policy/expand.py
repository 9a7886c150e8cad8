"""Inline expansion of policy variables (`V.name`) with a map back to original offsets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_REF = re.compile(r"(?<![\w.])V\.([A-Za-z_][A-Za-z0-9_]*)")


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


def _string_spans(text: str) -> list[tuple[int, int]]:
    """Spans of CEL string and bytes literals, so references inside them are left alone."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            raw = i > 0 and text[i - 1] in "rR"
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else ch
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                j += 2 if (text[j] == "\\" and not raw) else 1
            end = min(j + len(quote), n)
            spans.append((i, end))
            i = end
        elif ch == "/" and text[i : i + 2] == "//":
            j = text.find("\n", i)
            end = n if j < 0 else j
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def references(text: str) -> list[tuple[str, int]]:
    """Variable references (name, offset) outside string literals."""
    if "V." not in text:
        return []  # nothing the pattern could match: skip scanning for string literals
    spans = _string_spans(text)
    return [
        (m[1], m.start())
        for m in _REF.finditer(text)
        if not any(a <= m.start() < b for a, b in spans)
    ]


def expand(text: str, lookup: Callable[[str], str | None]) -> Expansion:
    """Replace each `V.name` by `(definition)`; `lookup` returns the expanded definition."""
    out: list[str] = []
    segments: list[Segment] = []
    used: set[str] = set()
    pos = 0
    cursor = 0
    for name, offset in references(text):
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
