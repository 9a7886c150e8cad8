"""The one normal form of an identity: every comparison of who is who goes through `identity_key`.

Light on purpose (standard library only): the engine decides "owner missing" with it, and the
approvals code compares requesters, approvers and pending-cap owners with it.
"""

from __future__ import annotations

import unicodedata

from signoff.safetext import CONTROL_CATEGORIES

# Characters that show nothing (or only blank space) yet make two strings differ: every control
# a log line escapes, unassigned code points (they render as nothing today and may become
# anything tomorrow) and spaces. Besides those: Unicode's default-ignorable code points that
# are marks or letters (combining grapheme joiner, Hangul fillers, Khmer inherent vowels,
# Mongolian variation selectors, variation selectors) and the blank braille pattern.
_GONE_CATEGORIES = CONTROL_CATEGORIES | {"Cn", "Zs"}
_GONE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x2800, 0x2800),  # braille pattern blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
# NFKC, case folding and dropping invisibles each can undo another's work (a dropped joiner
# lets an accent compose, folding can leave a string NFKC would change); a few passes reach
# the fixed point for every string, which the property tests check.
_MAX_PASSES = 4


def _gone(char: str) -> bool:
    if unicodedata.category(char) in _GONE_CATEGORIES or char.isspace():
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _GONE_RANGES)


def _pass(value: str) -> str:
    value = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return "".join(c for c in value if not _gone(c))


def identity_key(value: str) -> str:
    """`value` as identities are compared: NFKC, case folded, with every invisible character and
    all whitespace removed.

    `Alice@Acme.io`, its fullwidth form, ` alice@acme.io\\u00a0` and `ali\\u200bce@acme.io` all
    give `alice@acme.io`. Whitespace goes entirely, not only at the ends: no identity we compare
    (emails, IdP subjects, agent names) tells people apart by it, and reading more spellings as
    one identity only ever refuses a self-approval or counts a vote once.
    """
    for _ in range(_MAX_PASSES):
        folded = _pass(value)
        if folded == value:
            break
        value = folded
    return value


def same_identity(a: str, b: str) -> bool:
    """Identity comparison that case, width, spacing or invisible characters cannot defeat."""
    return identity_key(a) == identity_key(b)


def is_blank_identity(value: str) -> bool:
    """True when `value` names nobody: empty once invisible characters and spaces are gone."""
    return not identity_key(value)
