"""`signoff lint`: report the problems of a policy bundle."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from signoff.client.cmd.settings import command
from signoff.cmd import options
from signoff.policy.lint import report

LINT_HELP = "find problems in a policy bundle: load errors, dead rules, backend differences"
LINT_ABOUT = (
    "Report every load problem (errors) plus rules that can never fire, unused "
    "variables and derived roles, and CEL whose meaning differs between the two backends "
    "(warnings). Exit 0: no errors (and no warnings with --strict); 1: findings; "
    "2: usage error."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `lint RULES [--json] [--strict]` on the `signoff` CLI; `args.run(args)`."""
    parser = command(commands, "lint", run_lint, help=LINT_HELP, description=LINT_ABOUT)
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.rules_dir(parser)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too, not only on errors"
    )


def run_lint(args: argparse.Namespace) -> int:
    return report(args.rules_dir, as_json=args.json, strict=args.strict)


def main(argv: Sequence[str] | None = None) -> int:
    """`signoff lint` on its own parser: the same options and exit codes."""
    parser = argparse.ArgumentParser(prog="signoff lint", description="Lint a policy bundle.")
    add_arguments(parser)
    return run_lint(parser.parse_args(argv))
