"""Signing: a rules directory, loaded and validated, written as a signed reproducible tarball."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from signoff.bundles.keys import load_private_key
from signoff.bundles.manifest import (
    DEFAULT_LIMITS,
    FILES,
    MANIFEST,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_TIMESTAMP,
    SIGNATURE,
    Clock,
    Limits,
    as_timestamp,
    iso_utc,
    manifest_bytes,
    refuse,
    relocated,
    unsafe_name,
)
from signoff.engine import cel
from signoff.engine.schema import MAX_DURATION_SECONDS, parse_duration
from signoff.errors import ConfigError, PolicyError
from signoff.policy.loader import load_bundle
from signoff.policy.model import policy_files

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
_DAYS = re.compile(r"^(\d+)d(.*)$")
_EPOCH = re.compile(r"^[0-9]+$")


def parse_expires_in(text: str) -> dt.timedelta:
    """A validity period: '30d', '12h', '1d12h', '90m' (the policy-file duration syntax with
    an optional leading number of days). Raises ValueError unless it is positive."""
    days, rest = 0, text
    if m := _DAYS.match(text):
        days, rest = int(m.group(1)), m.group(2)
    try:
        seconds = int(parse_duration(rest).total_seconds()) if rest else 0
    except ValueError:
        raise ValueError(
            f"invalid duration {text[:40]!r}: expected e.g. '30d', '12h', '1d12h'"
        ) from None
    total = days * 86_400 + seconds
    if total <= 0:
        raise ValueError(f"invalid duration {text[:40]!r}: it must be longer than zero")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(f"invalid duration {text[:40]!r}: longer than about 10,000 years")
    return dt.timedelta(seconds=total)


def signing_time(environ: Mapping[str, str] = os.environ, clock: Clock = time.time) -> int:
    """When a bundle is signed, in Unix seconds: SOURCE_DATE_EPOCH when set (the reproducible
    builds convention, so a rebuild gives the same bytes), else `clock`."""
    value = environ.get(SOURCE_DATE_EPOCH)
    if value is None:
        return int(clock())
    if not _EPOCH.fullmatch(value) or int(value) > MAX_TIMESTAMP:
        raise ConfigError(
            f"{SOURCE_DATE_EPOCH}={value[:40]!r} is not a number of seconds since 1970 "
            f"(at most {MAX_TIMESTAMP})"
        )
    return int(value)


def sign_bundle(
    rules_dir: str | Path,
    private_key_pem: str | Path,
    out: str | Path,
    *,
    backend: str = cel.DEFAULT_BACKEND,
    limits: Limits = DEFAULT_LIMITS,
    signed_at: int | None = None,
    expires_in: dt.timedelta | None = None,
    clock: Clock = time.time,
) -> str:
    """Load `rules_dir` (refusing, with the loader's problems, a bundle that does not load),
    sign what was loaded and write it to `out` as a signed tarball. Returns the revision.

    The manifest records `signed_at` (default: `signing_time()`) and, with `expires_in`, the
    time after which no verifier serves the bundle. The same directory, key and times always
    give the same bytes (with the same zlib). A bundle no verifier would serve by `clock`
    (already expired, or signed further ahead than the clock skew allowed) is refused with a
    ConfigError instead of written.
    """
    key = load_private_key(private_key_pem)
    when = signing_time() if signed_at is None else signed_at
    if as_timestamp(when) is None:
        raise ConfigError(f"signing time {when} is not between 0 and {MAX_TIMESTAMP}")
    expires_at = None
    if expires_in is not None:
        expires_at = when + int(expires_in.total_seconds())
        if expires_at <= when or expires_at > MAX_TIMESTAMP:
            raise ConfigError(
                f"expiry {expires_in} after {iso_utc(when)} must be at least a second and end "
                "by the year 9999"
            )
    _servable_when_signed(when, expires_at, clock())
    root = Path(rules_dir)
    contents = _read_rules(root, limits)
    # Load a private copy of the bytes read, not the directory: what is signed is exactly what
    # was validated, even if someone edits the directory meanwhile.
    with tempfile.TemporaryDirectory(prefix="signoff-sign-") as tmp:
        snapshot = Path(tmp)
        for rel, data in contents.items():
            target = snapshot / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            bundle = load_bundle(snapshot, backend=backend)
        except PolicyError as exc:
            names = {rel: str(root / rel) for rel in contents}
            raise relocated(exc, snapshot, str(root), names) from None
    manifest = manifest_bytes(bundle.revision, contents, when, expires_at)
    members = [(MANIFEST, manifest), (SIGNATURE, key.sign(manifest))]
    members += [(FILES + rel, data) for rel, data in sorted(contents.items())]
    _write_tarball(Path(out), members)
    return bundle.revision


def _servable_when_signed(signed_at: int, expires_at: int | None, now: float) -> None:
    """Refuse to write what every verifier would refuse now (see `_check_time`): usually a
    SOURCE_DATE_EPOCH from an old commit with a short expiry, or one from a wrong clock."""
    signed = f"signed at {iso_utc(signed_at)}"
    if expires_at is not None and expires_at <= now:
        raise ConfigError(
            f"refusing to sign a bundle that is already expired: {signed} ({SOURCE_DATE_EPOCH} "
            f"or the clock), valid until {iso_utc(expires_at)}, and it is now "
            f"{iso_utc(int(now))}; give a longer --expires-in or a later signing time"
        )
    if signed_at > now + MAX_CLOCK_SKEW_SECONDS:
        raise ConfigError(
            f"refusing to sign a bundle dated in the future: {signed} ({SOURCE_DATE_EPOCH} or "
            f"the clock), {signed_at - int(now)} seconds ahead of now (verifiers allow "
            f"{MAX_CLOCK_SKEW_SECONDS})"
        )


def _read_rules(root: Path, limits: Limits) -> dict[str, bytes]:
    if not root.is_dir():
        raise refuse(str(root), "rules directory not found")
    files = policy_files(root)
    if len(files) > limits.max_files:
        raise refuse(
            str(root), f"{len(files)} policy files; a signed bundle holds {limits.max_files}"
        )
    contents: dict[str, bytes] = {}
    total = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        why = unsafe_name(rel) or _ustar_problem(FILES + rel)
        if why:
            raise refuse(str(path), f"this file name cannot go in a signed bundle: {why}")
        data = path.read_bytes()
        total += len(data)
        if total > limits.max_total_bytes:
            raise refuse(
                str(root), f"the policy files exceed {limits.max_total_bytes} bytes together"
            )
        contents[rel] = data
    return contents


def _ustar_problem(name: str) -> str | None:
    try:
        _tar_info(name, 0).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    except ValueError:
        return "ustar holds at most 100 bytes per name and 155 more for its directories"
    return None


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata: the tarball's bytes depend on the names and contents alone.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _write_tarball(out: Path, members: list[tuple[str, bytes]]) -> None:
    """Write atomically (temp file + rename): a reader never sees half a bundle."""
    try:
        fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(out)) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            # No file name and mtime 0 in the gzip header, or the bytes would vary.
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
                tarfile.open(
                    fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT, encoding="utf-8"
                ) as tar,
            ):
                for name, data in members:
                    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
            os.fchmod(raw.fileno(), 0o644)  # a bundle is not secret; mkstemp made it 0600
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
