"""Caller identity from a verified bearer JWT: the only source of who an approver is."""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options

from signoff.approvals.model import Identity
from signoff.errors import ConfigError, Unauthenticated
from signoff.identities import is_blank_identity

log = logging.getLogger("signoff.identity")

# Asymmetric only: with HMAC the verification key is the signing key, so anyone who can read the
# JWKS could mint approvals, and mixing HS* with public keys is the classic algorithm confusion.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ROLES_CLAIM = "roles"
DEFAULT_GROUPS_CLAIM = "groups"
DEFAULT_KIND_CLAIM = "principal_kind"
KINDS = frozenset({"human", "agent", "service"})
UNKNOWN_KIND = "unknown"
NO_PROVIDER = (
    "approvals need an identity provider: set SIGNOFF_JWKS, SIGNOFF_JWT_ISSUER and "
    "SIGNOFF_JWT_AUDIENCE"
)
KEYS_UNAVAILABLE = "identity provider keys unavailable"
# Far above any real IdP token (large group lists included), far below gRPC's header limit;
# bounds the work an unauthenticated caller can make us do before the signature check.
MAX_TOKEN_CHARS = 16 * 1024
MAX_LEEWAY_SECONDS = 300
# Unknown kid means the IdP may have rotated keys; refetch, but not on every bad token.
REFRESH_COOLDOWN_SECONDS = 30.0
# Fetches are serialised, so without this a down IdP would make queued calls each wait out their
# own timeout in turn; for this long after a failure, calls fail at once instead.
FETCH_RETRY_SECONDS = 2.0
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
_ENV_JWKS = "SIGNOFF_JWKS"
_ENV_ISSUER = "SIGNOFF_JWT_ISSUER"
_ENV_AUDIENCE = "SIGNOFF_JWT_AUDIENCE"


@dataclass(frozen=True)
class IdentityConfig:
    """Where the identity provider's keys are and what its tokens must say."""

    jwks: str  # a file path, or an https URL (http only to a loopback host)
    issuer: str
    audience: str
    roles_claim: str = DEFAULT_ROLES_CLAIM
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    kind_claim: str = DEFAULT_KIND_CLAIM
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway_seconds: int = 30
    jwks_cache_seconds: float = 300.0
    jwks_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("jwks", "issuer", "audience", "roles_claim", "groups_claim", "kind_claim"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"identity: {name} must be a non-empty string")
        _check_algorithms(self.algorithms)
        if isinstance(self.leeway_seconds, bool) or not isinstance(self.leeway_seconds, int):
            raise ConfigError("identity: leeway_seconds must be an integer")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ConfigError(f"identity: leeway_seconds must be 0..{MAX_LEEWAY_SECONDS}")
        if not self.jwks_cache_seconds > 0:
            raise ConfigError("identity: jwks_cache_seconds must be positive")
        if not 0 < self.jwks_timeout_seconds <= 60:
            raise ConfigError("identity: jwks_timeout_seconds must be in (0, 60]")
        if self.is_remote:
            _check_url(self.jwks)
        elif "://" in self.jwks:
            raise ConfigError(f"identity: JWKS {self.jwks!r} must be a file path or an http(s) URL")

    @property
    def is_remote(self) -> bool:
        return self.jwks.lower().startswith(("https://", "http://"))


def _check_algorithms(algorithms: object) -> None:
    if isinstance(algorithms, str) or not isinstance(algorithms, tuple | list) or not algorithms:
        raise ConfigError("identity: algorithms must be a non-empty tuple of algorithm names")
    for alg in algorithms:
        if not isinstance(alg, str):
            raise ConfigError("identity: algorithms must be strings")
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ConfigError(
                f"identity: algorithm {alg!r} is not allowed: only asymmetric signatures "
                f"({', '.join(sorted(SUPPORTED_ALGORITHMS))}) can prove an identity"
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigError(
                f"identity: unsupported algorithm {alg!r}; "
                f"use some of {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        raise ConfigError(f"identity: JWKS URL {url!r} has no host")
    # Whoever can swap the keys can mint any approver, so keys travel over TLS unless they never
    # leave this machine.
    if parsed.scheme.lower() == "http" and not _is_loopback(host):
        raise ConfigError(
            f"identity: JWKS URL {url!r} must use https (plain http only to a loopback host)"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(env: Mapping[str, str]) -> IdentityConfig | None:
    """The identity config from SIGNOFF_JWKS and SIGNOFF_JWT_*; None when SIGNOFF_JWKS is unset."""
    jwks = env.get(_ENV_JWKS, "").strip()
    if not jwks:
        return None
    issuer = env.get(_ENV_ISSUER, "").strip()
    audience = env.get(_ENV_AUDIENCE, "").strip()
    missing = [
        name for name, value in ((_ENV_ISSUER, issuer), (_ENV_AUDIENCE, audience)) if not value
    ]
    if missing:
        raise ConfigError(
            f"{_ENV_JWKS} is set, so {_ENV_ISSUER} and {_ENV_AUDIENCE} are required "
            f"(missing: {', '.join(missing)})"
        )
    # An empty claim variable means "the default", like an unset one.
    return IdentityConfig(
        jwks=jwks,
        issuer=issuer,
        audience=audience,
        roles_claim=env.get("SIGNOFF_JWT_ROLES_CLAIM", "").strip() or DEFAULT_ROLES_CLAIM,
        groups_claim=env.get("SIGNOFF_JWT_GROUPS_CLAIM", "").strip() or DEFAULT_GROUPS_CLAIM,
        kind_claim=env.get("SIGNOFF_JWT_KIND_CLAIM", "").strip() or DEFAULT_KIND_CLAIM,
    )


class CallerAuthenticator(Protocol):
    """What the approval service needs: an Identity from a call's metadata, or Unauthenticated."""

    def verify(self, token: str) -> Identity: ...

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity: ...


class NoAuthenticator:
    """Stands in when no identity provider is configured: nobody is verified, so nobody approves."""

    def verify(self, token: str) -> Identity:
        raise Unauthenticated(NO_PROVIDER)

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity:
        raise Unauthenticated(NO_PROVIDER)


class Authenticator:
    """Verifies bearer JWTs against the identity provider's JWKS and turns them into Identities."""

    def __init__(self, config: IdentityConfig) -> None:
        self._config = config
        self._algorithms = list(config.algorithms)
        self._keys: _KeySource = _RemoteKeys(config) if config.is_remote else _FileKeys(config)

    @property
    def config(self) -> IdentityConfig:
        return self._config

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity:
        return self.verify(bearer_token(metadata))

    def verify(self, token: str) -> Identity:
        if not isinstance(token, str) or not token:
            raise Unauthenticated("missing bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("bearer token too large")
        if not token.isascii():
            raise Unauthenticated("malformed token")
        header = _unverified_header(token)
        alg = header.get("alg")
        # Checked before any key lookup, so `none` and HS* never get near a key.
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthenticated("token algorithm not allowed")
        key = self._key_for(header.get("kid"), alg)
        claims = self._decode(token, key)
        return self._identity(claims)

    def _key_for(self, kid: object, alg: str) -> PyJWK:
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise Unauthenticated("malformed token")
        keys = self._keys.get()
        if kid is None:
            # Without a kid the choice would be ours to guess; only a single key leaves none.
            if len(keys) != 1:
                raise Unauthenticated(
                    "token has no key id and the identity provider has several keys"
                )
            chosen = list(keys)
        else:
            chosen = [k for k in keys if k.key_id == kid]
            if not chosen:
                chosen = [k for k in self._keys.refreshed() if k.key_id == kid]
        if not chosen:
            raise Unauthenticated("unknown signing key")
        if len(chosen) > 1:
            raise Unauthenticated("ambiguous signing key")
        key = chosen[0]
        # PyJWT checks this too; checking here gives the caller an accurate reason.
        if key.algorithm_name != alg:
            raise Unauthenticated("token algorithm does not match its key")
        return key

    def _decode(self, token: str, key: PyJWK) -> dict[str, Any]:
        options: Options = {
            "verify_signature": True,
            "require": _REQUIRED_CLAIMS,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": True,
            "verify_iss": True,
            "verify_aud": True,
            "verify_sub": True,
            "verify_jti": True,
            "enforce_minimum_key_length": True,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                options=options,
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_seconds,
            )
        # Reasons are ours, not PyJWT's, and the cause is dropped: nothing token-derived leaks.
        except MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {_claim_name(exc.claim)} claim") from None
        except PyJWTError as exc:
            reason = next((r for kind, r in _REASONS if isinstance(exc, kind)), "invalid token")
            raise Unauthenticated(reason) from None
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        subject = claims.get("sub")
        # Blank as identities are compared: a subject of invisible characters names nobody.
        if not isinstance(subject, str) or is_blank_identity(subject):
            raise Unauthenticated("token subject is empty")
        kind = claims.get(self._config.kind_claim)
        # Anything but a known kind is "unknown", which can never approve: fail closed.
        return Identity(
            subject=subject,
            kind=kind if isinstance(kind, str) and kind in KINDS else UNKNOWN_KIND,
            roles=_string_set(claims, self._config.roles_claim),
            groups=_string_set(claims, self._config.groups_claim),
            issuer=str(claims["iss"]),
        )


def authenticator_for(config: IdentityConfig | None) -> Authenticator | NoAuthenticator:
    """An Authenticator for `config`, or a NoAuthenticator that refuses everyone when it is None."""
    return NoAuthenticator() if config is None else Authenticator(config)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the one `authorization: Bearer <token>` entry in gRPC metadata."""
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        raise Unauthenticated("missing bearer token")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthenticated("malformed authorization header") from None
    parts = value.split()
    if not parts or parts[0].lower() != "bearer":
        raise Unauthenticated("authorization must be a bearer token")
    if len(parts) != 2:
        raise Unauthenticated("malformed authorization header")
    return parts[1]


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except PyJWTError:
        raise Unauthenticated("malformed token") from None
    return header


# What a refused token is told, most specific first (several are subclasses of DecodeError).
_REASONS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ExpiredSignatureError, "token expired"),
    (ImmatureSignatureError, "token not yet valid"),
    (InvalidAudienceError, "token is for another audience"),
    (InvalidIssuerError, "token is from another issuer"),
    (InvalidSignatureError, "token signature does not verify"),
    (InvalidAlgorithmError, "token algorithm not allowed"),
    (InvalidKeyError, "signing key rejected"),
    (DecodeError, "malformed token"),
)


def _claim_name(claim: object) -> str:
    return repr(claim) if claim in _REQUIRED_CLAIMS else "a required"


def _string_set(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    if name not in claims:
        return frozenset()
    value = claims[name]
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise Unauthenticated(f"token claim {name!r} must be a string or a list of strings")


class _KeySource(Protocol):
    def get(self) -> tuple[PyJWK, ...]: ...

    def refreshed(self) -> tuple[PyJWK, ...]: ...


def _usable(jwk_set: PyJWKSet, algorithms: Iterable[str]) -> tuple[PyJWK, ...]:
    """The signing keys of `jwk_set` for an allowed algorithm and of a safe size."""
    allowed = set(algorithms)
    usable = []
    for key in jwk_set.keys:
        if key.public_key_use not in (None, "sig") or key.algorithm_name not in allowed:
            continue
        weakness = key.Algorithm.check_key_length(key.key)
        if weakness:
            log.warning("identity: ignoring JWKS key %r: %s", key.key_id, weakness)
            continue
        usable.append(key)
    return tuple(usable)


class _FileKeys:
    """A JWKS file, read once at start: a bad file stops the service, not a caller."""

    def __init__(self, config: IdentityConfig) -> None:
        path = Path(config.jwks)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"identity: cannot read JWKS file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"identity: JWKS file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ConfigError(f'identity: JWKS file {path} must be an object with a "keys" list')
        try:
            jwk_set = PyJWKSet.from_dict(data)
        except PyJWTError as exc:
            raise ConfigError(f"identity: JWKS file {path} has no usable keys: {exc}") from exc
        self._keys = _usable(jwk_set, config.algorithms)
        if not self._keys:
            raise ConfigError(
                f"identity: JWKS file {path} has no signing key for the allowed algorithms "
                f"({', '.join(config.algorithms)})"
            )
        kids = [k.key_id for k in self._keys if k.key_id is not None]
        if len(kids) != len(set(kids)):
            raise ConfigError(f"identity: JWKS file {path} has two keys with the same kid")

    def get(self) -> tuple[PyJWK, ...]:
        return self._keys

    def refreshed(self) -> tuple[PyJWK, ...]:
        return self._keys


class _RemoteKeys:
    """A JWKS URL, fetched on first use and cached; failing to fetch never lets anyone in."""

    def __init__(self, config: IdentityConfig) -> None:
        self._algorithms = config.algorithms
        self._client = PyJWKClient(
            config.jwks,
            cache_jwk_set=True,
            lifespan=config.jwks_cache_seconds,
            timeout=config.jwks_timeout_seconds,
            # Some IdP front ends turn away urllib's default user agent.
            headers={"User-Agent": "signoff", "Accept": "application/json"},
        )
        # One fetch at a time: a burst of calls after expiry should not stampede the IdP.
        self._lock = threading.Lock()
        self._last_refresh: float | None = None
        self._failed_at: float | None = None
        # The filtered keys of the set PyJWT last handed out, so a weak key is logged once per
        # fetch rather than once per call.
        self._filtered: tuple[PyJWKSet, tuple[PyJWK, ...]] | None = None

    def get(self) -> tuple[PyJWK, ...]:
        with self._lock:
            return self._fetch(refresh=False)

    def refreshed(self) -> tuple[PyJWK, ...]:
        with self._lock:
            now = time.monotonic()
            if (
                self._last_refresh is not None
                and now - self._last_refresh < REFRESH_COOLDOWN_SECONDS
            ):
                return self._fetch(refresh=False)
            self._last_refresh = now
            return self._fetch(refresh=True)

    def _fetch(self, *, refresh: bool) -> tuple[PyJWK, ...]:
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < FETCH_RETRY_SECONDS:
            cache = self._client.jwk_set_cache
            if cache is None or cache.get() is None:
                raise Unauthenticated(KEYS_UNAVAILABLE)
            refresh = False  # the IdP just failed us; the keys still cached are still good
        try:
            jwk_set = self._client.get_jwk_set(refresh=refresh)
        # PyJWT wraps URL errors, but a bad body or a dropped connection mid-read escape as
        # ValueError / OSError / HTTPException; all of them mean "no keys", never "allow".
        except (PyJWTError, ValueError, OSError, http.client.HTTPException) as exc:
            self._failed_at = time.monotonic()
            log.warning("identity: fetching JWKS from %s failed: %s", self._client.uri, exc)
            raise Unauthenticated(KEYS_UNAVAILABLE) from None
        self._failed_at = None
        if self._filtered is None or self._filtered[0] is not jwk_set:
            self._filtered = (jwk_set, _usable(jwk_set, self._algorithms))
        keys = self._filtered[1]
        if not keys:
            log.warning("identity: JWKS at %s has no usable signing key", self._client.uri)
            raise Unauthenticated(KEYS_UNAVAILABLE)
        return keys
