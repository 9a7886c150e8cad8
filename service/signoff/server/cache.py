"""Recent decisions by their request's wire bytes: an edge cache in front of the decision core."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from signoff.decisions import Decided
from signoff.engine.celscan import CLOCK_FREE
from signoff.engine.evaluator import Engine
from signoff.engine.model import Request


class DecisionCache:
    """Decisions of one engine (one bundle revision), keyed by the request's exact bytes.

    Bytes identical to an earlier request's decode to the same request, and the engine is a
    pure function of the request, the bundle and the time. An entry is reused only within the
    step of time its rules cannot tell apart (an hour-of-day rule: the same quarter hour; a
    rule that compares `now` to a timestamp: never). A decision that met an evaluation error
    is not kept. Entries go oldest first once `max_entries` are held; requests over
    `max_key_bytes` are not kept.
    """

    def __init__(self, engine: Engine, max_entries: int = 4096, max_key_bytes: int = 4096) -> None:
        self.engine = engine
        self._entries: dict[bytes, Decided] = {}
        self._max = max_entries
        self._max_key = max_key_bytes
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def keeps(self) -> bool:
        """Whether anything is ever kept: when not, a caller need not encode its key."""
        return self._max > 0

    def lookup(self, key: bytes) -> Decided | None:
        """The kept decision for `key` while it still holds, else None."""
        found = self._entries.get(key)
        if found is not None and (
            found.steady_for == CLOCK_FREE
            or found.period == _period(self.engine.now().timestamp(), found.steady_for)
        ):
            return found
        return None

    def decide(self, key: bytes, parse: Callable[[], Request]) -> Decided:
        """The decision for the request encoded as `key`; `parse` decodes it on a miss and may
        raise InvalidRequest, which is never cached."""
        found = self.lookup(key)
        if found is not None:
            return found
        request = parse()
        at = self.engine.now()
        decided = Decided(request, self.engine.decide(request, at))
        if not self.keeps or len(key) > self._max_key or decided.decision.errored_rules:
            return decided
        steady = self.engine.steady_for(request.resource.kind, request.action)
        if steady > 0:
            decided.steady_for = steady
            decided.period = _period(at.timestamp(), steady)
            with self._lock:
                self._entries.pop(key, None)
                while len(self._entries) >= self._max:
                    del self._entries[next(iter(self._entries))]
                self._entries[key] = decided
        return decided


def _period(timestamp: float, steady_for: float) -> int:
    return 0 if steady_for == CLOCK_FREE else math.floor(timestamp / steady_for)
