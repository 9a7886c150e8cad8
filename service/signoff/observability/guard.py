"""Keeps telemetry failures away from decisions: caught, logged rarely, never raised."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("signoff.telemetry")


class Shield:
    """Catches exceptions from telemetry code and logs each kind at most once per interval.

    A broken exporter or SDK fails on every request: logging each one would flood the log and
    slow the very decisions telemetry is meant to observe.
    """

    def __init__(
        self, *, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # operation -> (when last logged, failures since then that were not logged)
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, operation: str) -> _Guard:
        """A context manager that swallows and reports any exception raised in its block."""
        return _Guard(self, operation)

    def report(self, operation: str, exc: BaseException) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(operation)
            if last is not None and now - last[0] < self._interval:
                self._last[operation] = (last[0], last[1] + 1)
                return
            suppressed = last[1] if last is not None else 0
            self._last[operation] = (now, 0)
        # The message of an SDK exception may quote attribute values: type and place only.
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        log.warning(
            "telemetry %s failed: %s at %s; carrying on without it (%d more not logged)",
            operation,
            type(exc).__name__,
            where,
            suppressed,
        )


class _Guard:
    def __init__(self, shield: Shield, operation: str) -> None:
        self._shield = shield
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit and friends are not ours to swallow
        # Even logging may fail (a closed stream); the decision goes on regardless.
        with contextlib.suppress(Exception):
            self._shield.report(self._operation, exc)
        return True
