"""identity_key: one normal form for ids, that case, width, spaces and invisibles cannot split."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.identities import identity_key, is_blank_identity, same_identity

# Bounded: each property runs in well under a second.
BOUNDED = settings(max_examples=300, deadline=None)

INVISIBLES = (
    "\t\n\r\x0b\x0c\x1c\x85\xa0\xad\u034f\u061c\u115f\u1160\u17b4\u180b\u180e\u200b\u200c"
    "\u200d\u200e\u200f\u2028\u2029\u202a\u202e\u2060\u2061\u2064\u2066\u2069\u2800\u3000"
    "\u3164\ufe00\ufe0f\ufeff\uffa0\U000e0001\U000e0041\U000e0100 "
)
invisible = st.sampled_from(INVISIBLES)
any_text = st.text(max_size=24)
# Printable ASCII with at least one letter or digit: what ordinary ids are made of.
ascii_id = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24)


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@BOUNDED
@given(any_text)
def test_the_normal_form_is_its_own_normal_form(value: str) -> None:
    key = identity_key(value)
    assert identity_key(key) == key


@BOUNDED
@given(any_text)
def test_the_normal_form_holds_nothing_invisible_and_is_nfkc(value: str) -> None:
    key = identity_key(value)
    assert unicodedata.normalize("NFKC", key) == key
    for char in key:
        assert not char.isspace()
        assert unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp"}
        assert char not in INVISIBLES


@BOUNDED
@given(any_text, st.lists(st.tuples(st.integers(0, 24), invisible), max_size=6))
def test_invisible_characters_anywhere_do_not_change_an_identity(
    value: str, inserts: list[tuple[int, str]]
) -> None:
    spelled = value
    for at, char in inserts:
        spelled = spelled[:at] + char + spelled[at:]
    assert same_identity(spelled, value)


@BOUNDED
@given(st.text(invisible, max_size=12))
def test_a_string_of_invisible_characters_names_nobody(value: str) -> None:
    assert is_blank_identity(value)


@BOUNDED
@given(ascii_id)
def test_case_and_width_do_not_change_an_ascii_identity(value: str) -> None:
    assert same_identity(value.upper(), value.lower())
    assert same_identity(fullwidth(value), value)
    assert not is_blank_identity(value)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Alice@Acme.io", "alice@acme.io"),
        ("bob\u200b@acme.io", "bob@acme.io"),
        ("e\u200b\u0301ric@acme.io", "\u00e9ric@acme.io"),  # accent composes once the gap is gone
        ("strau\u00df@acme.io", "STRAUSS@ACME.IO"),
        ("\ufb01ona@acme.io", "fiona@acme.io"),
    ],
    ids=ascii,
)
def test_known_spellings_are_the_same_identity(a: str, b: str) -> None:
    assert same_identity(a, b)


@pytest.mark.parametrize(("a", "b"), [("bob@acme.io", "rob@acme.io"), ("ann", "anne")])
def test_different_ids_stay_different(a: str, b: str) -> None:
    assert not same_identity(a, b)
