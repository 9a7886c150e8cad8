"""Bundle signing keys: Ed25519 key pairs as PEM files, their loading and fingerprints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signoff.errors import ConfigError
from signoff.keyfiles import create_exclusive, private_key_pem

PRIVATE_KEY_NAME = "bundle-signing-key.pem"
PUBLIC_KEY_NAME = "bundle-signing-key.pub.pem"
_KEY_FILE_MAX = 64 * 1024


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
    key = _parse_key_file(
        key_path, "bundle public key", "public", serialization.load_pem_public_key
    )
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{key_path} is not an Ed25519 public key")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """A bundle-signing key written by `generate_keys` (unencrypted PKCS#8 PEM)."""
    key_path = Path(path)
    key = _parse_key_file(key_path, "signing key", "private", _unencrypted_private_key)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_path} is not an Ed25519 private key")
    return key


def _unencrypted_private_key(data: bytes) -> object:
    return serialization.load_pem_private_key(data, password=None)


def _parse_key_file(path: Path, what: str, half: str, parse: Callable[[bytes], object]) -> object:
    """The key PEM in `path` as `parse` reads it, of whatever algorithm; ConfigError if none."""
    data = _read_key_file(path, what)
    try:
        return parse(data)
    except TypeError:  # only a private key raises it: one that wants a password
        raise ConfigError(f"{path} is encrypted; use an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not a PEM {half} key") from None


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """A short name for a public key in messages: SHA-256 of its raw bytes, 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]
