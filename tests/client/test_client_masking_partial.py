"""PARTIAL hides the same characters on every Python, and never gives back a whole value."""

from __future__ import annotations

import glob
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import signoff.client.partial as partial_module
from signoff.client import REDACTED, apply_mask
from signoff.v1 import signoff_pb2 as pb

# Letters Python 3.11 (Unicode 14) does not know: Kawi, Nag Mundari, CJK Extension H and a
# Cyrillic modifier letter are Unicode 15.0; Sunuwar is Unicode 16.0, unknown to 3.11-3.13.
NEWER_LETTERS = ["\U00011f04", "\U0001e4d0", "\U00031350", "\U0001e030", "\U00011bc0"]
# Every code point of the planes Unicode assigns characters in (0-3 and 14), but the surrogates
# (a str may hold them, but no text on the wire does).
PLANES = [*range(0x40000), *range(0xE0000, 0xF0000)]
EVERY_CODE_POINT = "".join(chr(c) for c in PLANES if not 0xD800 <= c <= 0xDFFF)


def partial(value: Any, keep_first: int = 0, keep_last: int = 0) -> Any:
    entry = pb.FieldMask(
        path="v", operator=pb.MASK_OPERATOR_PARTIAL, keep_first=keep_first, keep_last=keep_last
    )
    return apply_mask({"v": value}, pb.MaskingPlan(fields=[entry]))["v"]


@pytest.mark.parametrize("letter", NEWER_LETTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_letters_newer_than_the_interpreters_unicode_are_masked(letter: str) -> None:
    assert partial(letter) == "*"
    assert partial(f"a{letter}b", 1, 1) == "a*b"


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("\U0001f44d\U0001f3fd", "**"),  # thumbs up, skin tone: an emoji is content
        ("\u00a7\u00b6\u2022", "***"),  # non-ASCII punctuation is content too
        ("a\u00a0b", "***"),  # so is a no-break space
        ("4111 1111-1111/1234", "**** ****-****/1234"),
    ],
)
def test_only_ascii_non_alphanumerics_are_separators(value: str, masked: str) -> None:
    assert partial(value, 0, 4 if "/" in value else 0) == masked


@pytest.mark.parametrize(
    ("value", "keep_first", "keep_last"),
    [("!$%&", 0, 0), ("--", 1, 1), ("***", 0, 0), (" ", 0, 0), ("\n", 3, 0)],
)
def test_a_value_of_separators_only_is_redacted(
    value: str, keep_first: int, keep_last: int
) -> None:
    assert partial(value, keep_first, keep_last) == REDACTED


def test_the_mask_character_is_a_separator_so_masking_always_changes_content() -> None:
    assert partial("a*b", 1, 1) == "***"


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.text(), st.text(alphabet="*-! ab\U0001f44d\u00a0")),
    keep_first=st.integers(0, 2**32 - 1) | st.integers(0, 6),
    keep_last=st.integers(0, 2**32 - 1) | st.integers(0, 6),
)
def test_partial_never_gives_back_the_value_unless_it_is_empty(
    value: str, keep_first: int, keep_last: int
) -> None:
    masked = partial(value, keep_first, keep_last)
    assert masked != value or value == ""


def _other_pythons() -> list[str]:
    """Interpreters other than this one; their Unicode tables differ (3.11: 14.0, 3.12: 15.0,
    3.13: 15.1)."""
    found: dict[str, str] = {}
    for version in ("3.11", "3.12", "3.13"):
        if version == "{}.{}".format(*sys.version_info[:2]):
            continue
        candidates = [shutil.which(f"python{version}") or ""]
        candidates += sorted(glob.glob(f"/root/.pyenv/versions/{version}*/bin/python{version}"))
        for candidate in filter(None, candidates):
            probe = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == version:
                found[version] = candidate
                break
    return sorted(found.values())


_ON_OTHER_PYTHON = """
import hashlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("partial", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
text = sys.stdin.buffer.read().decode("utf-8")
print(hashlib.sha256(module.partial_text(text, 0, 0).encode()).hexdigest())
"""


def test_partial_hides_the_same_code_points_on_python_3_11_to_3_13() -> None:
    others = _other_pythons()
    if not others:
        pytest.skip("no other python3.11 to 3.13 on this machine")
    # The module is stdlib only, so any interpreter can run the rule without the client's deps.
    source = str(Path(partial_module.__file__))
    here = hashlib.sha256(partial(EVERY_CODE_POINT).encode()).hexdigest()
    for python in others:
        there = (
            subprocess.run(
                [python, "-c", _ON_OTHER_PYTHON, source],
                input=EVERY_CODE_POINT.encode(),
                capture_output=True,
                check=True,
                timeout=60,
            )
            .stdout.decode()
            .strip()
        )
        assert there == here, python
