"""The key hierarchy: one root secret, and a key per purpose derived from it with HKDF."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.backoff import NoBackoff
from redis.retry import Retry

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


def add_key_file_arguments(parser: argparse.ArgumentParser, *purposes: str) -> None:
    """--hash-key-file and --<purpose>-key-file, defaulting to their *_FILE variables."""
    parser.add_argument(
        "--hash-key-file",
        default=os.environ.get("SIGNOFF_HASH_KEY_FILE", ""),
        help="file holding the root secret (SIGNOFF_HASH_KEY_FILE; or the secret itself in "
        "SIGNOFF_HASH_KEY); every purpose key not set on its own is derived from it",
    )
    for purpose in purposes:
        parser.add_argument(
            f"--{purpose}-key-file",
            default=os.environ.get(f"{KEY_ENV[purpose]}_FILE", ""),
            help=f"file holding the {purpose} key as hex ({KEY_ENV[purpose]}_FILE; or the hex "
            f"in {KEY_ENV[purpose]}); set, it replaces the key derived from the root",
        )


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


def add_keys_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `signoff keys masking`: the one key pipelines are given."""
    keys = subparsers.add_parser(
        "keys",
        help="print the masking key pipelines need for HASH masks (never the root secret)",
        description="Print the key id and the masking key (hex) that the service configured "
        "the same way uses for HASH masks; pipelines pass it to apply_mask. The key is "
        "derived from the root secret, so it cannot forge audit records or approval digests.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True)
    masking = sub.add_parser("masking", help="print `<key id> <key as hex>`")
    add_key_file_arguments(masking, "masking")
    masking.add_argument(
        "--output",
        "-o",
        help="write the key (hex) to this new file, mode 0600, and print only the key id",
    )
    masking.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="where a service without a configured root keeps its development one (REDIS_URL)",
    )
    masking.add_argument(
        "--redis-prefix",
        default=os.environ.get("SIGNOFF_REDIS_PREFIX", "signoff:"),
        help="key prefix in Redis (SIGNOFF_REDIS_PREFIX; default 'signoff:')",
    )
    masking.set_defaults(run=run_keys_masking)


def run_keys_masking(args: argparse.Namespace) -> int:
    """`signoff keys masking`: 0 printed, 2 no key or a bad configuration."""
    from signoff.client.masking import key_id
    from signoff.keyfiles import create_exclusive

    try:
        sources = load(args.hash_key_file, {"masking": args.masking_key_file})
        root = None
        if sources.needs_root("masking") and sources.root is None:
            client = redis.Redis.from_url(
                args.redis_url, socket_timeout=5.0, retry=Retry(NoBackoff(), 0)
            )
            with contextlib.closing(client):
                root = read_dev_secret(client, args.redis_prefix)
        key = sources.key("masking", root)
    except redis.RedisError as exc:
        print(
            f"signoff keys masking: cannot reach Redis for the development root: "
            f"{type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    except (ConfigError, ValueError) as exc:
        print(f"signoff keys masking: {exc}", file=sys.stderr)
        return 2
    if args.output:
        try:
            create_exclusive(Path(args.output), key.hex().encode() + b"\n", 0o600)
        except OSError as exc:
            print(f"signoff keys masking: cannot write {args.output}: {exc}", file=sys.stderr)
            return 2
        print(key_id(key))
        return 0
    print(f"{key_id(key)} {key.hex()}")
    return 0
