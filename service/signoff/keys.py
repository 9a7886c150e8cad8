"""The key hierarchy: one root secret, and a key per purpose derived from it with HKDF."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from signoff.errors import ConfigError

MIN_KEY_BYTES: Final = 32
# Distinct HKDF labels: a key of one purpose says nothing about another, so pipelines, which
# need the masking key, can neither forge audit records nor approval digests.
PURPOSES: Final = {
    "masking": b"signoff masking key v1",
    "audit": b"signoff audit chain key v1",
    "digest": b"signoff approval digest key v1",
}
# Where an operator sets a purpose key directly (hex); it then no longer follows the root, so
# rotating it leaves the others alone.
KEY_ENV: Final = {purpose: f"SIGNOFF_{purpose.upper()}_KEY" for purpose in PURPOSES}
ROOT_ENV: Final = "SIGNOFF_HASH_KEY"


def derive(root: bytes, purpose: str) -> bytes:
    """The 32-byte key for `purpose` ("masking", "audit" or "digest") under `root`."""
    if not root:
        raise ValueError("the root secret must not be empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSES[purpose]).derive(
        root
    )


@dataclass(frozen=True)
class ServiceKeys:
    """The keys a service works with; only `masking` ever leaves it (to pipelines)."""

    masking: bytes
    audit: bytes
    digest: bytes


@dataclass(frozen=True)
class KeySources:
    """What configuration gives: the root secret (or None) and purpose keys set on their own."""

    root: bytes | None = None
    explicit: Mapping[str, bytes] = field(default_factory=dict)

    def needs_root(self, *purposes: str) -> bool:
        return any(p not in self.explicit for p in purposes or tuple(PURPOSES))

    def key(self, purpose: str, root: bytes | None = None) -> bytes:
        """The key for `purpose`: set on its own, else derived from `root` or the configured one."""
        if purpose in self.explicit:
            return self.explicit[purpose]
        secret = root or self.root
        if secret is None:
            raise ConfigError(f"no {purpose} key: set {ROOT_ENV} or {KEY_ENV[purpose]}")
        return derive(secret, purpose)

    def resolve(self, root: bytes | None = None) -> ServiceKeys:
        return ServiceKeys(*(self.key(p, root) for p in ("masking", "audit", "digest")))


def root_secret(key_file: str) -> bytes | None:
    """The root secret from a file or SIGNOFF_HASH_KEY (text, 32+ bytes); None when unset."""
    if key_file:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read hash key file {key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get(ROOT_ENV, "").encode()
    if not key:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"hash key must be at least {MIN_KEY_BYTES} bytes")
    return key


def purpose_key(purpose: str, key_file: str = "") -> bytes | None:
    """A purpose key set on its own, as hex, in `key_file` or SIGNOFF_<PURPOSE>_KEY."""
    name = KEY_ENV[purpose]
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {purpose} key file {key_file}: {exc.strerror}"
            ) from None
    else:
        text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{name} must be hex") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{name} must be at least {MIN_KEY_BYTES} bytes ({2 * MIN_KEY_BYTES} hex)"
        )
    return key


def load(root_file: str, key_files: Mapping[str, str] | None = None) -> KeySources:
    """The configured key sources; `key_files` maps a purpose to its key file, if any."""
    files = key_files or {}
    explicit = {}
    for purpose in PURPOSES:
        key = purpose_key(purpose, files.get(purpose, ""))
        if key is not None:
            explicit[purpose] = key
    return KeySources(root=root_secret(root_file), explicit=explicit)


def read_dev_secret(client: redis.Redis, prefix: str) -> bytes | None:
    """The development root a service without a configured one keeps in Redis (read only).
    Raises redis.RedisError when Redis cannot be asked: that is not a missing key."""
    from signoff.approvals.store import DEV_SECRET_REDIS_KEY

    value = client.get(f"{prefix}{DEV_SECRET_REDIS_KEY}")
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
