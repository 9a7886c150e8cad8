"""Reading a bundle's tarball without trusting it: forward only, every member checked, capped."""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from signoff.bundles.manifest import (
    FILES,
    MANIFEST,
    MAX_TRAILING_ZEROS,
    SIGNATURE,
    SIGNATURE_BYTES,
    Limits,
    refuse,
    unsafe_name,
)
from signoff.errors import PolicyError

_CHUNK = 64 * 1024


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
            raise refuse(self._where, f"the bundle file is larger than {self._cap} bytes")
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
            raise refuse(
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
            raise refuse(self._where, "a tar extension header is too large")
        data = self._take(size)
        if size == tarfile.BLOCKSIZE:
            self.last_header = data
        return data

    def chunks(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            data = self._take(min(_CHUNK, left))
            if not data:
                raise refuse(self._where, "the bundle is truncated")
            left -= len(data)
            yield data

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        if pos < self._pos:
            raise refuse(self._where, "not a valid tar archive (it refers backwards)")
        while self._pos < pos and self._take(min(_CHUNK, pos - self._pos)):
            pass
        return self._pos

    def finish(self) -> None:
        """After the last member only zero padding may follow, and not much of it."""
        if self.last_header.strip(b"\0"):
            # tarfile ends quietly at a corrupt header after the first member; we do not.
            raise refuse(self._where, "corrupt tar header after the last member")
        trailing = 0
        while data := self._take(_CHUNK):
            trailing += len(data)
            if data.strip(b"\0") or trailing > MAX_TRAILING_ZEROS:
                raise refuse(self._where, "unexpected data after the end of the tar archive")

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
    why = unsafe_name(name)
    if why:
        raise refuse(where, f"unsafe member path {name!r}: {why}")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise refuse(where, f"member {name!r} is {_kind(member)}; only regular files allowed")
    if member.size < 0:  # base-256 headers can say -1, which tarfile accepts
        raise refuse(where, f"member {name!r} has a negative size")
    if member.pax_headers:
        raise refuse(where, f"member {name!r} has pax extended headers; bundles are plain ustar")
    if name in used.names:
        raise refuse(where, f"duplicate member {name!r}")
    used.names.add(name)
    if name == MANIFEST:
        if member.size > limits.max_manifest_bytes:
            raise refuse(where, f"{MANIFEST} is larger than {limits.max_manifest_bytes} bytes")
    elif name == SIGNATURE:
        if member.size != SIGNATURE_BYTES:
            raise refuse(where, f"{SIGNATURE} is not a {SIGNATURE_BYTES}-byte Ed25519 signature")
    elif name.startswith(FILES):
        used.files += 1
        used.total += member.size
        if used.files > limits.max_files:
            raise refuse(where, f"the bundle holds more than {limits.max_files} files")
        if used.total > limits.max_total_bytes:
            raise refuse(
                where,
                f"member {name!r} ({member.size} bytes) takes the files over "
                f"{limits.max_total_bytes} bytes",
            )
    else:
        raise refuse(
            where,
            f"unexpected member {name!r}: a signed bundle holds only {MANIFEST}, {SIGNATURE} "
            f"and {FILES}...",
        )


Visit = Callable[[str, Iterator[bytes]], None]


def scan(handle: BinaryIO, where: str, limits: Limits, visit: Visit) -> None:
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
        raise refuse(where, f"not a valid gzip file ({exc})") from None
    except EOFError:
        raise refuse(where, "the bundle is truncated (the gzip stream ends early)") from None
    except zlib.error as exc:
        raise refuse(where, f"corrupt gzip data ({exc})") from None
    except (tarfile.TarError, ValueError, RecursionError) as exc:
        raise refuse(where, f"not a valid tar archive ({exc})") from None
    except OSError as exc:
        raise refuse(where, f"cannot read the bundle: {exc.strerror or exc}") from None
