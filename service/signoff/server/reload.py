"""Hot reload: compile a new bundle off the request path and swap it in whole, or keep the old."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from signoff import heap
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.errors import ConfigError, PolicyError, Problem
from signoff.observability import Telemetry
from signoff.policy.loader import load_bundle
from signoff.policy.model import policy_files
from signoff.server.service import DecisionService

log = logging.getLogger("signoff.policy")
# The health-check service name that reports whether the latest bundle loaded.
POLICY_HEALTH = "signoff.policy"
Fingerprint = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LoadStatus:
    """The bundle serving now, and how the latest attempt to load one went."""

    revision: str
    rule_count: int
    loaded_at: dt.datetime
    attempted_at: dt.datetime
    problems: tuple[Problem, ...] = field(default=())

    @property
    def failed(self) -> bool:
        return bool(self.problems)


class PolicyReloader:
    """Reloads `rules` into `service`: one load at a time, swapped in only when it compiles.

    Requests already running keep the engine they started with (the service reads it once per
    request or batch), so a swap never mixes two revisions in one answer.
    """

    def __init__(
        self,
        service: DecisionService,
        rules: str | Path,
        *,
        backend: str,
        make_engine: Callable[[Bundle], Engine] = Engine,
        load: Callable[[], Bundle] | None = None,
        telemetry: Telemetry | None = None,
        on_status: Callable[[LoadStatus], None] | None = None,
    ) -> None:
        self._service = service
        self._rules = Path(rules)
        self._make_engine = make_engine
        self._load = load or (lambda: load_bundle(self._rules, backend=backend))
        self._telemetry = telemetry or Telemetry.disabled()
        self._on_status = on_status
        self._lock = threading.Lock()
        self._wake = threading.Event()
        now = _now()
        bundle = service.engine.bundle
        self._status = LoadStatus(bundle.revision, bundle.rule_count, now, now)
        # Nothing seen yet: the watcher's first look reloads once, so files changed while the
        # server was starting are not missed (an unchanged bundle is not swapped).
        self._seen: Fingerprint = ()

    @property
    def status(self) -> LoadStatus:
        return self._status

    def reload(self) -> tuple[LoadStatus, bool]:
        """Load the bundle now; returns the status and whether a new revision is serving."""
        with self._lock:
            self._seen = self.fingerprint()
            current = self._service.engine.bundle
            attempted = _now()
            try:
                bundle = self._load()
            except (PolicyError, ConfigError) as exc:  # ConfigError: e.g. an unreadable key
                return self._refused(current.revision, attempted, exc), False
            except Exception as exc:  # e.g. the directory vanished: refuse, never stop reloading
                error = ConfigError(f"cannot load the bundle: {type(exc).__name__}: {exc}")
                return self._refused(current.revision, attempted, error), False
            self._telemetry.record_policy_load("ok")
            changed = bundle.revision != current.revision
            if changed:
                self._service.engine = self._make_engine(bundle)
                heap.settle()
                log.info(
                    "policy bundle reloaded: revision %s -> %s (%d rules)",
                    current.revision[:12],
                    bundle.revision[:12],
                    bundle.rule_count,
                )
            elif self._status.failed:
                log.info(
                    "policy bundle in %s loads again (revision %s)",
                    self._rules,
                    bundle.revision[:12],
                )
            loaded = attempted if changed else self._status.loaded_at
            self._publish(LoadStatus(bundle.revision, bundle.rule_count, loaded, attempted))
            return self._status, changed

    def _refused(
        self, serving: str, attempted: dt.datetime, exc: PolicyError | ConfigError
    ) -> LoadStatus:
        self._telemetry.record_policy_load("failed")
        log.error(
            "policy bundle in %s refused, revision %s keeps serving: %s",
            self._rules,
            serving[:12],
            exc,
        )
        problems = (
            exc.problems
            if isinstance(exc, PolicyError)
            else [Problem(str(self._rules), 0, 0, "", str(exc))]
        )
        old = self._status
        self._publish(
            LoadStatus(old.revision, old.rule_count, old.loaded_at, attempted, tuple(problems))
        )
        return self._status

    def request(self) -> None:
        """Ask the watch loop to reload soon (safe from a signal handler)."""
        self._wake.set()

    def fingerprint(self) -> Fingerprint:
        """Name and content hash of every policy file (or of the signed bundle).

        The content decides, not size and modification time: an edit of the same length
        whose tool keeps the mtime (rsync -t, `cp -p`, a restored backup) changes neither.
        For the bundled rules a look (listing and hashing) takes under a millisecond.
        """
        try:
            files = [self._rules] if self._rules.is_file() else policy_files(self._rules)
        except OSError:
            return ()
        out = []
        for path in files:
            try:
                with path.open("rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError:
                continue
            out.append((str(path), digest))
        return tuple(out)

    def watch(self, stop: threading.Event, *, interval: float = 1.0, quiet: float = 0.5) -> None:
        """Until `stop`: reload when asked, and when the files changed and then stayed still
        for `quiet` seconds (an editor's save can take several writes).

        Polling, not watchfiles: file events do not arrive on network file systems and many
        container volume mounts (a Kubernetes ConfigMap swaps a symlink; watchfiles must be
        told to poll there anyway), SIGHUP and the admin RPC already wake this loop, and the
        content hash has to be taken on every event regardless, so events would save little
        and add a native dependency to the server.
        """
        while not stop.is_set():
            asked = self._wake.wait(interval)
            if stop.is_set():
                return
            if asked:
                self._wake.clear()
                self.reload()
                continue
            seen = self.fingerprint()
            if seen == self._seen:
                continue
            while not stop.wait(quiet):
                settled = self.fingerprint()
                if settled == seen:
                    break
                seen = settled
            if not stop.is_set():
                self.reload()

    def _publish(self, status: LoadStatus) -> None:
        self._status = status
        if self._on_status is not None:
            self._on_status(status)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
