"""The audit hash chain: canonical JSON, keyed record hashes, anchor seals, and key layout."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

from signoff.keys import derive

GENESIS: Final = "0" * 64
STREAMS: Final = ("decisions", "approvals")
# Added to every stored record by the log or by export; a caller's record must not use them.
RESERVED: Final = frozenset({"seq", "prev", "hash", "entry_id", "stream"})
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def audit_key(root: bytes) -> bytes:
    """The chain key derived from the root secret (see signoff.keys): only holders of the root
    or of this key can extend a chain; the masking key pipelines hold cannot."""
    return derive(root, "audit")


# The one canonical encoder; the audit writer also encodes single values with it.
ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# Stands in for a Canonical value while the rest of a record is encoded. A NUL cannot occur
# in canonical text except escaped, and the random part cannot be guessed by a caller who
# would like their own string replaced by text of their choosing.
SLOT = "\x00" + secrets.token_hex(16) + "-{}\x00"


class Canonical(str):
    """A value already encoded as canonical JSON, written into a record as that JSON.

    A decision's request view is the same for every repeat of a request: encoding it once
    saves most of the work of encoding each record.
    """

    @staticmethod
    def of(value: Any) -> Canonical:
        return Canonical(canonical_json(value))


def no_constants(name: str) -> Any:
    """For json.loads(parse_constant=...): NaN and Infinity are not JSON, so not a record."""
    raise ValueError(f"{name} is not JSON")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text; NaN and infinities are refused (they are not JSON).
    Top-level Canonical values are written as the JSON they hold."""
    if type(value) is dict and any(type(v) is Canonical for v in value.values()):
        slots: dict[str, str] = {}
        plain = {}
        for k, v in value.items():
            if type(v) is Canonical:
                slot = SLOT.format(len(slots))
                slots[ENCODER.encode(slot)] = v
                v = slot
            plain[k] = v
        text = ENCODER.encode(plain)
        for slot, raw in slots.items():
            text = text.replace(slot, raw, 1)
        return text
    return ENCODER.encode(value)


class Hasher:
    """HMAC-SHA256 over `prev || canonical_json(record)`, with the keyed state computed once."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the audit key must not be empty")
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def record(self, prev: str, data: bytes) -> str:
        """The hash of a record whose canonical JSON (without `hash`), UTF-8, is `data`."""
        mac = self._base.copy()
        mac.update(bytes.fromhex(prev))
        mac.update(data)
        return mac.hexdigest()

    def seal(self, stream: str, seq: int, prev: str) -> str:
        # The stream name is sealed in, so an anchor cannot be copied from the other stream.
        mac = self._base.copy()
        mac.update(f"anchor\x00{stream}\x00{seq}\x00{prev}".encode())
        return mac.hexdigest()

    def anchor(self, stream: str, seq: int, prev: str) -> str:
        """The anchor value `seq prev seal` naming the first retained record of `stream`."""
        return f"{seq} {prev} {self.seal(stream, seq, prev)}"

    def open_anchor(self, stream: str, value: str | None) -> tuple[int, str] | None:
        """(seq, prev) from a stored anchor, or None when it is missing, malformed or unsealed."""
        if value is None:
            return None
        parts = value.split(" ")
        if len(parts) != 3 or not parts[0].isdigit() or not is_hash(parts[1]):
            return None
        seq, prev, seal = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(seal, self.seal(stream, seq, prev)):
            return None
        return seq, prev


def is_hash(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def parse_head(value: str | None) -> tuple[int, str] | None:
    """(seq, hash) from a head value `seq hash`; None when missing or malformed."""
    if not value:
        return None
    parts = value.split(" ")
    if len(parts) != 2 or not parts[0].isdigit() or not is_hash(parts[1]):
        return None
    return int(parts[0]), parts[1]


_second: tuple[int, str] = (-1, "")


def rfc3339_ms(ns: int) -> str:
    """`2025-03-03T14:00:00.123Z` for a time in nanoseconds since the epoch."""
    global _second  # a one-entry cache; the tuple is replaced atomically
    seconds, millis = divmod(ns // 1_000_000, 1000)
    cached = _second
    if cached[0] != seconds:
        text = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _second = (seconds, text)
    return f"{cached[1]}.{millis:03d}Z"


def normalise_time(raw: str) -> str | None:
    """An RFC 3339 time re-written as UTC with milliseconds; None if it is not one."""
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    utc = when.astimezone(dt.UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamKeys:
    """The Redis keys of one audit stream under a prefix."""

    name: str
    stream: str
    head: str
    anchor: str

    @classmethod
    def of(cls, prefix: str, name: str) -> StreamKeys:
        if name not in STREAMS:
            raise ValueError(f"unknown audit stream {name!r}; choose {', '.join(STREAMS)}")
        base = f"{prefix}audit:{name}"
        return cls(name=name, stream=base, head=f"{base}:head", anchor=f"{base}:anchor")
