"""`signoff replay`: decide recorded decisions again with a new bundle and report changes."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import command
from signoff.engine.cel import BACKENDS, DEFAULT_BACKEND
from signoff.errors import PolicyError
from signoff.replay import (
    DEFAULT_EXAMPLES,
    Budget,
    DecisionFile,
    MalformedRecord,
    ReplayInputError,
    replay,
    report_json,
    write_text,
)

OK, OVER_BUDGET, FAILED = exitcodes.OK, exitcodes.REFUSED, exitcodes.USAGE


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


REPLAY_HELP = "decide recorded decisions again with a new bundle and report what changes"
REPLAY_ABOUT = (
    "Read decision records (the JSON lines of `signoff audit export`), decide "
    "each again with the bundle in --rules at its recorded time, and report the verdicts "
    "and masking plans that change. A decision whose rules read an attribute the record "
    "does not keep is reported as not replayable, never guessed. Exit 0: within budget; "
    "1: over budget; 2: unusable input or a bundle that does not load."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `replay --rules DIR --decisions FILE` on the `signoff` CLI; `args.run(args)`."""
    parser = command(commands, "replay", run_replay, help=REPLAY_HELP, description=REPLAY_ABOUT)
    parser.add_argument("--rules", metavar="DIR", type=Path, required=True, help="new bundle")
    parser.add_argument(
        "--decisions",
        metavar="FILE",
        required=True,
        help="audit export (JSON lines); '-' reads standard input",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help=f"CEL backend to decide with (default {DEFAULT_BACKEND}, as `serve`)",
    )
    parser.add_argument(
        "--max-changes",
        metavar="N",
        type=_count,
        default=None,
        help="fail (exit 1) when more decisions change; default 0 unless --max-change-rate",
    )
    parser.add_argument(
        "--max-change-rate",
        metavar="R",
        type=_rate,
        default=None,
        help="fail when changed/replayed exceeds R (0 to 1)",
    )
    parser.add_argument(
        "--max-unreplayable",
        metavar="N",
        type=_count,
        default=None,
        help="fail when more decisions are not replayable (default: no limit)",
    )
    parser.add_argument(
        "--examples",
        metavar="N",
        type=_count,
        default=DEFAULT_EXAMPLES,
        help=f"examples per transition (default {DEFAULT_EXAMPLES})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")


def run_replay(args: argparse.Namespace) -> int:
    """`signoff replay`: 0 within budget, 1 over budget, 2 unusable input or bundle."""
    from signoff.policy.loader import load_bundle

    budget = Budget(args.max_changes, args.max_change_rate, args.max_unreplayable)
    name = str(args.decisions)
    with ExitStack() as stack:
        try:
            stream: IO[bytes] = (
                sys.stdin.buffer if name == "-" else stack.enter_context(Path(name).open("rb"))
            )
        except OSError as exc:
            return _fail(f"cannot read {name}: {exc.strerror}")
        try:
            bundle = load_bundle(args.rules, backend=args.backend)
        except PolicyError as exc:
            print(
                f"signoff replay: error: policy bundle has {len(exc.problems)} problem(s)",
                file=sys.stderr,
            )
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return FAILED
        source = DecisionFile(stream, name)
        try:
            report = replay(source, bundle, examples=args.examples)
        except MalformedRecord as exc:
            return _fail(f"{name}:{source.line}: {exc.message}")
        except ReplayInputError as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"cannot read {name}: {exc.strerror}")
    exceeded = budget.exceeded(report)
    code = OVER_BUDGET if exceeded else OK
    if args.json:
        doc = report_json(report, budget, exceeded, code, decisions=name, rules=str(args.rules))
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        write_text(report, exceeded, sys.stdout, decisions=name, rules=str(args.rules))
    return code


def _fail(message: str) -> int:
    print(f"signoff replay: error: {message}", file=sys.stderr)
    return FAILED
