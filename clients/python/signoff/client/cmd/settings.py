"""The one way every `signoff` command reads its configuration: flag, else environment, else
default; and the options that several commands share."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from signoff.client.tls import TLS

Parser = argparse.ArgumentParser | argparse._ArgumentGroup
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace], int]
# The variable `signoff serve` listens on, read by every client command too, so one
# environment serves and asks alike.
ADDRESS_VARIABLE = "SIGNOFF_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_HELP = f"service address (default: ${ADDRESS_VARIABLE}, else {DEFAULT_ADDRESS})"
# A server listening on every interface is asked on this machine's loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104  # hosts to replace
# Kept apart from the server's SIGNOFF_TLS_* so one environment can hold both.
CA_VARIABLE = "SIGNOFF_CLIENT_TLS_CA"
CERT_VARIABLE = "SIGNOFF_CLIENT_TLS_CERT"
KEY_VARIABLE = "SIGNOFF_CLIENT_TLS_KEY"


def command(
    commands: Commands, name: str, run: Run | None, *, help: str, **details: Any
) -> argparse.ArgumentParser:
    """Add the subcommand `name`, which runs `run(args)` (None: it has subcommands of its own);
    the one way every command registers. `details` go to argparse (description, epilog...)."""
    parser = commands.add_parser(name, help=help, **details)
    if run is not None:
        parser.set_defaults(run=run)
    return parser


@dataclass(frozen=True)
class Setting:
    """One option: its flag, the variable that stands in for an unset flag, and the default.

    `aliases` are older spellings of the flag, still accepted but hidden from help. `from_env`
    turns the variable's text into the flag's text (e.g. a wildcard host into loopback).
    """

    flag: str
    env: str
    default: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    from_env: Callable[[str], str] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def text(self, environ: Mapping[str, str]) -> str:
        """The flag's text when it is not given: the variable's, else the default."""
        raw = environ.get(self.env)
        if raw is None:
            return self.default
        return raw if self.from_env is None else self.from_env(raw)


def add_settings(
    parser: Parser,
    settings: Iterable[Setting],
    *,
    environ: Mapping[str, str] | None = None,
    suppress: bool = False,
) -> None:
    """Declare `settings` on `parser`. Unset, each takes its variable's text, else its default;
    argparse converts that text with `type`, so a bad variable is reported like a bad flag.

    `suppress`: for options repeated below a subcommand, whose default must not overwrite the
    same option given above it.
    """
    source = os.environ if environ is None else environ
    for setting in settings:
        default = argparse.SUPPRESS if suppress else setting.text(source)
        extra: dict[str, Any] = {}
        if setting.type is not None:
            extra["type"] = setting.type
        if setting.choices is not None:
            extra["choices"] = setting.choices
        if setting.metavar is not None:
            extra["metavar"] = setting.metavar
        parser.add_argument(setting.flag, default=default, help=setting.help, **extra)
        for alias in setting.aliases:
            # Deprecated spellings keep old scripts working; SUPPRESS keeps them off --help
            # and keeps their absence from overwriting the flag's default.
            parser.add_argument(
                alias, dest=setting.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **extra
            )


def client_target(text: str) -> str:
    """The address a client connects to for $SIGNOFF_ADDRESS as a server would read it."""
    address = text.strip()
    if not address:
        return DEFAULT_ADDRESS
    host, sep, port = address.rpartition(":")
    if sep and host in _WILDCARDS:
        return f"{_WILDCARDS[host]}:{port}"
    return address


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    """The address a client command connects to without --address."""
    return CLIENT_ADDRESS.text(environ)


CLIENT_ADDRESS = Setting(
    "--address",
    ADDRESS_VARIABLE,
    DEFAULT_ADDRESS,
    ADDRESS_HELP,
    aliases=("--addr",),
    from_env=client_target,
)
CLIENT_TLS = (
    Setting(
        "--tls-ca",
        CA_VARIABLE,
        "",
        f"trust these roots for the service's certificate (${CA_VARIABLE})",
        metavar="PEM",
    ),
    Setting(
        "--tls-cert",
        CERT_VARIABLE,
        "",
        f"client certificate, for a service requiring one (${CERT_VARIABLE})",
        metavar="PEM",
    ),
    Setting(
        "--tls-key",
        KEY_VARIABLE,
        "",
        f"the client certificate's private key (${KEY_VARIABLE})",
        metavar="PEM",
    ),
)


def add_tls_arguments(parser: Parser, *, suppress: bool = False) -> None:
    """The client commands' TLS flags; each falls back to its SIGNOFF_CLIENT_TLS_* variable."""
    parser.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="connect over TLS, trusting the system's roots (implied by the other --tls-* flags)",
    )
    add_settings(parser, CLIENT_TLS, suppress=suppress)
    parser.add_argument(
        "--tls-server-name",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="verify the service's certificate for NAME instead of the target's host",
    )


def tls_from_args(args: argparse.Namespace) -> TLS | None:
    """The TLS settings from `add_tls_arguments` flags; None: plaintext."""

    def path(dest: str) -> Path | None:
        given = getattr(args, dest, "")
        return Path(given) if given else None

    ca, cert, key = path("tls_ca"), path("tls_cert"), path("tls_key")
    server_name: str | None = getattr(args, "tls_server_name", None)
    if not (getattr(args, "tls", False) or ca or cert or key or server_name):
        return None
    return TLS(ca=ca, cert=cert, key=key, server_name=server_name)
