"""The `signoff test` command: argument definitions and the entry point the CLI mounts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signoff.engine.cel import BACKENDS
from signoff.policytest.runner import run_suites

BOTH = "both"


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `RULES [--junit FILE] [--backend ...]` to `parser` (e.g. a `test` subcommand)."""
    parser.add_argument(
        "rules_dir",
        metavar="RULES",
        nargs="?",
        type=Path,
        default=Path("rules"),
        help="policy bundle directory; its *_test.yaml files are the suites (default: rules)",
    )
    parser.add_argument(
        "--junit",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write a JUnit XML report to FILE",
    )
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, BOTH),
        default=BOTH,
        help="CEL backend(s) to run every case on (default: both, which must agree)",
    )


def run_test(args: argparse.Namespace) -> int:
    """Run the suites as `args` asks; the exit code: 0 passed, 1 failed cases, 2 errors."""
    backends = BACKENDS if args.backend == BOTH else (args.backend,)
    return run_suites(args.rules_dir, junit=args.junit, backends=backends, out=sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """`python -m signoff.policytest RULES ...`: the same as `signoff test`."""
    parser = argparse.ArgumentParser(
        prog="signoff test", description="Run the policy test suites of a bundle."
    )
    add_test_arguments(parser)
    return run_test(parser.parse_args(argv))
