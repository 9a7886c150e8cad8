"""What every client command shares: the service address, from a flag or SIGNOFF_ADDRESS."""

from __future__ import annotations

import os
from collections.abc import Mapping

# The variable `signoff serve` listens on, read by every client command too, so one
# environment serves and asks alike.
ADDRESS_VARIABLE = "SIGNOFF_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_HELP = f"service address (default: ${ADDRESS_VARIABLE}, else {DEFAULT_ADDRESS})"
# A server listening on every interface is asked on this machine's loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104  # hosts to replace


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    """The address a client command connects to without --addr."""
    address = environ.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        return DEFAULT_ADDRESS
    host, sep, port = address.rpartition(":")
    if sep and host in _WILDCARDS:
        return f"{_WILDCARDS[host]}:{port}"
    return address
