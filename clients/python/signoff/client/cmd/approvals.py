"""The `approvals` command: list, show, approve, reject, cancel and watch approvals."""

from __future__ import annotations

import argparse
import contextvars
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc

from signoff.client.approvals import Approval, ApprovalState, format_duration
from signoff.client.client import SignoffClient
from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import (
    CLIENT_ADDRESS,
    add_settings,
    add_tls_arguments,
    command,
    tls_from_args,
)
from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.client.pipes import quiet_on_closed_stdout
from signoff.client.types import operator_name

__all__ = [
    "BEARER_VARIABLE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_UNAUTHENTICATED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "UsageError",
    "add_connection_options",
    "configure_approvals_parser",
    "main",
    "register",
    "render_approval",
    "report_rpc_error",
    "run_approvals",
    "token_from_args",
]

EXIT_OK = exitcodes.OK
EXIT_REFUSED = exitcodes.REFUSED
EXIT_USAGE = exitcodes.USAGE
EXIT_TIMEOUT = exitcodes.TIMEOUT
EXIT_NOT_FOUND = exitcodes.NOT_FOUND
EXIT_UNAVAILABLE = exitcodes.UNAVAILABLE
EXIT_UNAUTHENTICATED = exitcodes.UNAUTHENTICATED
EXIT_INTERRUPTED = exitcodes.INTERRUPTED
BEARER_VARIABLE = "SIGNOFF_TOKEN"

_PROG = "signoff approvals"
_EPILOG = (
    "Exit codes: 0 ok; 1 refused (not allowed, or not in a state that allows it; watch: "
    "rejected, cancelled or expired); 2 usage error; 3 watch timed out; 4 no such approval; "
    "5 service unreachable or RPC error; 6 not authenticated."
)
_BEARER_HELP = (
    "the bearer token (JWT) to act as; prefer --token-file or $SIGNOFF_TOKEN, since a command "
    "line is visible to other users of the machine"
)
_LABEL = 16
# Three base64url segments: what a JWT looks like, so argparse never echoes one back.
_JWT_SHAPED = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_REFUSED = frozenset({"PERMISSION_DENIED", "FAILED_PRECONDITION"})
# The arguments `main` parses, when they are not sys.argv; error messages are redacted by them.
_ARGV: contextvars.ContextVar[Sequence[str] | None] = contextvars.ContextVar("argv", default=None)


class UsageError(Exception):
    """A problem with the command line or its files, reported with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error messages never quote a bearer token."""

    def error(self, message: str) -> NoReturn:
        argv = _ARGV.get()
        super().error(_redact(message, sys.argv if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `approvals` with `argv` (default: sys.argv[1:]) and return the exit code."""
    parser = _Parser(
        prog=_PROG,
        description="List, inspect and decide approvals held by a signoff service.",
        epilog=_EPILOG,
    )
    configure_approvals_parser(parser)
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Accept `... approvals list` too, so the command reads the same as `signoff approvals`.
    if arguments[:1] == ["approvals"]:
        arguments = arguments[1:]
    reset = _ARGV.set(arguments)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:
        # argparse exits on --help (0) and on usage errors (2); return instead of exiting.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    finally:
        _ARGV.reset(reset)
    return quiet_on_closed_stdout(lambda: run_approvals(args))


APPROVALS_HELP = "list, show, approve, reject, cancel or watch approvals"
APPROVALS_ABOUT = "List, inspect and decide approvals held by a signoff service."


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `approvals` (with its subcommands) to a command line; `args.run(args)` runs it."""
    parser = command(
        commands,
        "approvals",
        run_approvals,
        help=APPROVALS_HELP,
        description=APPROVALS_ABOUT,
        epilog=_EPILOG,
    )
    configure_approvals_parser(parser)


def configure_approvals_parser(parser: argparse.ArgumentParser) -> None:
    """Add the approvals subcommands and options to `parser` and set `run=run_approvals`."""
    add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(
        dest="approvals_command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    listing = commands.add_parser("list", help="pending approvals you may decide")
    listing.add_argument(
        "--limit", type=_positive_int, default=50, help="at most this many (default: %(default)s)"
    )

    show = commands.add_parser("show", help="one approval in full (its payload masked)")
    approve = commands.add_parser("approve", help="add your approval")
    reject = commands.add_parser("reject", help="reject; one eligible rejection ends it")
    cancel = commands.add_parser("cancel", help="withdraw your own request")
    watch = commands.add_parser(
        "watch",
        help="print every change until it is decided",
        description="Print the approval's state and every change until it is decided. "
        "Exit 0 when approved (or already used), 1 when rejected, cancelled or expired, "
        "3 when --timeout passes first.",
    )
    for sub in (show, approve, reject, cancel, watch):
        sub.add_argument("approval_id", metavar="ID", help="the approval, e.g. apr_...")
    for sub in (approve, reject):
        sub.add_argument("--reason", required=True, help="why; recorded with your vote")
    cancel.add_argument("--reason", default="", help="why (optional)")
    watch.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="give up after S seconds (exit 3); default: until it is decided",
    )
    for sub in (listing, show, approve, reject, cancel):
        sub.add_argument(
            "--timeout",
            type=_positive_float,
            default=5.0,
            metavar="S",
            help="seconds to wait for the service (default: %(default)s)",
        )
    for sub in (listing, show, approve, reject, cancel, watch):
        add_connection_options(sub, suppress=True)


def run_approvals(args: argparse.Namespace, *, channel: grpc.Channel | None = None) -> int:
    """Run a parsed `approvals` command; returns the exit code.

    `channel`, when given, is used instead of opening one to `--address` (and is left open).
    """
    command = _COMMANDS[args.approvals_command]
    try:
        token = token_from_args(args)
    except UsageError as err:
        _say(str(err))
        return EXIT_USAGE
    if token is None:
        _say(f"not authenticated: no token; use --token-file FILE, ${BEARER_VARIABLE} or --token")
        return EXIT_UNAUTHENTICATED
    rpc_timeout = 5.0 if args.approvals_command == "watch" else args.timeout
    try:
        tls = None if channel is not None else tls_from_args(args)
        client = SignoffClient(
            args.address, timeout=rpc_timeout, channel=channel, token=token, tls=tls
        )
    except InvalidInput as err:
        _say(str(err))
        return EXIT_USAGE
    try:
        with client:
            return command(client, args)
    except KeyboardInterrupt:
        # Ctrl-C ends a watch the usual way for a shell, without a traceback.
        return EXIT_INTERRUPTED
    except InvalidInput as err:
        _say(str(err))
        return EXIT_USAGE
    except SignoffRpcError as err:
        return report_rpc_error(err, args.address)
    except ProtocolError as err:
        _say(f"{args.address}: {err}")
        return EXIT_UNAVAILABLE


def render_approval(approval: Approval, now: dt.datetime | None = None) -> str:
    """Return the human-readable report of one approval."""
    now = now or dt.datetime.now(dt.UTC)
    request = approval.request
    requirement = approval.requirement
    lines = [_label("approval", approval.id), _label("state", _state_line(approval, now))]
    requester = f"{request.requester_id} ({request.requester_kind}"
    if request.requester_roles:
        requester += f"; roles {', '.join(request.requester_roles)}"
    lines.append(_label("requester", requester + ")"))
    lines.append(_label("action", request.action))
    resource = " ".join(part for part in (request.resource_kind, request.resource_id) if part)
    lines.append(_label("resource", resource))
    if request.environment:
        lines.append(_label("environment", request.environment))
    if request.reasons:
        lines.append("reasons:")
        lines.extend(f"  - {reason}" for reason in request.reasons)
    lines.append(_label("rules", ", ".join(request.matched_rules) or "(none)"))
    payload = json.dumps(dict(request.payload), ensure_ascii=False, sort_keys=True)
    lines.append(_label("payload", payload if request.payload else "(none)"))
    if request.fields:
        lines.append("fields:")
        for item in request.fields:
            tags = f" [{', '.join(item.tags)}]" if item.tags else ""
            lines.append(f"  - {item.path}{tags}")
    if request.masking_plan.fields:
        lines.append("masked:")
        lines.extend(
            f"  - {entry.path} → {operator_name(entry.operator)}"
            for entry in request.masking_plan.fields
        )
    lines.append(_label("needs", _needs(approval)))
    if requirement.requester_ids:
        lines.append(_label("cannot approve", ", ".join(requirement.requester_ids)))
    if approval.votes:
        lines.append("votes:")
        for vote in approval.votes:
            verb = "approved" if vote.approve else "rejected"
            when = f" at {_iso(vote.at)}" if vote.at else ""
            lines.append(f"  - {vote.approver_id} {verb}{when}: {vote.reason}")
    else:
        lines.append(_label("votes", "(none yet)"))
    lines.append(_label("created", _when(approval.created_at, now)))
    lines.append(_label("pending until", _when(approval.pending_expires_at, now)))
    if approval.approved_at:
        lines.append(_label("approved", _when(approval.approved_at, now)))
    if approval.grant_expires_at:
        lines.append(_label("usable until", _when(approval.grant_expires_at, now)))
    if approval.final_at:
        ended = _when(approval.final_at, now)
        lines.append(
            _label("ended", f"{ended}: {approval.final_reason}" if approval.final_reason else ended)
        )
    lines.append(_label("decision", approval.decision_id))
    lines.append(_label("revision", approval.policy_revision))
    return "\n".join(lines)


def _list(client: SignoffClient, args: argparse.Namespace) -> int:
    approvals = client.list_approvals(args.limit)
    if args.as_json:
        print(json.dumps([item.to_dict() for item in approvals], indent=2, ensure_ascii=False))
        return EXIT_OK
    if not approvals:
        print("no pending approvals you can decide")
        return EXIT_OK
    now = dt.datetime.now(dt.UTC)
    for item in approvals:
        request = item.request
        resource = " ".join(part for part in (request.resource_kind, request.resource_id) if part)
        env = f" in {request.environment}" if request.environment else ""
        print(
            f"{item.id}  {item.approvals}/{item.requirement.quorum}  "
            f"{request.action} {resource}{env}  by {request.requester_id}  "
            f"expires {_relative(item.pending_expires_at, now)}"
        )
    return EXIT_OK


def _show(client: SignoffClient, args: argparse.Namespace) -> int:
    _print_approval(client.get_approval(args.approval_id), args)
    return EXIT_OK


def _approve(client: SignoffClient, args: argparse.Namespace) -> int:
    _print_approval(client.approve(args.approval_id, args.reason), args)
    return EXIT_OK


def _reject(client: SignoffClient, args: argparse.Namespace) -> int:
    _print_approval(client.reject(args.approval_id, args.reason), args)
    return EXIT_OK


def _cancel(client: SignoffClient, args: argparse.Namespace) -> int:
    _print_approval(client.cancel(args.approval_id, args.reason), args)
    return EXIT_OK


def _watch(client: SignoffClient, args: argparse.Namespace) -> int:
    def show(approval: Approval) -> None:
        if args.as_json:
            print(json.dumps(approval.to_dict(), ensure_ascii=False), flush=True)
        else:
            now = dt.datetime.now(dt.UTC)
            print(f"{_iso(now)}  {approval.id}  {_state_line(approval, now)}", flush=True)

    approval = client.wait_for_approval(args.approval_id, timeout=args.timeout, on_change=show)
    if approval.state in (ApprovalState.APPROVED, ApprovalState.CONSUMED):
        return EXIT_OK
    if approval.state is ApprovalState.PENDING:
        waited = args.timeout or 0.0
        spent = f"{waited:g}s" if waited < 60 else format_duration(waited)
        _say(f"{approval.id} still pending after {spent}")
        return EXIT_TIMEOUT
    return EXIT_REFUSED


_COMMANDS: Mapping[str, Callable[[SignoffClient, argparse.Namespace], int]] = {
    "list": _list,
    "show": _show,
    "approve": _approve,
    "reject": _reject,
    "cancel": _cancel,
    "watch": _watch,
}


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--address, the token options, --json and TLS, for a command acting with a credential."""

    # Given both before and after the subcommand; below it they default to SUPPRESS so that
    # an option given above is not overwritten by the subcommand's default.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("service and credential")
    add_settings(group, [CLIENT_ADDRESS], suppress=suppress)
    group.add_argument("--token", default=default(None), metavar="JWT", help=_BEARER_HELP)
    group.add_argument(
        "--token-file",
        type=Path,
        default=default(None),
        metavar="FILE",
        help=f"read the token from FILE (surrounding whitespace ignored); else ${BEARER_VARIABLE}",
    )
    group.add_argument(
        "--json", action="store_true", dest="as_json", default=default(False), help="print JSON"
    )
    add_tls_arguments(group, suppress=suppress)


def token_from_args(args: argparse.Namespace) -> str | None:
    """The bearer token from --token, --token-file or $SIGNOFF_TOKEN; None when none is given.
    Raises UsageError for both flags at once, or an empty or unreadable one."""
    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if args.token is not None:
        token = args.token.strip()
        if not token:
            raise UsageError("--token is empty")
        return str(token)
    if args.token_file is not None:
        path: Path = args.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            # The reason only: a decode error would otherwise quote bytes of the file.
            why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise UsageError(f"cannot read token file {path}: {why}") from None
        if not token:
            raise UsageError(f"token file {path} is empty")
        return token
    return os.environ.get(BEARER_VARIABLE, "").strip() or None


def report_rpc_error(err: SignoffRpcError, addr: str, prog: str = _PROG) -> int:
    """Say what a failed call means to the user of command `prog`; its exit code."""
    details = err.details or err.code
    if err.code == "UNAUTHENTICATED":
        _say(f"not authenticated: {details}", prog)
        return EXIT_UNAUTHENTICATED
    if err.code in _REFUSED:
        _say(f"refused: {details}", prog)
        return EXIT_REFUSED
    if err.code == "NOT_FOUND":
        _say(f"not found: {details}", prog)
        return EXIT_NOT_FOUND
    if err.code == "INVALID_ARGUMENT":
        _say(details, prog)
        return EXIT_USAGE
    _say(f"{addr}: {err}", prog)
    return EXIT_UNAVAILABLE


def _print_approval(approval: Approval, args: argparse.Namespace) -> None:
    if args.as_json:
        print(json.dumps(approval.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_approval(approval))


def _state_line(approval: Approval, now: dt.datetime) -> str:
    counted = f"{approval.approvals}/{approval.requirement.quorum} approvals"
    match approval.state:
        case ApprovalState.PENDING:
            return f"PENDING, {counted}, expires {_relative(approval.pending_expires_at, now)}"
        case ApprovalState.APPROVED:
            left = "?"
            if approval.grant_expires_at is not None:
                left = format_duration((approval.grant_expires_at - now).total_seconds())
            return f"APPROVED, {counted}, usable for {left}"
        case ApprovalState.CONSUMED:
            return "CONSUMED: approved and used"
        case _:
            because = f": {approval.final_reason}" if approval.final_reason else ""
            return f"{approval.state.name}{because}"


def _needs(approval: Approval) -> str:
    requirement = approval.requirement
    text = f"{requirement.quorum} distinct approver(s)"
    # Every counted approver must satisfy every set; within a set, any role or group will do.
    for approvers in requirement.approvers:
        options = [f"role {role}" for role in approvers.roles]
        options += [f"group {group}" for group in approvers.groups]
        text += f", each with {' or '.join(options)}"
    return text


def _when(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return "-"
    return f"{_iso(value)} ({_relative(value, now)})"


def _relative(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return "(never)"
    seconds = (value - now).total_seconds()
    return f"in {format_duration(seconds)}" if seconds >= 0 else f"{format_duration(-seconds)} ago"


def _iso(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _label(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL}}{value}"


def _say(message: str, prog: str = _PROG) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _redact(message: str, argv: Sequence[str]) -> str:
    secrets = [os.environ.get(BEARER_VARIABLE, "").strip()]
    for index, argument in enumerate(argv):
        if argument == "--token" and index + 1 < len(argv):
            secrets.append(argv[index + 1].strip())
        elif argument.startswith("--token="):
            secrets.append(argument.removeprefix("--token=").strip())
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[token]")
    return _JWT_SHAPED.sub("[token]", message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value
