"""IdentityConfig and from_env: unusable settings stop the service with a clear ConfigError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signoff.errors import ConfigError
from signoff.identity import Authenticator, IdentityConfig, authenticator_for, from_env
from tests.identity.keys import AUDIENCE, ISSUER, ed_key, write_jwks

BASE_ENV = {
    "SIGNOFF_JWKS": "/etc/signoff/jwks.json",
    "SIGNOFF_JWT_ISSUER": ISSUER,
    "SIGNOFF_JWT_AUDIENCE": AUDIENCE,
}


def config(**overrides: Any) -> IdentityConfig:
    settings: dict[str, Any] = {
        "jwks": "/etc/signoff/jwks.json",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        **overrides,
    }
    return IdentityConfig(**settings)


# --- from_env --------------------------------------------------------------------------------


def test_without_signoff_jwks_there_is_no_identity_config() -> None:
    assert from_env({}) is None
    assert from_env({"SIGNOFF_JWKS": "  ", "SIGNOFF_JWT_ISSUER": ISSUER}) is None


def test_env_gives_jwks_issuer_audience_and_default_claim_names() -> None:
    assert from_env(BASE_ENV) == IdentityConfig(
        jwks="/etc/signoff/jwks.json", issuer=ISSUER, audience=AUDIENCE
    )


def test_env_claim_names_override_the_defaults() -> None:
    cfg = from_env(
        {
            **BASE_ENV,
            "SIGNOFF_JWT_ROLES_CLAIM": "https://acme.io/roles",
            "SIGNOFF_JWT_GROUPS_CLAIM": "grp",
            "SIGNOFF_JWT_KIND_CLAIM": "kind",
        }
    )

    assert cfg is not None
    assert (cfg.roles_claim, cfg.groups_claim, cfg.kind_claim) == (
        "https://acme.io/roles",
        "grp",
        "kind",
    )


@pytest.mark.parametrize("missing", ["SIGNOFF_JWT_ISSUER", "SIGNOFF_JWT_AUDIENCE"])
def test_jwks_without_issuer_or_audience_is_a_config_error_naming_what_is_missing(
    missing: str,
) -> None:
    env = {k: v for k, v in BASE_ENV.items() if k != missing}

    with pytest.raises(ConfigError, match=f"missing: {missing}"):
        from_env(env)


def test_blank_issuer_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="missing: SIGNOFF_JWT_ISSUER"):
        from_env({**BASE_ENV, "SIGNOFF_JWT_ISSUER": "   "})


# --- IdentityConfig --------------------------------------------------------------------------


def test_the_defaults_are_asymmetric_algorithms_and_thirty_seconds_leeway() -> None:
    cfg = config()

    assert cfg.algorithms == ("RS256", "ES256", "EdDSA")
    assert cfg.leeway_seconds == 30
    assert (cfg.roles_claim, cfg.groups_claim, cfg.kind_claim) == (
        "roles",
        "groups",
        "principal_kind",
    )


@pytest.mark.parametrize(
    "algorithms",
    [("none",), ("RS256", "none"), ("NONE",), ("HS256",), ("EdDSA", "HS512"), ("hs384",)],
)
def test_none_and_hmac_algorithms_are_refused(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        config(algorithms=algorithms)


@pytest.mark.parametrize("algorithms", [(), ("RS1",), "RS256"])
def test_empty_unknown_or_string_algorithms_are_refused(algorithms: Any) -> None:
    with pytest.raises(ConfigError):
        config(algorithms=algorithms)


@pytest.mark.parametrize("field", ["jwks", "issuer", "audience", "roles_claim", "kind_claim"])
def test_empty_required_settings_are_refused(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        config(**{field: ""})


@pytest.mark.parametrize("leeway", [-1, 301, 1.5, True])
def test_out_of_range_leeway_is_refused(leeway: Any) -> None:
    with pytest.raises(ConfigError, match="leeway_seconds"):
        config(leeway_seconds=leeway)


@pytest.mark.parametrize(
    "url",
    ["http://idp.acme.io/jwks.json", "http://10.0.0.5/jwks", "ftp://idp/jwks", "file:///etc/jwks"],
)
def test_keys_from_another_host_need_https(url: str) -> None:
    with pytest.raises(ConfigError):
        config(jwks=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.acme.io/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_https_anywhere_and_http_on_loopback_are_accepted(url: str) -> None:
    assert config(jwks=url).is_remote


# --- loading the JWKS file -------------------------------------------------------------------


def test_an_unreadable_jwks_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    with pytest.raises(ConfigError, match=r"cannot read JWKS file .*nope\.json"):
        Authenticator(config(jwks=str(missing)))


def test_a_directory_as_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read JWKS file"):
        Authenticator(config(jwks=str(tmp_path)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", '"keys" list'),
        ('{"keys": {}}', '"keys" list'),
        ('{"keys": []}', "no usable keys"),
        ('{"keys": [{"kty": "nope"}]}', "no usable keys"),
    ],
)
def test_an_invalid_or_empty_jwks_file_is_a_config_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ConfigError, match=message):
        Authenticator(config(jwks=str(path)))


def test_a_jwks_holding_only_an_hmac_secret_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "h"}]}
        ),
        encoding="utf-8",
    )

    with pytest.raises(ConfigError, match="no signing key for the allowed algorithms"):
        Authenticator(config(jwks=str(path)))


def test_a_jwks_with_only_encryption_keys_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**ed_key().jwk(), "use": "enc"}]}), encoding="utf-8")

    with pytest.raises(ConfigError, match="no signing key"):
        Authenticator(config(jwks=str(path)))


def test_two_jwks_keys_with_one_kid_are_a_config_error(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", ed_key("dup"), ed_key("dup", seed="b"))

    with pytest.raises(ConfigError, match="same kid"):
        Authenticator(config(jwks=str(path)))


def test_authenticator_for_a_config_loads_its_jwks(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", ed_key())

    auth = authenticator_for(config(jwks=str(path)))

    assert isinstance(auth, Authenticator)
    assert auth.config.jwks == str(path)
