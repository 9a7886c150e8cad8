"""The reloading source of signed bundles: each load verified, rollback refused."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from signoff.bundles.manifest import DEFAULT_LIMITS, Clock, Limits, Manifest, iso_utc, refuse
from signoff.bundles.verify import hours_left_if_soon, load_verified
from signoff.engine.compiled import Bundle

log = logging.getLogger("signoff.policy")


class SignedBundleSource:
    """Loads the signed bundle at `path` each time it is called, refusing rollback: once a
    bundle is accepted, one signed earlier is refused, and so is one signed at the same second
    with another revision (two different bundles claiming one signing time).

    The newest accepted signing time lives in this object, so the protection lasts as long as
    the process: a restarted one accepts any bundle that verifies and has not expired. Use one
    instance for the first load and every reload. A refusal leaves the remembered state as it
    was, so the newer bundle keeps being accepted.
    """

    def __init__(
        self,
        path: str | Path,
        public_key_path: str | Path,
        *,
        backend: str,
        limits: Limits = DEFAULT_LIMITS,
        clock: Clock = time.time,
    ) -> None:
        self._path = Path(path)
        self._public_key = Path(public_key_path)
        self._backend = backend
        self._limits = limits
        self._clock = clock
        # Held for a whole load: two loads racing could otherwise each pass the check and
        # leave the older one remembered.
        self._lock = threading.Lock()
        self._newest: Manifest | None = None

    @property
    def signed_at(self) -> int | None:
        """Signing time (Unix seconds) of the newest bundle accepted so far; None before any."""
        return None if self._newest is None else self._newest.signed_at

    @property
    def expires_at(self) -> int | None:
        """Expiry (Unix seconds) of the newest bundle accepted so far, if it has one."""
        return None if self._newest is None else self._newest.expires_at

    @property
    def revision(self) -> str | None:
        """Revision of the newest bundle accepted so far; None before any."""
        return None if self._newest is None else self._newest.revision

    def __call__(self) -> Bundle:
        """Verify and load the bundle; raises PolicyError (refused: bad, expired, from the
        future, or older than one accepted before) or ConfigError (the key is unusable)."""
        with self._lock:
            now = self._clock()
            bundle, manifest = load_verified(
                self._path, self._public_key, self._backend, self._limits, now, self._not_older
            )
            self._newest = manifest
        hours = hours_left_if_soon(manifest, now)
        if hours is not None:
            log.warning(
                "signed bundle %s (revision %s) expires at %s, in %d hours: sign and publish "
                "a fresh one before then, or it will be refused",
                self._path,
                bundle.revision[:12],
                iso_utc(manifest.expires_at or 0),
                hours,
            )
        return bundle

    def _not_older(self, manifest: Manifest, where: str) -> None:
        newest = self._newest
        if newest is None:
            return
        if manifest.signed_at < newest.signed_at:
            raise refuse(
                where,
                f"rollback refused: the bundle was signed at {iso_utc(manifest.signed_at)} "
                f"(revision {manifest.revision[:12]}), before the one already served, signed "
                f"at {iso_utc(newest.signed_at)} (revision {newest.revision[:12]})",
            )
        if manifest.signed_at == newest.signed_at and manifest.revision != newest.revision:
            raise refuse(
                where,
                f"refused: the bundle claims the signing time {iso_utc(manifest.signed_at)} of "
                f"the one already served but holds revision {manifest.revision[:12]}, not "
                f"{newest.revision[:12]}; two different bundles signed at the same second is "
                "suspicious, re-sign the newer one",
            )
