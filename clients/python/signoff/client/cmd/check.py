"""The `check` command: ask a signoff service for one decision from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import duration_pb2

from signoff.client.client import SignoffClient
from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import (
    CLIENT_ADDRESS,
    add_settings,
    add_tls_arguments,
    tls_from_args,
)
from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.client.pipes import quiet_on_closed_stdout
from signoff.client.types import (
    CheckItem,
    Context,
    Decision,
    Field,
    Principal,
    Resource,
    Verdict,
    operator_name,
)
from signoff.v1 import signoff_pb2

__all__ = [
    "EXIT_CODES",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "add_check_arguments",
    "main",
    "parse_assignment",
    "parse_field",
    "register",
    "render",
    "run_check",
]

EXIT_CODES = {
    Verdict.ALLOW: exitcodes.OK,
    Verdict.DENY: exitcodes.REFUSED,
    Verdict.MASK: exitcodes.MASK,
    Verdict.REQUIRE_APPROVAL: exitcodes.REQUIRE_APPROVAL,
}
EXIT_USAGE = exitcodes.USAGE
EXIT_UNAVAILABLE = exitcodes.UNAVAILABLE

_ASSIGNMENT_HELP = "an attribute; VALUE is parsed as JSON, else taken as a string; repeatable"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `check` with `argv` (default: sys.argv[1:]) and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="signoff-check",
        description="Ask a signoff service whether an action may go ahead.",
        epilog="Exit codes: 0 ALLOW, 1 DENY, 3 MASK, 4 REQUIRE_APPROVAL, 2 usage error,"
        " 5 service unreachable or RPC error.",
    )
    add_check_arguments(parser)
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Accept `signoff-check check ...` too, so the command reads the same as `signoff check`.
    if arguments[:1] == ["check"]:
        arguments = arguments[1:]
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:
        # argparse exits on --help (0) and on usage errors (2); return instead of exiting.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    return quiet_on_closed_stdout(lambda: run_check(args))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check` to a command line's subcommands; `args.run(args)` runs it."""
    check = commands.add_parser("check", help="ask a running signoff for a verdict")
    add_check_arguments(check)
    check.set_defaults(run=run_check)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `check` options to `parser`, so another CLI can mount the same subcommand."""
    where = parser.add_argument_group("service")
    add_settings(where, [CLIENT_ADDRESS])
    where.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait (default: %(default)s)"
    )
    add_tls_arguments(where)
    who = parser.add_argument_group("principal")
    who.add_argument("--principal", required=True, metavar="ID", help="the caller's id")
    who.add_argument("--kind", choices=("human", "agent", "service"), default="human")
    who.add_argument("--role", action="append", dest="roles", metavar="R", help="repeatable")
    who.add_argument(
        "--attr",
        action="append",
        dest="attrs",
        type=parse_assignment,
        metavar="K=JSON",
        help=_ASSIGNMENT_HELP,
    )
    what = parser.add_argument_group("action and resource")
    what.add_argument("--action", required=True, metavar="A")
    what.add_argument("--resource-kind", required=True, metavar="K")
    what.add_argument("--resource-id", default="", metavar="ID")
    what.add_argument(
        "--resource-attr",
        action="append",
        dest="resource_attrs",
        type=parse_assignment,
        metavar="K=JSON",
        help=_ASSIGNMENT_HELP,
    )
    what.add_argument(
        "--field",
        action="append",
        dest="fields",
        type=parse_field,
        metavar="PATH[:TAG,...]",
        help="a field the action touches, with its data tags; repeatable",
    )
    what.add_argument("--payload", type=_parse_payload, metavar="JSON", help="a JSON object")
    what.add_argument("--approval-id", default="", metavar="ID")
    context = parser.add_argument_group("context")
    context.add_argument("--env", default="", metavar="ENV", help="e.g. prod")
    context.add_argument("--source-ip", default="", metavar="IP")
    context.add_argument(
        "--context-attr",
        action="append",
        dest="context_attrs",
        type=parse_assignment,
        metavar="K=JSON",
        help=_ASSIGNMENT_HELP,
    )
    parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also show each candidate rule's outcome and the rules that decided",
    )


def run_check(args: argparse.Namespace, *, channel: grpc.Channel | None = None) -> int:
    """Run `check` for arguments parsed with `add_check_arguments`; returns the exit code.

    `channel`, when given, is used instead of opening one to `--address` (and is left open).
    """
    try:
        item = _item(args)
        tls = None if channel is not None else tls_from_args(args)
        client = SignoffClient(args.address, timeout=args.timeout, channel=channel, tls=tls)
    except InvalidInput as err:
        print(f"signoff check: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            decision = client.check_item(item)
    except (SignoffRpcError, ProtocolError) as err:
        print(f"signoff check: {args.address}: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.as_json:
        print(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render(decision))
    return EXIT_CODES[decision.verdict]


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse K=JSON: the value is JSON when it parses as JSON, else the plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        value = raw
    return key, value


def parse_field(text: str) -> Field:
    """Parse PATH[:TAG,...]; the path ends at the first ':' and empty tags are dropped."""
    path, _, tags = text.partition(":")
    if not path:
        raise argparse.ArgumentTypeError(f"expected PATH[:TAG,...], got {text!r}")
    return Field(path, tuple(tag for tag in tags.split(",") if tag))


def render(decision: Decision) -> str:
    """Return the human-readable report of a decision."""
    lines = [f"verdict:   {decision.verdict.name}"]
    if decision.reasons:
        lines.append("reasons:")
        lines.extend(f"  - {reason}" for reason in decision.reasons)
    lines.append(f"matched:   {', '.join(decision.matched_rules) or '(no rule)'}")
    if decision.errored_rules:
        lines.append(f"errored:   {', '.join(decision.errored_rules)}")
    if decision.masking_plan.fields:
        lines.append("masking:")
        lines.extend(f"  {_describe_mask(entry)}" for entry in decision.masking_plan.fields)
    if decision.approval is not None:
        lines.append("approval:")
        lines.extend(f"  {line}" for line in _describe_approval(decision.approval))
    if decision.approval_id:
        lines.append(f"approval id: {decision.approval_id}")
    lines.append(f"decision:  {decision.decision_id}")
    lines.append(f"revision:  {decision.policy_revision}")
    if decision.explanation is not None:
        lines += _describe_explanation(decision.explanation)
    return "\n".join(lines)


_OUTCOME_TEXT = {
    signoff_pb2.RULE_OUTCOME_MATCHED: "matched",
    signoff_pb2.RULE_OUTCOME_NOT_MATCHED: "no match",
    signoff_pb2.RULE_OUTCOME_ROLE_NOT_HELD: "role not held",
    signoff_pb2.RULE_OUTCOME_ERROR: "ERROR",
}


def _describe_explanation(explanation: signoff_pb2.Explanation) -> list[str]:
    decided = ", ".join(explanation.decided_by) or "no rule applied (default deny)"
    lines = ["explanation:", f"  decided by: {decided}"]
    for r in explanation.rules:
        effect = signoff_pb2.Verdict.Name(r.effect).removeprefix("VERDICT_").lower()
        mark = "*" if r.rule_id in explanation.decided_by else " "
        note = "  (shadow: audit only)" if r.shadow else ""
        note = note or ("" if r.counted else "  (not counted: the verdict was already settled)")
        lines.append(f"  {mark} {r.rule_id} [{effect}]: {_OUTCOME_TEXT.get(r.outcome, '?')}{note}")
        if r.roles:
            lines.append(f"        roles: {', '.join(r.roles)}")
        if r.condition:
            lines.append(f"        when:  {' '.join(r.condition.split())}")
        if r.error:
            lines.append(f"        error: {r.error}")
    return lines


def _item(args: argparse.Namespace) -> CheckItem:
    return CheckItem(
        principal=Principal(
            args.principal,
            kind=args.kind,
            roles=tuple(args.roles or ()),
            attributes=_assignments("--attr", args.attrs),
        ),
        action=args.action,
        resource=Resource(
            args.resource_kind,
            id=args.resource_id,
            attributes=_assignments("--resource-attr", args.resource_attrs),
            fields=tuple(args.fields or ()),
        ),
        context=Context(
            environment=args.env,
            source_ip=args.source_ip,
            attributes=_assignments("--context-attr", args.context_attrs),
        ),
        payload=args.payload,
        approval_id=args.approval_id,
        explain=args.explain,
    )


def _assignments(option: str, pairs: list[tuple[str, Any]] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in pairs or ():
        if key in values:
            # Silently keeping one of two values would check something the user did not ask.
            raise InvalidInput(f"{option} gives {key!r} more than once")
        values[key] = value
    return values


def _parse_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--payload is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--payload must be a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such a value is taken as a plain string instead.
    raise ValueError(f"{name} is not JSON")


def _describe_mask(entry: signoff_pb2.FieldMask) -> str:
    text = f"{entry.path} → {operator_name(entry.operator)}"
    if entry.operator == signoff_pb2.MASK_OPERATOR_PARTIAL:
        text += f" (keep first {entry.keep_first}, last {entry.keep_last})"
    elif entry.operator == signoff_pb2.MASK_OPERATOR_HASH:
        text += f" (key {entry.key_id})"
    if entry.rule_ids:
        text += f"  [{', '.join(entry.rule_ids)}]"
    return text


def duration_text(duration: duration_pb2.Duration) -> str:
    """A duration exactly, as policies write one: "4h", "15m", "1h30m", "90s" or "1.5s".

    Not approvals.format_duration, which rounds down for relative times ("in 3h59m").
    """
    seconds, nanos = duration.seconds, duration.nanos
    if nanos or seconds < 0:
        return duration.ToJsonString()  # sub-second (or nonsense) values: exactly as given
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _describe_approval(approval: signoff_pb2.ApprovalRequirement) -> list[str]:
    lines = [f"quorum {approval.quorum}"]
    # Every counted approver must satisfy every set; within a set, any role or group will do.
    for approvers in approval.approvers:
        options = [f"role {role}" for role in approvers.roles]
        options += [f"group {group}" for group in approvers.groups]
        lines.append(f"each approver needs: {' or '.join(options)}")
    lines.append(f"pending ttl {duration_text(approval.pending_ttl)}")
    lines.append(f"grant ttl {duration_text(approval.grant_ttl)}")
    if approval.rule_ids:
        lines.append(f"rules {', '.join(approval.rule_ids)}")
    return lines
