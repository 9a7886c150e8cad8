"""Bundle format: the manifest a bundle's signature covers, its limits and names, and refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signoff.errors import PolicyError, Problem
from signoff.policy.model import SUITE_SUFFIXES

# Inside the manifest: what it is and which layout it promises. A verifier refuses any other
# value, so a later layout can never be read with this one's rules.
FORMAT = "signoff-policy-bundle/2"
_FORMAT_PREFIX = "signoff-policy-bundle/"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # the raw 64-byte Ed25519 signature over manifest.json's bytes
FILES = "files/"

MiB = 1024 * 1024
SIGNATURE_BYTES = 64
# ustar keeps a path in 255 bytes (a 155-byte prefix and a 100-byte name); we write nothing else.
MAX_NAME_BYTES = 255
# A tar writer pads the end to a whole record (10 KiB for Python and GNU tar); allow some more.
MAX_TRAILING_ZEROS = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")

# How far ahead of this host's clock a bundle's signing time may be: the signer's clock and
# ours are never exactly in step, but a bundle from well in the future is not one to trust.
MAX_CLOCK_SKEW_SECONDS = 5 * 60
# A served bundle this close to expiring is logged, so a stalled signing pipeline is noticed
# before the service is left with nothing it may serve.
EXPIRY_WARNING_SECONDS = 7 * 24 * 3600
# 9999-12-31T23:59:59Z: every timestamp a manifest holds can be shown as a date.
MAX_TIMESTAMP = 253_402_300_799

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
        return data + members * 4 * tarfile.BLOCKSIZE + 2 * MAX_TRAILING_ZEROS


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


def refuse(where: str, message: str) -> PolicyError:
    """The error refusing a bundle (or the rules being signed) for one reason about `where`."""
    return PolicyError([Problem(where, 0, 0, "", message)])


def relocated(exc: PolicyError, root: Path, shown_root: str, names: dict[str, str]) -> PolicyError:
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


def unsafe_name(name: str) -> str | None:
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


def is_policy_name(path: str) -> bool:
    """What `policy_files` would pick up, so extracted files are exactly what gets loaded."""
    return path.endswith((".yaml", ".yml")) and not path.endswith(SUITE_SUFFIXES)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_bytes(
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


def as_timestamp(value: object) -> int | None:
    """`value` as Unix seconds when it is a plain integer a date can show, else None."""
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP:
        return None
    return value


def iso_utc(timestamp: int) -> str:
    """Unix seconds as ISO 8601 UTC, e.g. 2026-03-02T14:00:00Z."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_manifest(data: bytes, where: str, limits: Limits) -> Manifest:
    """Read a manifest whose signature already verified; refuse anything but the exact form
    `sign_bundle` writes (one JSON text per manifest, so no two parsers can disagree on it)."""

    def bad(why: str) -> PolicyError:
        return refuse(where, f"{MANIFEST} is malformed: {why}")

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
        raise refuse(
            where, f"unsupported bundle format {found!r}; this signoff reads {FORMAT}{hint}"
        )
    if set(doc) - {"expires_at"} != {"files", "format", "revision", "signed_at"}:
        raise bad(
            "keys must be exactly files, format, revision, signed_at and optionally expires_at"
        )
    revision, files = doc["revision"], doc["files"]
    signed_at = as_timestamp(doc["signed_at"])
    if signed_at is None:
        raise bad(f"signed_at is not an integer number of seconds up to {MAX_TIMESTAMP}")
    expires_at = None
    if "expires_at" in doc:
        expires_at = as_timestamp(doc["expires_at"])
        if expires_at is None:
            raise bad(f"expires_at is not an integer number of seconds up to {MAX_TIMESTAMP}")
        if expires_at <= signed_at:
            raise bad("expires_at is not after signed_at")
    if not isinstance(revision, str) or not _HEX64.fullmatch(revision):
        raise bad("revision is not a SHA-256 hex digest")
    if not isinstance(files, list) or not files:
        raise bad("files is not a non-empty list")
    if len(files) > limits.max_files:
        raise refuse(where, f"the manifest lists more than {limits.max_files} files")
    entries: list[ManifestEntry] = []
    for item in files:
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise bad("each file needs exactly path, sha256, size")
        path, digest, size = item["path"], item["sha256"], item["size"]
        if not isinstance(path, str) or unsafe_name(path) or not is_policy_name(path):
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
        raise refuse(where, f"the manifest lists more than {limits.max_total_bytes} bytes")
    if _canonical(doc) != data:
        raise bad("not in canonical form (sorted keys, compact, ASCII)")
    return Manifest(revision, tuple(entries), signed_at, expires_at)
