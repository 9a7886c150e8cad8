"""`signoff bundle keygen|sign|verify`: make and check signed policy bundles."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from signoff.bundles.keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_keys,
    key_fingerprint,
    load_public_key,
)
from signoff.bundles.manifest import DEFAULT_LIMITS, iso_utc
from signoff.bundles.signing import SOURCE_DATE_EPOCH, parse_expires_in, sign_bundle
from signoff.bundles.verify import hours_left_if_soon, load_verified
from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import command
from signoff.engine import cel
from signoff.errors import ConfigError, PolicyError

OK, REFUSED, USAGE = exitcodes.OK, exitcodes.REFUSED, exitcodes.USAGE


KEYGEN_ABOUT = (
    f"Write {PRIVATE_KEY_NAME} (0600; keep it with your CI secrets) and "
    f"{PUBLIC_KEY_NAME} (give it to the service) into DIR. Existing files are never "
    "overwritten. Exit 0: written; 2: not written."
)
SIGN_HELP = "load a rules directory and write it as a signed bundle"
SIGN_ABOUT = (
    "Load the rules directory as the service would (a bundle that does not "
    "load is never signed), then write its policy files, a manifest and the signature. "
    f"The manifest records the signing time: ${SOURCE_DATE_EPOCH} when set (so a rebuild "
    "gives identical bytes), else now. Prints the revision. Exit 0: signed; 1: the rules "
    "do not load; 2: bad key, paths or times."
)
VERIFY_HELP = "check a signed bundle as the service would"
VERIFY_ABOUT = (
    "Verify the signature, the files, the limits and the signing and expiry "
    "times, then load the policies. Exit 0: the service would serve it (prints revision, "
    "file count, signing time and expiry); 1: refused (prints why); 2: usage error "
    "(missing bundle file, unusable key)."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `bundle keygen|sign|verify` on the `signoff` CLI; `args.run(args)` runs one."""
    bundle = commands.add_parser(
        "bundle",
        help="make and check signed policy bundles",
        description="Signed bundles carry policies from outside the container's disk: a "
        ".tar.gz with a manifest of file hashes and an Ed25519 signature over it.",
    )
    sub = bundle.add_subparsers(dest="bundle_command", required=True)
    keygen = command(
        sub, "keygen", run_keygen, help="write a new signing key pair", description=KEYGEN_ABOUT
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory for the keys")
    sign = command(sub, "sign", run_sign, help=SIGN_HELP, description=SIGN_ABOUT)
    sign.add_argument("--rules", required=True, metavar="DIR", help="policy bundle directory")
    sign.add_argument("--key", required=True, metavar="PRIVATE.pem", help="signing key")
    sign.add_argument("--out", required=True, metavar="FILE.tar.gz", help="bundle to write")
    sign.add_argument(
        "--expires-in",
        type=_expires_in,
        metavar="DURATION",
        help="refuse to serve the bundle this long after signing, e.g. 30d, 12h, 1d12h "
        "(default: never expires)",
    )
    _backend_argument(sign)
    verify = command(sub, "verify", run_verify, help=VERIFY_HELP, description=VERIFY_ABOUT)
    verify.add_argument("--bundle", required=True, metavar="FILE", help="signed bundle")
    verify.add_argument("--public-key", required=True, metavar="PUBLIC.pem", help="trusted key")
    _backend_argument(verify)


def _expires_in(text: str) -> dt.timedelta:
    try:
        return parse_expires_in(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cel-backend",
        choices=cel.BACKENDS,
        default=cel.DEFAULT_BACKEND,
        help=f"CEL evaluator to load with (default {cel.DEFAULT_BACKEND})",
    )


def _say(command: str, message: str) -> None:
    print(f"signoff bundle {command}: {message}", file=sys.stderr)


def _refused(command: str, exc: PolicyError) -> int:
    _say(command, "refused:")
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)
    return REFUSED


def run_keygen(args: argparse.Namespace) -> int:
    """`signoff bundle keygen`: 0 written, 2 not (files exist, or cannot write)."""
    try:
        private_path, public_path = generate_keys(args.out)
    except ConfigError as exc:
        _say("keygen", str(exc))
        return USAGE
    print(f"private key: {private_path}\npublic key: {public_path}")
    return OK


def run_sign(args: argparse.Namespace) -> int:
    """`signoff bundle sign`: 0 signed (prints the revision), 1 rules refused, 2 otherwise."""
    try:
        revision = sign_bundle(
            args.rules, args.key, args.out, backend=args.cel_backend, expires_in=args.expires_in
        )
    except ConfigError as exc:
        _say("sign", str(exc))
        return USAGE
    except PolicyError as exc:
        return _refused("sign", exc)
    except OSError as exc:
        _say("sign", f"{exc.filename or args.out}: {exc.strerror or exc}")
        return USAGE
    print(revision)
    return OK


def run_verify(args: argparse.Namespace) -> int:
    """`signoff bundle verify`: 0 it would be served, 1 refused, 2 usage error."""
    if not Path(args.bundle).is_file():
        _say("verify", f"{args.bundle}: no such file")
        return USAGE
    now = time.time()
    try:
        key = load_public_key(args.public_key)
        bundle, manifest = load_verified(args.bundle, key, args.cel_backend, DEFAULT_LIMITS, now)
    except ConfigError as exc:
        _say("verify", str(exc))
        return USAGE
    except PolicyError as exc:
        return _refused("verify", exc)
    expires = "never expires"
    if manifest.expires_at is not None:
        expires = f"expires at {iso_utc(manifest.expires_at)}"
    print(
        f"{args.bundle}: ok, revision {bundle.revision}, {len(bundle.files)} policy files, "
        f"signed by {key_fingerprint(key)}, signed at {iso_utc(manifest.signed_at)}, {expires}"
    )
    hours = hours_left_if_soon(manifest, now)
    if hours is not None:
        _say("verify", f"warning: {args.bundle} expires in {hours} hours")
    return OK
