"""What every benchmark hands `make bench`: its measured targets, a Markdown section, raw data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """One performance target: what was measured (with the ratio), the limit, and the verdict."""

    name: str
    measured: str
    limit: str
    passed: bool


@dataclass
class Section:
    """One benchmark's contribution to bench/results and docs/performance.md."""

    title: str
    targets: list[Target] = field(default_factory=list)
    markdown: str = ""  # tables for the results page, without the title
    data: dict[str, Any] = field(default_factory=dict)  # written to bench/results/latest.json


# A benchmark module that takes part in `make bench` defines
#     def section(quick: bool = False) -> Section
# quick=True runs tiny sizes in a second or two and still checks every answer: the test
# command runs it, so no change can silently break the benchmark.
SectionFn = Callable[[bool], Section]


def ratio_target(
    name: str, a: float, b: float, unit: str, limit: float, *, at_most: bool
) -> Target:
    """`name`: a against b as a ratio, passing when a/b <= limit (at_most) or >= limit."""
    r = a / b if b else float("inf")
    return Target(
        name,
        f"{a:.1f} vs {b:.1f} {unit} = {r:.2f}x",
        f"{'<=' if at_most else '>='} {limit}x",
        r <= limit if at_most else r >= limit,
    )
