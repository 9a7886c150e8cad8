"""Private keys as files: their PEM form, and files created new with an exact mode."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM: the files are protected by their mode, not a passphrase."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a new file at `path` with exactly `mode`; raises FileExistsError if
    anything is there. O_EXCL: never overwrite; O_NOFOLLOW: a planted symlink cannot redirect
    a private key elsewhere; created with the mode, so it is never readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # the umask may have narrowed it; make it exact
        out.write(data)
