"""`signoff test`: run the policy suites (*_test.yaml) beside the policies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signoff.client.cmd.settings import command
from signoff.cmd import options
from signoff.engine.cel import BACKENDS
from signoff.policytest.runner import run_suites

BOTH = "both"


TEST_HELP = "run the policy suites (*_test.yaml) beside the policies"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `test` to the `signoff` command line."""
    test = command(commands, "test", run_test, help=TEST_HELP)
    add_test_arguments(test)


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `RULES [--junit FILE] [--backend ...]` to `parser` (e.g. a `test` subcommand)."""
    options.rules_dir(parser, "; its *_test.yaml files are the suites")
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
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="report the rules no case exercised and the derived roles no case made true",
    )
    parser.add_argument(
        "--min-coverage",
        metavar="PCT",
        type=_percent,
        default=None,
        help="fail (exit 1) when under PCT%% of the rules are exercised; implies --coverage",
    )


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is between 0 and 100, not {text}")
    return value


def run_test(args: argparse.Namespace) -> int:
    """Run the suites as `args` asks; the exit code: 0 passed, 1 failed cases (or coverage
    under --min-coverage), 2 errors."""
    backends = BACKENDS if args.backend == BOTH else (args.backend,)
    return run_suites(
        args.rules_dir,
        junit=args.junit,
        backends=backends,
        out=sys.stdout,
        coverage=args.coverage,
        min_coverage=args.min_coverage,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m signoff.policytest RULES ...`: the same as `signoff test`."""
    parser = argparse.ArgumentParser(
        prog="signoff test", description="Run the policy test suites of a bundle."
    )
    add_test_arguments(parser)
    return run_test(parser.parse_args(argv))
