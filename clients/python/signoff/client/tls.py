"""TLS for the client: which roots to trust and an optional client certificate."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

from signoff.client.errors import InvalidInput


@dataclass(frozen=True)
class TLS:
    """How to reach a signoff service over TLS.

    `ca`: PEM roots to trust; None trusts the system's roots. `cert` and `key`: a client
    certificate, for a service that requires one (mutual TLS); both or neither.
    `server_name`: the name to verify the service's certificate against, when it differs from
    the host in the target (e.g. connecting to an IP address).
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidInput("a client certificate needs both cert and key")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; files are read now, so a missing one fails here."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA") if self.ca else None,
            private_key=_read(self.key, "client key") if self.key else None,
            certificate_chain=_read(self.cert, "client certificate") if self.cert else None,
        )

    def channel(self, target: str) -> grpc.Channel:
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(target, self.credentials(), options=options)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InvalidInput(f"cannot read the TLS {what} {path}: {err.strerror}") from None
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"the TLS {what} {path} is not PEM")
    return data


def is_loopback(target: str) -> bool:
    """Whether a gRPC target names this machine only, where plaintext never leaves the host.

    Anything it cannot read for certain counts as remote: a list of addresses (gRPC tries
    each in turn), a name resolved elsewhere, a bracket not closing the host.
    """
    if "," in target:
        return False
    if target.startswith("unix:") or target.startswith("unix-abstract:"):
        return True
    host = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else "x"
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
        host = host[1:end]
    elif host.count(":") == 1:
        host, port = host.split(":")
        if not port.isdigit():
            return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
