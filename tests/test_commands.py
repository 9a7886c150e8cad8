"""The command line's shape: argparse only in the command modules, one flag name per option."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from signoff.cli import build_parser
from signoff.notify.config import NotifierConfig

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = (ROOT / "service" / "signoff", ROOT / "clients" / "python" / "signoff" / "client")
# The entry point only assembles the command modules' parsers.
ENTRY_POINTS = {ROOT / "service" / "signoff" / "cli.py"}


def argparse_users(roots: tuple[Path, ...]) -> list[str]:
    """Modules outside a `cmd/` package that import argparse."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "cmd" in path.relative_to(root).parts or path in ENTRY_POINTS:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if "argparse" in names:
                    found.append(str(path.relative_to(root.parent)))
    return found


def test_no_library_module_declares_command_line_options() -> None:
    assert argparse_users(LIBRARIES) == []


@pytest.mark.parametrize("flag", ["--address", "--addr"])
@pytest.mark.parametrize(
    "command",
    [
        ["check", "--principal", "p", "--action", "a", "--resource-kind", "k"],
        ["approvals", "list"],
        ["policy", "status"],
    ],
)
def test_client_commands_take_address_and_still_the_old_addr(command: list[str], flag: str) -> None:
    args = build_parser().parse_args([*command, flag, "127.0.0.1:1"])

    assert args.address == "127.0.0.1:1"


@pytest.mark.parametrize("command", ["check", "approvals", "policy"])
def test_deprecated_addr_is_hidden_from_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    shown = capsys.readouterr().out

    assert "--address" in shown
    assert "--addr " not in shown
    assert "--addr," not in shown


def test_serve_and_check_agree_on_the_address_flag() -> None:
    served = build_parser().parse_args(["serve", "--address", "127.0.0.1:7"])

    assert served.address == "127.0.0.1:7"


def test_notifier_reads_the_events_stream_under_the_configured_prefix() -> None:
    config = NotifierConfig.from_env({"SIGNOFF_REDIS_PREFIX": "tenant-a:"})

    assert config.stream == "tenant-a:events"


def test_an_explicit_events_stream_still_wins_over_the_prefix() -> None:
    env = {"SIGNOFF_REDIS_PREFIX": "tenant-a:", "SIGNOFF_EVENTS_STREAM": "elsewhere"}

    assert NotifierConfig.from_env(env).stream == "elsewhere"
