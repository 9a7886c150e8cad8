"""Shared fixtures: temporary policy bundles and a pinned clock."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"

WriteRules = Callable[..., Path]


@pytest.fixture
def write_rules(tmp_path: Path) -> WriteRules:
    """Write {filename: yaml text} into a fresh rules directory and return it."""
    counter = iter(range(1_000_000))

    def write(files: dict[str, str] | None = None, /, **named: str) -> Path:
        root = tmp_path / f"rules{next(counter)}"
        root.mkdir()
        for name, text in {**(files or {}), **named}.items():
            fname = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
            (root / fname).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return root

    return write


def fixed_clock(iso: str) -> Callable[[], dt.datetime]:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return lambda: when
