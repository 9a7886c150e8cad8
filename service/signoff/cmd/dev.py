"""`signoff dev-keys` and `signoff dev-token`: a stand-in identity provider for demos and tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import command
from signoff.devtokens import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    KINDS,
    PRIVATE_KEY_FILE,
    create_dev_keys,
    mint,
)
from signoff.errors import ConfigError

DEV_KEYS_HELP = "write a development signing key and JWKS (demos and tests only)"
DEV_KEYS_ABOUT = (
    "Write an Ed25519 signing key and a JWKS for demos and tests. "
    "Not for production: whoever holds the key can be any approver."
)
MINT_HELP = "print a token signed with a development key (demos and tests only)"
MINT_ABOUT = "Print a bearer token signed with the key from `signoff dev-keys`."


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dev-keys DIR` and `dev-token --keys DIR --sub S ...` on the `signoff` CLI."""
    keys = command(
        commands, "dev-keys", run_dev_keys, help=DEV_KEYS_HELP, description=DEV_KEYS_ABOUT
    )
    keys.add_argument("directory", metavar="DIR", type=Path, help="directory to write into")

    token = command(commands, "dev-token", run_dev_token, help=MINT_HELP, description=MINT_ABOUT)
    token.add_argument("--keys", metavar="DIR", type=Path, required=True, help="dev-keys DIR")
    token.add_argument("--sub", required=True, help="subject, e.g. alice@acme.io")
    token.add_argument("--kind", choices=KINDS, default="human", help="default: human")
    token.add_argument(
        "--role", dest="roles", metavar="R", action="append", default=[], help="repeatable"
    )
    token.add_argument(
        "--group", dest="groups", metavar="G", action="append", default=[], help="repeatable"
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--issuer", default=DEV_ISSUER, help=f"default: {DEV_ISSUER}")
    token.add_argument("--audience", default=DEV_AUDIENCE, help=f"default: {DEV_AUDIENCE}")


def run_dev_keys(args: argparse.Namespace) -> int:
    try:
        jwks_path = create_dev_keys(args.directory)
    except (ConfigError, OSError) as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    print("development keys only: never use them in production", file=sys.stderr)
    print(f"wrote {jwks_path} and {jwks_path.parent / PRIVATE_KEY_FILE}")
    print(
        f"serve with: SIGNOFF_JWKS={jwks_path} SIGNOFF_JWT_ISSUER={DEV_ISSUER} "
        f"SIGNOFF_JWT_AUDIENCE={DEV_AUDIENCE}"
    )
    return exitcodes.OK


def run_dev_token(args: argparse.Namespace) -> int:
    try:
        token = mint(
            args.keys,
            subject=args.sub,
            kind=args.kind,
            roles=args.roles,
            groups=args.groups,
            issuer=args.issuer,
            audience=args.audience,
            ttl_seconds=args.ttl,
        )
    except ConfigError as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    print(token)
    return exitcodes.OK
