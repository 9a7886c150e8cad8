"""`signoff keys masking`: print the one key pipelines are given."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import add_settings
from signoff.cmd import options
from signoff.errors import ConfigError
from signoff.keys import load, read_dev_secret


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys masking` to the `signoff` command line."""
    keys = commands.add_parser(
        "keys",
        help="print the masking key pipelines need for HASH masks (never the root secret)",
        description="Print the key id and the masking key (hex) that the service configured "
        "the same way uses for HASH masks; pipelines pass it to apply_mask. The key is "
        "derived from the root secret, so it cannot forge audit records or approval digests.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True)
    masking = sub.add_parser("masking", help="print `<key id> <key as hex>`")
    add_settings(masking, [options.HASH_KEY_FILE, options.key_file("masking")])
    masking.add_argument(
        "--output",
        "-o",
        help="write the key (hex) to this new file, mode 0600, and print only the key id",
    )
    add_settings(masking, options.REDIS)
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
        return exitcodes.USAGE
    except (ConfigError, ValueError) as exc:
        print(f"signoff keys masking: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.output:
        try:
            create_exclusive(Path(args.output), key.hex().encode() + b"\n", 0o600)
        except OSError as exc:
            print(f"signoff keys masking: cannot write {args.output}: {exc}", file=sys.stderr)
            return exitcodes.USAGE
        print(key_id(key))
        return exitcodes.OK
    print(f"{key_id(key)} {key.hex()}")
    return exitcodes.OK
