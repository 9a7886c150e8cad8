"""Verifying a signed bundle whole, then extracting and loading it; nothing is used before."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signoff.bundles.keys import key_fingerprint, load_public_key
from signoff.bundles.manifest import (
    DEFAULT_LIMITS,
    EXPIRY_WARNING_SECONDS,
    FILES,
    MANIFEST,
    MAX_CLOCK_SKEW_SECONDS,
    SIGNATURE,
    Clock,
    Limits,
    Manifest,
    iso_utc,
    parse_manifest,
    refuse,
    relocated,
)
from signoff.bundles.tarreader import scan
from signoff.engine import cel
from signoff.engine.compiled import Bundle
from signoff.errors import PolicyError, Problem
from signoff.policy.loader import load_bundle

log = logging.getLogger("signoff.policy")


def _verify(handle: BinaryIO, where: str, key: Ed25519PublicKey, limits: Limits) -> Manifest:
    """First pass: check the structure, hash every file, check the signature and the manifest.
    Nothing is written anywhere."""
    blobs: dict[str, bytes] = {}
    seen: dict[str, tuple[int, str]] = {}

    def visit(name: str, chunks: Iterator[bytes]) -> None:
        if name in (MANIFEST, SIGNATURE):
            blobs[name] = b"".join(chunks)  # both bounded by _check_member
            return
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
        seen[name.removeprefix(FILES)] = (size, digest.hexdigest())

    scan(handle, where, limits, visit)
    signature, manifest_bytes = blobs.get(SIGNATURE), blobs.get(MANIFEST)
    if signature is None:
        raise refuse(where, f"not signed: the bundle has no {SIGNATURE}")
    if manifest_bytes is None:
        raise refuse(where, f"the bundle has no {MANIFEST}")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise refuse(
            where,
            f"signature does not verify with the configured key {key_fingerprint(key)}: "
            f"the bundle was signed with another key, or {MANIFEST} was altered",
        ) from None
    manifest = parse_manifest(manifest_bytes, where, limits)
    problems = []
    for entry in manifest.files:
        got = seen.pop(entry.path, None)
        if got is None:
            message = f"file {entry.path} is listed in the manifest but missing from the bundle"
            problems.append(Problem(where, 0, 0, "", message))
        elif got != (entry.size, entry.sha256):
            message = (
                f"file {entry.path} was altered: its size or SHA-256 differs from the manifest"
            )
            problems.append(Problem(where, 0, 0, "", message))
    for extra in seen:
        message = f"unexpected member {FILES + extra!r}: not in the signed manifest"
        problems.append(Problem(where, 0, 0, "", message))
    if problems:
        raise PolicyError(problems)
    return manifest


def _extract(handle: BinaryIO, where: str, manifest: Manifest, root: Path, limits: Limits) -> None:
    """Second pass: write the files, hashing again, since the tarball could have been changed
    on disk since the first pass. Any difference refuses the bundle (the caller removes root)."""
    expected = {entry.path: entry for entry in manifest.files}
    changed = "the bundle changed while it was being read"

    def visit(name: str, chunks: Iterator[bytes]) -> None:
        if not name.startswith(FILES):
            return
        rel = name.removeprefix(FILES)
        entry = expected.pop(rel, None)
        if entry is None:
            raise refuse(where, f"{changed}: unexpected member {name!r}")
        target = root / rel
        digest, size = hashlib.sha256(), 0
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise refuse(where, f"cannot extract {rel}: {exc.strerror or exc}") from None
        if (size, digest.hexdigest()) != (entry.size, entry.sha256):
            raise refuse(where, f"{changed}: file {rel} was altered")

    scan(handle, where, limits, visit)
    if expected:
        raise refuse(where, f"{changed}: file {min(expected)} is missing")


@contextmanager
def _open_tarball(tarball: Path) -> Iterator[BinaryIO]:
    where = str(tarball)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us before fstat can refuse it.
        fd = os.open(tarball, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise refuse(where, "bundle file not found") from None
    except OSError as exc:
        raise refuse(where, f"cannot open the bundle: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refuse(where, "not a regular file (a signed bundle is a .tar.gz file)")
    with os.fdopen(fd, "rb") as handle:
        yield handle


def _check_time(manifest: Manifest, where: str, now: float) -> None:
    """Refuse a bundle that is past its expiry, or signed later than this host's clock allows.
    The times are signed, so only the signer could have set them."""
    signed = f"signed at {iso_utc(manifest.signed_at)}"
    if manifest.expires_at is not None and now >= manifest.expires_at:
        raise refuse(
            where,
            f"expired: the bundle was valid until {iso_utc(manifest.expires_at)} ({signed}); "
            "sign and publish a fresh one",
        )
    if manifest.signed_at > now + MAX_CLOCK_SKEW_SECONDS:
        ahead = manifest.signed_at - int(now)
        raise refuse(
            where,
            f"{signed}, {ahead} seconds ahead of this host's clock (at most "
            f"{MAX_CLOCK_SKEW_SECONDS} allowed): check the signer's and this host's clocks",
        )


Check = Callable[[Manifest, str], None]


@contextmanager
def _verified(
    tarball: str | Path,
    public_key_pem: str | Path | Ed25519PublicKey,
    limits: Limits,
    now: float,
    check: Check | None = None,
) -> Iterator[tuple[Path, Manifest]]:
    # A key already loaded is used as is: what verifies is then what the caller shows.
    key = (
        public_key_pem
        if isinstance(public_key_pem, Ed25519PublicKey)
        else load_public_key(public_key_pem)
    )
    path = Path(tarball)
    with _open_tarball(path) as handle:
        manifest = _verify(handle, str(path), key, limits)
        _check_time(manifest, str(path), now)
        if check is not None:
            check(manifest, str(path))
        # mkdtemp makes it 0700: no other user can read the policies or plant files in it.
        root = Path(tempfile.mkdtemp(prefix="signoff-bundle-"))
        try:
            _extract(handle, str(path), manifest, root, limits)
        except BaseException:
            _remove(root)
            raise
    try:
        yield root, manifest
    finally:
        _remove(root)


def _remove(root: Path) -> None:
    try:
        shutil.rmtree(root)
    except OSError as exc:
        log.warning("cannot remove the extracted bundle in %s: %s", root, exc)


@contextmanager
def open_signed_bundle(
    tarball: str | Path,
    public_key_pem: str | Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    clock: Clock = time.time,
) -> Iterator[Path]:
    """Verify `tarball` with the Ed25519 key in `public_key_pem`, then yield a private (0700)
    temporary directory holding its files, removed on exit.

    Everything is checked before anything is written: the signature over the exact manifest
    bytes; that every member is a regular file with a safe, unique name; that the files are
    exactly those of the manifest with its sizes and SHA-256s; the limits; and, against
    `clock`, that the bundle has not expired and was not signed in the future. Raises
    PolicyError (the bundle is refused) or ConfigError (the key file is unusable).
    """
    with _verified(tarball, public_key_pem, limits, clock()) as (root, _):
        yield root


def load_signed_bundle(
    tarball: str | Path,
    public_key_pem: str | Path,
    *,
    backend: str = cel.DEFAULT_BACKEND,
    limits: Limits = DEFAULT_LIMITS,
    clock: Clock = time.time,
) -> Bundle:
    """Verify, extract and load a signed bundle; its revision must be the one that was signed.

    Checks everything `open_signed_bundle` does, but remembers nothing: rollback to an older
    bundle is refused only by a `SignedBundleSource`. Problems name files as
    `<tarball>!/<path>`, since the extracted copy is gone by then.
    """
    bundle, _ = load_verified(tarball, public_key_pem, backend, limits, clock())
    return bundle


def hours_left_if_soon(manifest: Manifest, now: float) -> int | None:
    """Whole hours until the bundle expires, when that is within the warning period."""
    if manifest.expires_at is None or manifest.expires_at - now >= EXPIRY_WARNING_SECONDS:
        return None
    return int(manifest.expires_at - now) // 3600


def load_verified(
    tarball: str | Path,
    public_key_pem: str | Path | Ed25519PublicKey,
    backend: str,
    limits: Limits,
    now: float,
    check: Check | None = None,
) -> tuple[Bundle, Manifest]:
    """Verify as `open_signed_bundle` does against `now`, then `check` the manifest, then load;
    the bundle and the manifest it was verified against. Files are named `<tarball>!/<path>`."""
    shown = f"{tarball}!/"
    with _verified(tarball, public_key_pem, limits, now, check) as (root, manifest):
        names = {entry.path: shown + entry.path for entry in manifest.files}
        try:
            bundle = load_bundle(root, backend=backend)
        except PolicyError as exc:
            raise relocated(exc, root, str(tarball), names) from None
    if bundle.revision != manifest.revision:
        raise refuse(
            str(tarball),
            f"the files load as revision {bundle.revision}, but the manifest signs "
            f"{manifest.revision}",
        )
    files = tuple(shown + Path(f).relative_to(root).as_posix() for f in bundle.files)
    return dataclasses.replace(bundle, files=files), manifest
