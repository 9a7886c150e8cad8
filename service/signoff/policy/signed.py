"""Signed policy bundles: Ed25519-signed tarballs, verified whole before anything is used."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signoff.engine import cel
from signoff.engine.compiled import Bundle
from signoff.engine.schema import MAX_DURATION_SECONDS, parse_duration
from signoff.errors import ConfigError, PolicyError, Problem
from signoff.keyfiles import create_exclusive, private_key_pem
from signoff.policy.loader import SUITE_SUFFIXES, load_bundle, policy_files

log = logging.getLogger("signoff.policy")

# Inside the manifest: what it is and which layout it promises. A verifier refuses any other
# value, so a later layout can never be read with this one's rules.
FORMAT = "signoff-policy-bundle/2"
_FORMAT_PREFIX = "signoff-policy-bundle/"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # the raw 64-byte Ed25519 signature over manifest.json's bytes
FILES = "files/"
PRIVATE_KEY_NAME = "bundle-signing-key.pem"
PUBLIC_KEY_NAME = "bundle-signing-key.pub.pem"

MiB = 1024 * 1024
SIGNATURE_BYTES = 64
# ustar keeps a path in 255 bytes (a 155-byte prefix and a 100-byte name); we write nothing else.
MAX_NAME_BYTES = 255
_CHUNK = 64 * 1024
# A tar writer pads the end to a whole record (10 KiB for Python and GNU tar); allow some more.
_MAX_TRAILING_ZEROS = 64 * 1024
_KEY_FILE_MAX = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")

# How far ahead of this host's clock a bundle's signing time may be: the signer's clock and
# ours are never exactly in step, but a bundle from well in the future is not one to trust.
MAX_CLOCK_SKEW_SECONDS = 5 * 60
# A served bundle this close to expiring is logged, so a stalled signing pipeline is noticed
# before the service is left with nothing it may serve.
EXPIRY_WARNING_SECONDS = 7 * 24 * 3600
# 9999-12-31T23:59:59Z: every timestamp a manifest holds can be shown as a date.
MAX_TIMESTAMP = 253_402_300_799
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
_DAYS = re.compile(r"^(\d+)d(.*)$")
_EPOCH = re.compile(r"^[0-9]+$")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Limits:
    """How much a bundle may hold. Signing refuses to exceed them and verifying refuses a
    tarball that does, before reading the member that would go over."""

    max_files: int = 10_000
    max_total_bytes: int = 64 * MiB  # the policy files together
    max_manifest_bytes: int = 4 * MiB

    @property
    def max_stream_bytes(self) -> int:
        """Most decompressed bytes a legitimate bundle can take, with headers and padding: the
        bound on how much a gzip bomb can make us inflate."""
        members = self.max_files + 2
        data = self.max_total_bytes + self.max_manifest_bytes + SIGNATURE_BYTES
        # Per member: its header, a GNU long-name header and block, and padding.
        return data + members * 4 * tarfile.BLOCKSIZE + 2 * _MAX_TRAILING_ZEROS


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # POSIX path relative to the rules directory
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The signed statement: which files, with which contents, make which revision, signed
    when, and until when it may be served (Unix seconds; None: no expiry)."""

    revision: str
    files: tuple[ManifestEntry, ...]
    signed_at: int
    expires_at: int | None = None


def _refuse(where: str, message: str) -> PolicyError:
    return PolicyError([Problem(where, 0, 0, "", message)])


# --- keys -------------------------------------------------------------------------------------


def generate_keys(directory: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as PEM into `directory`: (private 0600, public 0644).

    Never overwrites: if either file exists, nothing is written and ConfigError is raised.
    """
    root = Path(directory)
    private_path, public_path = root / PRIVATE_KEY_NAME, root / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} already exists; keygen never overwrites a key")
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {root}: {exc.strerror}") from None
    key = Ed25519PrivateKey.generate()
    private_pem = private_key_pem(key)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except ConfigError:
        private_path.unlink()  # ours: created a moment ago, and useless without its half
        raise
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # Exclusive: a file that appeared since the check above is still never overwritten.
    try:
        create_exclusive(path, data, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; keygen never overwrites a key") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_KEY_FILE_MAX + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > _KEY_FILE_MAX:
        raise ConfigError(f"{what} {path} is too large to be a PEM key")
    return data


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The configured bundle-verification key; ConfigError when it is not an Ed25519 PEM key."""
    key_path = Path(path)
    data = _read_key_file(key_path, "bundle public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{key_path} is not an Ed25519 public key")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """A bundle-signing key written by `generate_keys` (unencrypted PKCS#8 PEM)."""
    key_path = Path(path)
    data = _read_key_file(key_path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{key_path} is encrypted; use an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_path} is not an Ed25519 private key")
    return key


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """A short name for a public key in messages: SHA-256 of its raw bytes, 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


# --- names and the manifest -------------------------------------------------------------------


def _unsafe(name: str) -> str | None:
    """Why `name` may not be a path in a bundle, or None. Applied to tar members, manifest
    entries and the files being signed alike."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if not name:
        return "it is empty"
    if len(encoded) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    # Control characters would let a name forge lines in logs and problem reports.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it contains a control character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it contains '..'"
    if any(part in ("", ".") for part in parts):
        return "it contains an empty or '.' component"
    return None


def _is_policy_name(path: str) -> bool:
    """What `policy_files` would pick up, so extracted files are exactly what gets loaded."""
    return path.endswith((".yaml", ".yml")) and not path.endswith(SUITE_SUFFIXES)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _manifest_bytes(
    revision: str, contents: dict[str, bytes], signed_at: int, expires_at: int | None
) -> bytes:
    files = [
        {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for rel, data in sorted(contents.items())
    ]
    doc: dict[str, Any] = {
        "files": files,
        "format": FORMAT,
        "revision": revision,
        "signed_at": signed_at,
    }
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return _canonical(doc)


def _timestamp(value: object) -> int | None:
    """`value` as Unix seconds when it is a plain integer a date can show, else None."""
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP:
        return None
    return value


def iso_utc(timestamp: int) -> str:
    """Unix seconds as ISO 8601 UTC, e.g. 2026-03-02T14:00:00Z."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_manifest(data: bytes, where: str, limits: Limits) -> Manifest:
    """Read a manifest whose signature already verified; refuse anything but the exact form
    `sign_bundle` writes (one JSON text per manifest, so no two parsers can disagree on it)."""

    def bad(why: str) -> PolicyError:
        return _refuse(where, f"{MANIFEST} is malformed: {why}")

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    found = doc.get("format")
    if found != FORMAT:
        hint = ""
        if isinstance(found, str) and found.startswith(_FORMAT_PREFIX):
            # Older bundles carry no signing time, so they cannot be checked for rollback.
            hint = "; re-sign the rules with this signoff's `signoff bundle sign`"
        raise _refuse(
            where, f"unsupported bundle format {found!r}; this signoff reads {FORMAT}{hint}"
        )
    if set(doc) - {"expires_at"} != {"files", "format", "revision", "signed_at"}:
        raise bad(
            "keys must be exactly files, format, revision, signed_at and optionally expires_at"
        )
    revision, files = doc["revision"], doc["files"]
    signed_at = _timestamp(doc["signed_at"])
    if signed_at is None:
        raise bad(f"signed_at is not an integer number of seconds up to {MAX_TIMESTAMP}")
    expires_at = None
    if "expires_at" in doc:
        expires_at = _timestamp(doc["expires_at"])
        if expires_at is None:
            raise bad(f"expires_at is not an integer number of seconds up to {MAX_TIMESTAMP}")
        if expires_at <= signed_at:
            raise bad("expires_at is not after signed_at")
    if not isinstance(revision, str) or not _HEX64.fullmatch(revision):
        raise bad("revision is not a SHA-256 hex digest")
    if not isinstance(files, list) or not files:
        raise bad("files is not a non-empty list")
    if len(files) > limits.max_files:
        raise _refuse(where, f"the manifest lists more than {limits.max_files} files")
    entries: list[ManifestEntry] = []
    for item in files:
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise bad("each file needs exactly path, sha256, size")
        path, digest, size = item["path"], item["sha256"], item["size"]
        if not isinstance(path, str) or _unsafe(path) or not _is_policy_name(path):
            raise bad(f"{path!r} is not a policy file path")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise bad(f"{path}: sha256 is not a hex digest")
        if type(size) is not int or size < 0:
            raise bad(f"{path}: size is not a non-negative integer")
        entries.append(ManifestEntry(path, size, digest))
    paths = [e.path for e in entries]
    if paths != sorted(set(paths)):
        raise bad("files are not sorted by path, or a path repeats")
    if sum(e.size for e in entries) > limits.max_total_bytes:
        raise _refuse(where, f"the manifest lists more than {limits.max_total_bytes} bytes")
    if _canonical(doc) != data:
        raise bad("not in canonical form (sorted keys, compact, ASCII)")
    return Manifest(revision, tuple(entries), signed_at, expires_at)


# --- signing ----------------------------------------------------------------------------------


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
    if _timestamp(when) is None:
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
            raise _relocated(exc, snapshot, str(root), names) from None
    manifest = _manifest_bytes(bundle.revision, contents, when, expires_at)
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
        raise _refuse(str(root), "rules directory not found")
    files = policy_files(root)
    if len(files) > limits.max_files:
        raise _refuse(
            str(root), f"{len(files)} policy files; a signed bundle holds {limits.max_files}"
        )
    contents: dict[str, bytes] = {}
    total = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        why = _unsafe(rel) or _ustar_problem(FILES + rel)
        if why:
            raise _refuse(str(path), f"this file name cannot go in a signed bundle: {why}")
        data = path.read_bytes()
        total += len(data)
        if total > limits.max_total_bytes:
            raise _refuse(
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


# --- reading a tarball without trusting it ----------------------------------------------------


class _CappedFile:
    """The compressed bytes: refuses to read past `cap`, so a file that keeps going (e.g.
    endless empty gzip members, which inflate to nothing) is not read to its end."""

    def __init__(self, handle: BinaryIO, cap: int, where: str) -> None:
        self._handle, self._cap, self._where = handle, cap, where
        self._count = 0

    def read(self, n: int = -1, /) -> bytes:
        want = self._cap - self._count + 1 if n < 0 else n
        data = self._handle.read(want)
        self._count += len(data)
        if self._count > self._cap:
            raise _refuse(self._where, f"the bundle file is larger than {self._cap} bytes")
        return data

    def seek(self, n: int, /) -> int:
        raise io.UnsupportedOperation("the bundle is read once, forwards")


class _Tape:
    """The decompressed tar stream as tarfile sees it: forward only, counted and capped.

    tarfile reads headers through `read`; member data is read by us through `chunks`.
    """

    def __init__(self, gz: gzip.GzipFile, cap: int, where: str) -> None:
        self._gz, self._cap, self._where = gz, cap, where
        self._pos = 0
        self.last_header = b""

    def _take(self, size: int) -> bytes:
        # gzip's read(-1) inflates everything that is left in one call, past every cap.
        if size < 0 or self._pos + size > self._cap:
            raise _refuse(
                self._where, f"the bundle inflates to more than {self._cap} bytes (a gzip bomb?)"
            )
        data = self._gz.read(size)
        self._pos += len(data)
        return data

    def read(self, size: int = -1, /) -> bytes:
        # tarfile's own reads are 512-byte header blocks, and the single byte `next()` peeks
        # at. Anything larger is the payload of a pax or GNU extension header: refused before
        # tarfile parses it, which also keeps Python 3.11's quadratic pax parsing
        # (CVE-2024-6232) away from hostile input.
        if size < 0 or size > tarfile.BLOCKSIZE:
            raise _refuse(self._where, "a tar extension header is too large")
        data = self._take(size)
        if size == tarfile.BLOCKSIZE:
            self.last_header = data
        return data

    def chunks(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            data = self._take(min(_CHUNK, left))
            if not data:
                raise _refuse(self._where, "the bundle is truncated")
            left -= len(data)
            yield data

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        if pos < self._pos:
            raise _refuse(self._where, "not a valid tar archive (it refers backwards)")
        while self._pos < pos and self._take(min(_CHUNK, pos - self._pos)):
            pass
        return self._pos

    def finish(self) -> None:
        """After the last member only zero padding may follow, and not much of it."""
        if self.last_header.strip(b"\0"):
            # tarfile ends quietly at a corrupt header after the first member; we do not.
            raise _refuse(self._where, "corrupt tar header after the last member")
        trailing = 0
        while data := self._take(_CHUNK):
            trailing += len(data)
            if data.strip(b"\0") or trailing > _MAX_TRAILING_ZEROS:
                raise _refuse(self._where, "unexpected data after the end of the tar archive")

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("read only")

    def close(self) -> None:
        pass


_KINDS = (
    (tarfile.TarInfo.issym, "a symbolic link"),
    (tarfile.TarInfo.islnk, "a hard link"),
    (tarfile.TarInfo.isdir, "a directory"),
    (tarfile.TarInfo.ischr, "a character device"),
    (tarfile.TarInfo.isblk, "a block device"),
    (tarfile.TarInfo.isfifo, "a FIFO"),
)


def _kind(member: tarfile.TarInfo) -> str:
    for test, kind in _KINDS:
        if test(member):
            return kind
    return f"of tar type {member.type!r}"


@dataclass
class _Budget:
    """What the members so far have used of the limits."""

    names: set[str] = dataclasses.field(default_factory=set)
    files: int = 0
    total: int = 0


def _check_member(member: tarfile.TarInfo, where: str, limits: Limits, used: _Budget) -> None:
    name = member.name
    why = _unsafe(name)
    if why:
        raise _refuse(where, f"unsafe member path {name!r}: {why}")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise _refuse(where, f"member {name!r} is {_kind(member)}; only regular files allowed")
    if member.size < 0:  # base-256 headers can say -1, which tarfile accepts
        raise _refuse(where, f"member {name!r} has a negative size")
    if member.pax_headers:
        raise _refuse(where, f"member {name!r} has pax extended headers; bundles are plain ustar")
    if name in used.names:
        raise _refuse(where, f"duplicate member {name!r}")
    used.names.add(name)
    if name == MANIFEST:
        if member.size > limits.max_manifest_bytes:
            raise _refuse(where, f"{MANIFEST} is larger than {limits.max_manifest_bytes} bytes")
    elif name == SIGNATURE:
        if member.size != SIGNATURE_BYTES:
            raise _refuse(where, f"{SIGNATURE} is not a {SIGNATURE_BYTES}-byte Ed25519 signature")
    elif name.startswith(FILES):
        used.files += 1
        used.total += member.size
        if used.files > limits.max_files:
            raise _refuse(where, f"the bundle holds more than {limits.max_files} files")
        if used.total > limits.max_total_bytes:
            raise _refuse(
                where,
                f"member {name!r} ({member.size} bytes) takes the files over "
                f"{limits.max_total_bytes} bytes",
            )
    else:
        raise _refuse(
            where,
            f"unexpected member {name!r}: a signed bundle holds only {MANIFEST}, {SIGNATURE} "
            f"and {FILES}...",
        )


Visit = Callable[[str, Iterator[bytes]], None]


def _scan(handle: BinaryIO, where: str, limits: Limits, visit: Visit) -> None:
    """Check every member's header, then hand its data to `visit` as a stream of chunks."""
    handle.seek(0)
    cap = limits.max_stream_bytes
    try:
        with gzip.GzipFile(fileobj=_CappedFile(handle, cap, where), mode="rb") as gz:
            tape = _Tape(gz, cap, where)
            tar = tarfile.TarFile(fileobj=tape, mode="r", encoding="utf-8")
            used = _Budget()
            while (member := tar.next()) is not None:
                _check_member(member, where, limits, used)
                tape.seek(member.offset_data)
                chunks = tape.chunks(member.size)
                visit(member.name, chunks)
                for _ in chunks:  # what `visit` skipped must still be read past
                    pass
            tape.finish()
    except PolicyError:
        raise
    except gzip.BadGzipFile as exc:
        raise _refuse(where, f"not a valid gzip file ({exc})") from None
    except EOFError:
        raise _refuse(where, "the bundle is truncated (the gzip stream ends early)") from None
    except zlib.error as exc:
        raise _refuse(where, f"corrupt gzip data ({exc})") from None
    except (tarfile.TarError, ValueError, RecursionError) as exc:
        raise _refuse(where, f"not a valid tar archive ({exc})") from None
    except OSError as exc:
        raise _refuse(where, f"cannot read the bundle: {exc.strerror or exc}") from None


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

    _scan(handle, where, limits, visit)
    signature, manifest_bytes = blobs.get(SIGNATURE), blobs.get(MANIFEST)
    if signature is None:
        raise _refuse(where, f"not signed: the bundle has no {SIGNATURE}")
    if manifest_bytes is None:
        raise _refuse(where, f"the bundle has no {MANIFEST}")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise _refuse(
            where,
            f"signature does not verify with the configured key {key_fingerprint(key)}: "
            f"the bundle was signed with another key, or {MANIFEST} was altered",
        ) from None
    manifest = _parse_manifest(manifest_bytes, where, limits)
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
            raise _refuse(where, f"{changed}: unexpected member {name!r}")
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
            raise _refuse(where, f"cannot extract {rel}: {exc.strerror or exc}") from None
        if (size, digest.hexdigest()) != (entry.size, entry.sha256):
            raise _refuse(where, f"{changed}: file {rel} was altered")

    _scan(handle, where, limits, visit)
    if expected:
        raise _refuse(where, f"{changed}: file {min(expected)} is missing")


@contextmanager
def _open_tarball(tarball: Path) -> Iterator[BinaryIO]:
    where = str(tarball)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us before fstat can refuse it.
        fd = os.open(tarball, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _refuse(where, "bundle file not found") from None
    except OSError as exc:
        raise _refuse(where, f"cannot open the bundle: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(where, "not a regular file (a signed bundle is a .tar.gz file)")
    with os.fdopen(fd, "rb") as handle:
        yield handle


def _check_time(manifest: Manifest, where: str, now: float) -> None:
    """Refuse a bundle that is past its expiry, or signed later than this host's clock allows.
    The times are signed, so only the signer could have set them."""
    signed = f"signed at {iso_utc(manifest.signed_at)}"
    if manifest.expires_at is not None and now >= manifest.expires_at:
        raise _refuse(
            where,
            f"expired: the bundle was valid until {iso_utc(manifest.expires_at)} ({signed}); "
            "sign and publish a fresh one",
        )
    if manifest.signed_at > now + MAX_CLOCK_SKEW_SECONDS:
        ahead = manifest.signed_at - int(now)
        raise _refuse(
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
    bundle, _ = _load(tarball, public_key_pem, backend, limits, clock())
    return bundle


def _hours_left_if_soon(manifest: Manifest, now: float) -> int | None:
    """Whole hours until the bundle expires, when that is within the warning period."""
    if manifest.expires_at is None or manifest.expires_at - now >= EXPIRY_WARNING_SECONDS:
        return None
    return int(manifest.expires_at - now) // 3600


def _load(
    tarball: str | Path,
    public_key_pem: str | Path | Ed25519PublicKey,
    backend: str,
    limits: Limits,
    now: float,
    check: Check | None = None,
) -> tuple[Bundle, Manifest]:
    shown = f"{tarball}!/"
    with _verified(tarball, public_key_pem, limits, now, check) as (root, manifest):
        names = {entry.path: shown + entry.path for entry in manifest.files}
        try:
            bundle = load_bundle(root, backend=backend)
        except PolicyError as exc:
            raise _relocated(exc, root, str(tarball), names) from None
    if bundle.revision != manifest.revision:
        raise _refuse(
            str(tarball),
            f"the files load as revision {bundle.revision}, but the manifest signs "
            f"{manifest.revision}",
        )
    files = tuple(shown + Path(f).relative_to(root).as_posix() for f in bundle.files)
    return dataclasses.replace(bundle, files=files), manifest


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
            bundle, manifest = _load(
                self._path, self._public_key, self._backend, self._limits, now, self._not_older
            )
            self._newest = manifest
        hours = _hours_left_if_soon(manifest, now)
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
            raise _refuse(
                where,
                f"rollback refused: the bundle was signed at {iso_utc(manifest.signed_at)} "
                f"(revision {manifest.revision[:12]}), before the one already served, signed "
                f"at {iso_utc(newest.signed_at)} (revision {newest.revision[:12]})",
            )
        if manifest.signed_at == newest.signed_at and manifest.revision != newest.revision:
            raise _refuse(
                where,
                f"refused: the bundle claims the signing time {iso_utc(manifest.signed_at)} of "
                f"the one already served but holds revision {manifest.revision[:12]}, not "
                f"{newest.revision[:12]}; two different bundles signed at the same second is "
                "suspicious, re-sign the newer one",
            )


def _relocated(exc: PolicyError, root: Path, shown_root: str, names: dict[str, str]) -> PolicyError:
    """The loader names files by their path under a temporary `root`; name them as the user
    knows them instead, in `file` and wherever a message mentions another file."""
    mapping = {str(root / rel): shown for rel, shown in names.items()}
    longest_first = sorted(mapping, key=len, reverse=True)

    def fix(text: str) -> str:
        if text == str(root):
            return shown_root
        for old in longest_first:
            text = text.replace(old, mapping[old])
        return text

    return PolicyError(
        [dataclasses.replace(p, file=fix(p.file), message=fix(p.message)) for p in exc.problems]
    )
