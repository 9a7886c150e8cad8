"""PARTIAL's rule on text: stdlib only and free of Unicode tables, so every Python agrees."""

from __future__ import annotations

import string

__all__ = ["MASK_CHAR", "SEPARATORS", "is_content", "partial_text"]

MASK_CHAR = "*"
# A closed set instead of Unicode general categories: categories come from the interpreter's
# Unicode tables (14.0 on Python 3.11, 15.0 on 3.12), so a letter new in Unicode 15 was content
# on one side and a separator on the other. Only ASCII is kept as separators, and only what is
# neither letter nor digit; every other code point, whatever it is or will become, is content.
SEPARATORS = frozenset(chr(c) for c in range(0x80)) - frozenset(
    string.ascii_letters + string.digits
)


def is_content(char: str) -> bool:
    """Whether PARTIAL may hide `char`: anything but the ASCII separators."""
    return char not in SEPARATORS


def partial_text(text: str, keep_first: int, keep_last: int) -> str:
    """`text` with its content characters hidden except the first `keep_first` and the last
    `keep_last`; all of them when those would together reveal every one."""
    positions = [i for i, char in enumerate(text) if is_content(char)]
    if keep_first + keep_last >= len(positions):
        hidden = set(positions)
    else:
        hidden = set(positions[keep_first : len(positions) - keep_last])
    return "".join(MASK_CHAR if i in hidden else char for i, char in enumerate(text))
