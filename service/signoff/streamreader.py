"""One consumer in a Redis stream consumer group: reads, takeovers, refreshes and acks."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import redis

# An entry's id and fields. The fields are None when the entry was deleted from the stream
# after it was delivered: a consumer's own pending list (and XAUTOCLAIM before Redis 7) still
# names it, with no fields (redis-py gives nil ones as {}; a live entry has at least one).
Entry = tuple[str, Mapping[str, str] | None]


def default_consumer() -> str:
    """A consumer name unique to this process on this host."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[Entry]:
    """Normalise XREADGROUP/XAUTOCLAIM entries (RESP2 lists or RESP3 maps, str or bytes)."""
    out: list[Entry] = []
    for entry_id, fields in raw or ():
        if entry_id is None:
            continue
        if not fields:
            out.append((_decode(entry_id), None))
        else:
            out.append((_decode(entry_id), {_decode(k): _decode(v) for k, v in fields.items()}))
    return out


def _stream_entries(response: Any) -> list[Entry]:
    if isinstance(response, dict):
        out: list[Entry] = []
        for value in response.values():
            # RESP3 wraps each stream's entries in one more list.
            out += _entries(value[0] if value and isinstance(value[0], list) else value)
        return out
    return [entry for _stream, entries in response or () for entry in _entries(entries)]


@dataclass(eq=False)
class StreamGroupReader:
    """Reads `stream` as `consumer` of `group`, a batch at a time.

    `start` is where a newly created group begins: "$" for new entries only, "0" for the
    whole stream. Messages go to the owner's `log`, so they read as the owner's own.
    """

    client: redis.Redis
    stream: str
    group: str
    consumer: str
    _: KW_ONLY
    start: str
    batch_size: int
    claim_min_idle_ms: int
    log: logging.Logger = field(repr=False)
    # False until the group is known to exist; an owner resets it after a Redis error, so the
    # group is checked (and created if it went with the data) before the next read.
    group_ready: bool = field(default=False, init=False)
    _claim_cursor: str = field(default="0-0", init=False, repr=False)

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) at `start` if it does not exist."""
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self.group_ready = True

    def recreate_missing_group(self, exc: redis.ResponseError) -> None:
        """After a read failed with `exc`: if the stream or group was deleted under us
        (NOGROUP), create the group again now; otherwise raise `exc`."""
        if not str(exc).startswith("NOGROUP"):
            raise exc
        self.log.warning("consumer group %s vanished; recreating it", self.group)
        self._claim_cursor = "0-0"
        self.ensure_group()

    def read_new(self, block_ms: int) -> list[Entry]:
        """Entries never delivered to any consumer, waiting up to `block_ms` for one."""
        response = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.batch_size,
            # BLOCK 0 means "forever" to Redis; a non-positive wait means "do not block" here.
            block=block_ms if block_ms > 0 else None,
        )
        return _stream_entries(response)

    def read_own_pending(self) -> list[Entry]:
        """Entries delivered to this consumer and not yet acknowledged, oldest first."""
        response = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: "0"}, count=self.batch_size
        )
        return _stream_entries(response)

    def claim(self) -> tuple[list[Entry], list[str]]:
        """Take over entries pending on any consumer for `claim_min_idle_ms`: those taken, and
        the ids of pending entries already trimmed from the stream (Redis 7 drops them from
        the pending list itself, so they are named once, here)."""
        response: Any = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.claim_min_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch_size,
        )
        # The cursor walks the pending list over successive calls and wraps to 0-0 at the end.
        self._claim_cursor = _decode(response[0])
        trimmed = [_decode(i) for i in response[2]] if len(response) > 2 and response[2] else []
        return _entries(response[1]), trimmed

    def refresh(self, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer is still working on, so no peer takes
        them over meanwhile."""
        if entry_ids:
            self.client.xclaim(
                self.stream, self.group, self.consumer, 0, list(entry_ids), justid=True
            )

    def ack(self, entry_id: str) -> None:
        self.client.xack(self.stream, self.group, entry_id)
