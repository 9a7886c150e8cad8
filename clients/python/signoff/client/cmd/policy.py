"""The `policy` command: reload the policy bundle a service serves, or show its status."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from signoff.client.client import SignoffClient
from signoff.client.cmd.approvals import (
    BEARER_VARIABLE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAUTHENTICATED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
    add_connection_options,
    report_rpc_error,
    token_from_args,
)
from signoff.client.cmd.settings import command, tls_from_args
from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.v1 import admin_pb2

__all__ = ["register", "render_status", "run_policy"]

_PROG = "signoff policy"
_EPILOG = (
    "Needs a token whose roles include signoff_admin (--token-file, $SIGNOFF_TOKEN or "
    "--token). Exit codes: 0 ok; 1 the latest load failed (the previous bundle keeps serving) "
    "or the token lacks the role; 2 usage error; 5 service unreachable or RPC error; "
    "6 not authenticated."
)


POLICY_HELP = "reload the served policy bundle now, or show which one serves"
POLICY_ABOUT = (
    "Ask a running signoff service (PolicyAdminService) to reload its policy "
    "bundle, or which bundle it serves and how the latest load went."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `policy reload|status` to a command line; `args.run(args)` runs it."""
    parser = command(
        commands, "policy", run_policy, help=POLICY_HELP, description=POLICY_ABOUT, epilog=_EPILOG
    )
    add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    reload = commands.add_parser(
        "reload", help="load the bundle now; a bundle that does not load is refused"
    )
    status = commands.add_parser("status", help="the serving revision and the latest load")
    for sub in (reload, status):
        sub.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds to wait for the service (default: %(default)s)",
        )
        add_connection_options(sub, suppress=True)


def run_policy(args: argparse.Namespace, *, channel: grpc.Channel | None = None) -> int:
    """Run a parsed `policy` command; returns the exit code."""
    try:
        token = token_from_args(args)
        if token is None:
            print(
                f"{_PROG}: not authenticated: no token; use --token-file FILE, "
                f"${BEARER_VARIABLE} or --token",
                file=sys.stderr,
            )
            return EXIT_UNAUTHENTICATED
        tls = None if channel is not None else tls_from_args(args)
        client = SignoffClient(
            args.address, timeout=args.timeout, channel=channel, token=token, tls=tls
        )
    except (UsageError, InvalidInput) as err:
        print(f"{_PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            if args.policy_command == "reload":
                response = client.reload_policies()
                status, changed = response.status, response.changed
            else:
                status, changed = client.policy_status(), None
    except SignoffRpcError as err:
        return report_rpc_error(err, args.address, _PROG)
    except ProtocolError as err:
        print(f"{_PROG}: {args.address}: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.as_json:
        doc: dict[str, Any] = json_format.MessageToDict(
            status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        if changed is not None:
            doc = {"changed": changed, "status": doc}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(render_status(status, changed))
    return EXIT_REFUSED if status.last_load_failed else EXIT_OK


def render_status(status: admin_pb2.PolicyStatus, changed: bool | None = None) -> str:
    """The status as people read it; `changed` is the answer of a reload (None for status)."""
    lines = []
    if changed is not None:
        if status.last_load_failed:
            lines.append("reload refused: the bundle does not load; the previous one serves")
        else:
            lines.append("reloaded: a new revision serves" if changed else "reloaded: unchanged")
    lines.append(f"revision:      {status.revision}")
    lines.append(f"rules:         {status.rule_count}")
    lines.append(f"loaded at:     {_iso(status.loaded_at.ToDatetime(tzinfo=dt.UTC))}")
    outcome = "failed" if status.last_load_failed else "ok"
    attempted = _iso(status.last_attempt_at.ToDatetime(tzinfo=dt.UTC))
    lines.append(f"last attempt:  {attempted} ({outcome})")
    if status.problems:
        lines.append("problems:")
        for p in status.problems:
            where = f"{p.file}:{p.line}:{p.column}" if p.line else p.file
            rule = f" [{p.rule_id}]" if p.rule_id else ""
            lines.append(f"  {where}{rule}: {p.message}")
    return "\n".join(lines)


def _iso(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")
