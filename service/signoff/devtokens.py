"""Development signing keys and tokens for demos and tests; NOT for production use."""

# A real deployment verifies tokens from its identity provider (SIGNOFF_JWKS pointing at the
# IdP's JWKS). These helpers stand in for that IdP on a laptop or in CI: `create_dev_keys` writes
# an Ed25519 key pair and a JWKS beside it, and `mint` signs whatever identity you ask for. Anyone
# holding the private key can be any approver, so never point a production signoff at these keys.

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.errors import ConfigError
from signoff.keyfiles import create_exclusive, private_key_pem

PRIVATE_KEY_FILE = "dev-signing-key.pem"
JWKS_FILE = "jwks.json"
DEV_ISSUER = "signoff-dev"
DEV_AUDIENCE = "signoff"
DEV_ALGORITHM = "EdDSA"
KINDS = ("human", "agent", "service")


def create_dev_keys(directory: Path) -> Path:
    """Write a new Ed25519 key (0600) and its JWKS into `directory`; returns the JWKS path."""
    directory = Path(directory)
    key_path = directory / PRIVATE_KEY_FILE
    jwks_path = directory / JWKS_FILE
    # Never replace keys in place: every token minted with the old key would silently stop working.
    for existing in (key_path, jwks_path):
        if existing.exists():
            raise ConfigError(f"{existing} already exists; remove it or use another directory")
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    create_exclusive(key_path, private_key_pem(private), 0o600)
    jwks = {"keys": [_public_jwk(private)]}
    jwks_path.write_text(json.dumps(jwks, indent=2) + "\n", encoding="utf-8")
    return jwks_path


def mint(
    directory: Path,
    *,
    subject: str,
    kind: str = "human",
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    ttl_seconds: int = 3600,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A token for `subject` signed with the dev key in `directory`; `extra_claims` win over all."""
    if not subject:
        raise ConfigError("a dev token needs a subject")
    if ttl_seconds <= 0:
        raise ConfigError("ttl_seconds must be positive")
    private = _load_private_key(Path(directory))
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "principal_kind": kind,
        "roles": list(roles),
        "groups": list(groups),
    }
    claims.update(extra_claims or {})
    return jwt.encode(
        claims, private, algorithm=DEV_ALGORITHM, headers={"kid": _public_jwk(private)["kid"]}
    )


def _load_private_key(directory: Path) -> Ed25519PrivateKey:
    path = directory / PRIVATE_KEY_FILE
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"no dev signing key at {path} ({exc.strerror}); run `signoff dev-keys {directory}`"
        ) from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key


def _public_jwk(private: Ed25519PrivateKey) -> dict[str, str]:
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    x = _b64url(raw)
    # RFC 7638 thumbprint: the kid follows from the key, so the JWKS and tokens always agree.
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(members.encode("ascii")).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": DEV_ALGORITHM, "use": "sig"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
