"""`signoff audit verify|export`: check the audit hash chains, or export them as JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from collections.abc import Iterator
from typing import TextIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from signoff import keys as keys_mod
from signoff.audit.chain import STREAMS, Hasher, StreamKeys
from signoff.audit.verify import export, verify
from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import add_settings, command
from signoff.cmd import options
from signoff.errors import ConfigError

OK, TAMPERED, FAILED = exitcodes.OK, exitcodes.REFUSED, exitcodes.USAGE


VERIFY_HELP = "check the hash chains; exit 0 intact, 1 tampering found, 2 could not check"
VERIFY_ABOUT = (
    "Walk each audit stream and check every record's keyed hash, its link to "
    "the record before it, the anchor (first retained record) and the head (last record). "
    "Exit 0: intact; 1: tampering found (the first bad record is printed); 2: "
    "configuration error or Redis unreachable."
)
EXPORT_HELP = "write audit records as JSON lines (for a SIEM)"
EXPORT_ABOUT = (
    "Write audit records, one JSON object per line, with their seq, prev, hash "
    "and stream entry id. --since and --until filter on the record time `at` "
    "(since <= at < until); a time without a zone is UTC."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit verify` and `audit export` to the `signoff` command line."""
    audit = commands.add_parser(
        "audit",
        help="verify or export the tamper-evident audit log",
        description="Check the audit log's hash chains in Redis, or export them as JSON lines.",
    )
    sub = audit.add_subparsers(dest="audit_command", required=True)
    check = command(sub, "verify", run_verify, help=VERIFY_HELP, description=VERIFY_ABOUT)
    _common(check)
    add_settings(check, [options.HASH_KEY_FILE, options.key_file("audit")])
    out = command(sub, "export", run_export, help=EXPORT_HELP, description=EXPORT_ABOUT)
    _common(out)
    out.add_argument("--since", type=_time, help="ISO 8601 time, inclusive")
    out.add_argument("--until", type=_time, help="ISO 8601 time, exclusive")
    out.add_argument("--output", "-o", help="file to write (default: standard output)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream",
        choices=(*STREAMS, "all"),
        default="all",
        help="which audit stream (default all)",
    )
    add_settings(parser, options.REDIS)


def _time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def _streams(args: argparse.Namespace) -> list[StreamKeys]:
    names = STREAMS if args.stream == "all" else (args.stream,)
    return [StreamKeys.of(args.redis_prefix, name) for name in names]


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        # Bytes that are not UTF-8 (planted by hand) must read as a bad record, not crash.
        encoding_errors="replace",
    )


def _fail(command: str, message: str) -> int:
    print(f"signoff audit {command}: {message}", file=sys.stderr)
    return FAILED


def run_verify(args: argparse.Namespace) -> int:
    """`signoff audit verify`: 0 when every chain is intact, 1 on tampering, 2 otherwise."""
    try:
        sources = keys_mod.load(args.hash_key_file, {"audit": args.audit_key_file})
    except ConfigError as exc:
        return _fail("verify", str(exc))
    code = OK
    try:
        client = _client(args.redis_url)
    except ValueError as exc:
        return _fail("verify", f"bad REDIS_URL: {exc}")
    with contextlib.closing(client):
        root = sources.root
        if root is None and sources.needs_root("audit"):
            try:
                root = keys_mod.read_dev_secret(client, args.redis_prefix)
            except redis.RedisError as exc:
                return _fail(
                    "verify",
                    f"cannot reach Redis to read the audit log: {type(exc).__name__}: {exc}",
                )
        if root is None and sources.needs_root("audit"):
            return _fail(
                "verify",
                "no key: set SIGNOFF_HASH_KEY or --hash-key-file to the root secret the "
                "signoff service uses (the chain key is derived from it), or SIGNOFF_AUDIT_KEY "
                "when the service sets its audit key on its own",
            )
        hasher = Hasher(sources.key("audit", root))
        for keys in _streams(args):
            try:
                result = verify(client, hasher, keys)
            except redis.RedisError as exc:
                # Redis error texts name host:port at most, never the URL's password.
                return _fail("verify", f"cannot read {keys.stream}: {type(exc).__name__}: {exc}")
            if result.ok:
                head = f", head seq {result.head[0]} hash {result.head[1]}" if result.head else ""
                print(f"{keys.name}: ok, {result.checked} records verified{head}")
                continue
            code = TAMPERED
            bad = result.first_bad
            assert bad is not None
            entry = bad.entry_id or "(none: the record is gone)"
            print(
                f"{keys.name}: TAMPERED: first bad record seq {bad.seq}, entry {entry}: "
                f"{bad.reason} ({result.detail}); {result.checked} records verified before it"
            )
    return code


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if not path:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def run_export(args: argparse.Namespace) -> int:
    """`signoff audit export`: 0 when written, 2 when Redis or the output fails."""
    try:
        client = _client(args.redis_url)
    except ValueError as exc:
        return _fail("export", f"bad REDIS_URL: {exc}")
    total = 0
    with contextlib.closing(client):
        try:
            with _output(args.output) as out:
                for keys in _streams(args):
                    total += export(client, keys, out, since=args.since, until=args.until)
        except redis.RedisError as exc:
            return _fail("export", f"cannot read the audit log: {type(exc).__name__}: {exc}")
        except BrokenPipeError:
            raise  # the reader left (`| head`): the command's caller ends quietly
        except OSError as exc:
            return _fail("export", f"cannot write {args.output}: {exc.strerror}")
    print(f"signoff audit export: {total} records", file=sys.stderr)
    return OK
