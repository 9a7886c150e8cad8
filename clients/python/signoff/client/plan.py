"""A masking plan as plain values: what `apply_mask` reads, whichever wire carried the plan."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MaskEntry", "MaskOperator", "MaskPlan"]


class MaskOperator(enum.IntEnum):
    """How a masked value is replaced; the numbers are the API's MaskOperator numbers, so a
    plan read off the wire keeps an operator this client does not know as its number."""

    NULLIFY = 1
    REDACT = 2
    HASH = 3
    EMAIL = 4
    PARTIAL = 5


@dataclass(frozen=True)
class MaskEntry:
    """One plan entry: a dot path ("*" matches any key or index) and how to mask what it names.

    `operator` is a MaskOperator, or the bare number of one this client does not know (masking
    refuses such an entry). `key_id` names the HMAC key of a HASH entry.
    """

    path: str
    operator: int
    keep_first: int = 0
    keep_last: int = 0
    key_id: str = ""
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaskPlan:
    """The fields to mask before data leaves, in the order the service listed them."""

    fields: tuple[MaskEntry, ...] = ()
