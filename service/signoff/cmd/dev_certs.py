"""`signoff dev-certs`: a throwaway CA and TLS certificates for development."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from signoff.client.cmd import exitcodes
from signoff.client.cmd.settings import command
from signoff.devcerts import LOOPBACK_NAMES, create_dev_certs
from signoff.errors import ConfigError

DEV_CERTS_HELP = "write a throwaway CA and server/client TLS certificates (development only)"


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    certs = command(commands, "dev-certs", run_dev_certs, help=DEV_CERTS_HELP)
    certs.add_argument("directory", type=Path, help="where to write the PEM files")
    certs.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help="a name or address the server certificate is for; repeatable "
        f"(default: {', '.join(LOOPBACK_NAMES)})",
    )
    certs.add_argument(
        "--days", type=int, default=30, help="validity in days (default: %(default)s)"
    )


def run_dev_certs(args: argparse.Namespace) -> int:
    try:
        if args.days < 1:
            raise ConfigError("--days must be at least 1")
        files = create_dev_certs(
            args.directory,
            hosts=tuple(args.hosts or LOOPBACK_NAMES),
            valid_for=dt.timedelta(days=args.days),
        )
    except (ConfigError, OSError) as exc:
        print(f"signoff dev-certs: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    print(
        "development certificates written (do not use in production):\n"
        f"  serve:   signoff serve --tls-cert {files.server_cert} --tls-key {files.server_key}"
        f" [--tls-client-ca {files.ca}]\n"
        f"  clients: --tls-ca {files.ca} [--tls-cert {files.client_cert}"
        f" --tls-key {files.client_key}]"
    )
    return exitcodes.OK
