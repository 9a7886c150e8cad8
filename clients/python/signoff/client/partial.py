"""PARTIAL's rule on text: stdlib only and free of Unicode tables, so every Python agrees."""

from __future__ import annotations

import re
import string

__all__ = ["CONTENT_PATTERN", "MASK_CHAR", "SEPARATORS", "is_content", "partial_text"]

MASK_CHAR = "*"
# A closed set instead of Unicode general categories: categories come from the interpreter's
# Unicode tables (14.0 on Python 3.11, 15.0 on 3.12), so a letter new in Unicode 15 was content
# on one side and a separator on the other. Only ASCII is kept as separators, and only what is
# neither letter nor digit; every other code point, whatever it is or will become, is content.
SEPARATORS = frozenset(chr(c) for c in range(0x80)) - frozenset(
    string.ascii_letters + string.digits
)
# The content characters as one regular-expression class (also valid RE2, for Arrow kernels).
CONTENT_PATTERN = "[0-9A-Za-z\\x{80}-\\x{10FFFF}]"
_CONTENT = re.compile("[0-9A-Za-z\x80-\U0010ffff]")
# ASCII text, the common case, is hidden by bytes.translate: one table lookup per byte in C.
_HIDE_ASCII = bytes(
    ord(MASK_CHAR) if chr(b) in string.ascii_letters + string.digits else b for b in range(256)
)


def is_content(char: str) -> bool:
    """Whether PARTIAL may hide `char`: anything but the ASCII separators."""
    return char not in SEPARATORS


def partial_text(text: str, keep_first: int, keep_last: int) -> str:
    """`text` with its content characters hidden except the first `keep_first` and the last
    `keep_last`; all of them when those would together reveal every one."""
    if keep_first < 0 or keep_last < 0:
        return _partial_by_positions(text, keep_first, keep_last)
    if text.isascii():
        hidden = text.encode().translate(_HIDE_ASCII).decode()
    else:
        hidden = _CONTENT.sub(MASK_CHAR, text)
    stars = text.count(MASK_CHAR)
    # Each content character became MASK_CHAR, a separator, so the difference counts them.
    count = hidden.count(MASK_CHAR) - stars
    if keep_first + keep_last >= count:
        return hidden
    if not stars:
        # Every MASK_CHAR in `hidden` is a content character: the cuts are found in C.
        end = len(hidden.rsplit(MASK_CHAR, keep_last)[0]) if keep_last else len(text)
        if not keep_first:  # the common "keep the last few"
            return hidden[:end] + text[end:]
        start = len(text) - len(hidden.split(MASK_CHAR, keep_first)[-1])
        return text[:start] + hidden[start:end] + text[end:]
    # Only the ends are scanned in Python: up to the last kept character at each end.
    start = 0
    seen = 0
    while seen < keep_first:
        if text[start] not in SEPARATORS:
            seen += 1
        start += 1
    end = len(text)
    seen = 0
    while seen < keep_last:
        end -= 1
        if text[end] not in SEPARATORS:
            seen += 1
    return text[:start] + hidden[start:end] + text[end:]


def _partial_by_positions(text: str, keep_first: int, keep_last: int) -> str:
    # The rule written out position by position; taken only for negative counts, which the API's
    # unsigned fields cannot carry, so a plain plan that has them masks as it always did.
    positions = [i for i, char in enumerate(text) if is_content(char)]
    if keep_first + keep_last >= len(positions):
        hidden = set(positions)
    else:
        hidden = set(positions[keep_first : len(positions) - keep_last])
    return "".join(MASK_CHAR if i in hidden else char for i, char in enumerate(text))
