"""The `signoff` command: serve, check, test, lint, replay, approvals, policy, audit, notify,
bundle."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from signoff.cmd import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signoff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from signoff.client.pipes import quiet_on_closed_stdout

    args = build_parser().parse_args(argv)
    code: int = quiet_on_closed_stdout(lambda: int(args.run(args)))
    return code


if __name__ == "__main__":
    sys.exit(main())
