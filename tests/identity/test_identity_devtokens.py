"""Dev keys and dev tokens: files on disk, the CLI subcommands, and a round trip through verify."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from signoff import devtokens
from signoff.cmd import dev as dev_cmd
from signoff.errors import ConfigError, Unauthenticated
from signoff.identity import Authenticator, IdentityConfig, from_env


def dev_authenticator(jwks_path: Path) -> Authenticator:
    return Authenticator(
        IdentityConfig(
            jwks=str(jwks_path), issuer=devtokens.DEV_ISSUER, audience=devtokens.DEV_AUDIENCE
        )
    )


def cli() -> argparse.ArgumentParser:
    # The same shape as the lead's `signoff` parser: subcommands that set `run`.
    parser = argparse.ArgumentParser(prog="signoff")
    dev_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser


def run(*argv: str) -> int:
    args = cli().parse_args(argv)
    code: int = args.run(args)
    return code


def test_dev_keys_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    jwks_path = devtokens.create_dev_keys(tmp_path / "keys")

    key_path = tmp_path / "keys" / "dev-signing-key.pem"
    assert jwks_path == tmp_path / "keys" / "jwks.json"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_dev_jwks_has_one_public_ed25519_signing_key_with_a_kid(tmp_path: Path) -> None:
    document = json.loads(devtokens.create_dev_keys(tmp_path).read_text())

    [key] = document["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["kid"]
    assert (key["alg"], key["use"]) == ("EdDSA", "sig")
    assert "d" not in key  # public only


def test_dev_keys_refuses_to_replace_existing_keys(tmp_path: Path) -> None:
    devtokens.create_dev_keys(tmp_path)
    before = (tmp_path / "jwks.json").read_text()

    with pytest.raises(ConfigError, match="already exists"):
        devtokens.create_dev_keys(tmp_path)
    assert (tmp_path / "jwks.json").read_text() == before


def test_a_minted_token_verifies_as_the_identity_it_was_minted_for(tmp_path: Path) -> None:
    auth = dev_authenticator(devtokens.create_dev_keys(tmp_path))

    token = devtokens.mint(
        tmp_path, subject="alice@acme.io", roles=["approver"], groups=["finance", "sre"]
    )
    identity = auth.verify(token)

    assert identity.subject == "alice@acme.io"
    assert identity.kind == "human"
    assert identity.roles == frozenset({"approver"})
    assert identity.groups == frozenset({"finance", "sre"})
    assert identity.issuer == "signoff-dev"


def test_extra_claims_override_the_minted_ones(tmp_path: Path) -> None:
    auth = dev_authenticator(devtokens.create_dev_keys(tmp_path))

    token = devtokens.mint(tmp_path, subject="bot", extra_claims={"principal_kind": "robot"})

    assert auth.verify(token).kind == "unknown"


def test_a_token_minted_for_another_audience_does_not_verify(tmp_path: Path) -> None:
    auth = dev_authenticator(devtokens.create_dev_keys(tmp_path))

    with pytest.raises(Unauthenticated, match="audience"):
        auth.verify(devtokens.mint(tmp_path, subject="alice", audience="elsewhere"))


def test_tokens_from_one_dev_key_directory_do_not_verify_against_another(tmp_path: Path) -> None:
    auth = dev_authenticator(devtokens.create_dev_keys(tmp_path / "a"))
    devtokens.create_dev_keys(tmp_path / "b")

    with pytest.raises(Unauthenticated, match="unknown signing key"):
        auth.verify(devtokens.mint(tmp_path / "b", subject="alice"))


def test_minting_without_keys_says_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="signoff dev-keys"):
        devtokens.mint(tmp_path, subject="alice")


@pytest.mark.parametrize(("subject", "ttl"), [("", 60), ("alice", 0), ("alice", -5)])
def test_minting_needs_a_subject_and_a_positive_ttl(tmp_path: Path, subject: str, ttl: int) -> None:
    devtokens.create_dev_keys(tmp_path)

    with pytest.raises(ConfigError):
        devtokens.mint(tmp_path, subject=subject, ttl_seconds=ttl)


def test_cli_dev_keys_then_dev_token_round_trip_through_the_env_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert run("dev-keys", str(keys)) == 0
    printed = capsys.readouterr()
    assert "never use them in production" in printed.err
    assert f"SIGNOFF_JWKS={keys / 'jwks.json'}" in printed.out

    code = run(
        "dev-token",
        "--keys",
        str(keys),
        "--sub",
        "alice@acme.io",
        "--kind",
        "human",
        "--role",
        "approver",
        "--role",
        "sre",
        "--group",
        "finance",
        "--ttl",
        "600",
    )
    token = capsys.readouterr().out.strip()

    assert code == 0
    cfg = from_env(
        {
            "SIGNOFF_JWKS": str(keys / "jwks.json"),
            "SIGNOFF_JWT_ISSUER": "signoff-dev",
            "SIGNOFF_JWT_AUDIENCE": "signoff",
        }
    )
    assert cfg is not None
    identity = Authenticator(cfg).from_metadata([("authorization", f"Bearer {token}")])
    assert (identity.subject, identity.kind) == ("alice@acme.io", "human")
    assert identity.roles == frozenset({"approver", "sre"})
    assert identity.groups == frozenset({"finance"})


def test_cli_dev_token_defaults_to_a_human_with_no_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = dev_authenticator(devtokens.create_dev_keys(tmp_path))

    assert run("dev-token", "--keys", str(tmp_path), "--sub", "bob") == 0
    identity = auth.verify(capsys.readouterr().out.strip())

    assert (identity.kind, identity.roles, identity.groups) == ("human", frozenset(), frozenset())


def test_cli_dev_token_without_keys_fails_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("dev-token", "--keys", str(tmp_path), "--sub", "bob") == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "signoff dev-keys" in printed.err


def test_cli_dev_keys_into_a_directory_with_keys_fails_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devtokens.create_dev_keys(tmp_path)

    assert run("dev-keys", str(tmp_path)) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_dev_token_only_offers_the_known_kinds(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli().parse_args(["dev-token", "--keys", str(tmp_path), "--sub", "x", "--kind", "admin"])
