"""One line of untrusted text: the one way outside values are neutralised for logs and chat."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# What can break a line, hide text or make it display as something else: controls (CR, LF,
# C0, C1), format characters (zero-width characters, bidi marks, overrides and isolates, BOM,
# tags), lone surrogates (unencodable), and the line and paragraph separators.
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Printable ASCII is never a control; everything else gets a look at its category.
_SUSPECT = re.compile(r"[^\x20-\x7e]")


def is_control(char: str) -> bool:
    return unicodedata.category(char) in CONTROL_CATEGORIES


def _neutralise(text: str, render: Callable[[str], str]) -> str:
    return _SUSPECT.sub(lambda m: render(m[0]) if is_control(m[0]) else m[0], text)


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def _plain(char: str) -> str:
    return " " if char.isspace() else "\ufffd"


def escape_line(text: str) -> str:
    """`text` on one line for a log: each control character as its escape (`\\n`, `\\u202e`),
    so the record stays one line and still shows exactly what came in."""
    return _neutralise(text, _escape)


def plain_line(text: str) -> str:
    """`text` on one line for people: line breaks as spaces, other controls as U+FFFD."""
    return _neutralise(text, _plain)
