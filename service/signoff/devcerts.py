"""Development TLS certificates (a CA, a server and a client certificate); NOT for production."""

# A real deployment gets its certificates from its PKI (cert-manager, Vault, an internal CA).
# These stand in for one on a laptop or in CI: one throwaway CA signs a server certificate for
# the loopback names and a client certificate for mutual TLS. The CA's key is written too, so
# anyone holding the directory can mint certificates that this CA's users trust.

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signoff.errors import ConfigError
from signoff.keyfiles import create_exclusive, private_key_pem

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCerts:
    """The files `create_dev_certs` wrote."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def create_dev_certs(
    directory: Path,
    *,
    hosts: Sequence[str] = LOOPBACK_NAMES,
    client_name: str = "signoff-dev-client",
    valid_for: dt.timedelta = dt.timedelta(days=30),
    now: dt.datetime | None = None,
) -> DevCerts:
    """Write a new CA and the server and client certificates it signs into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + valid_for
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signoff dev CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = DevCerts(
        ca=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    taken = [path.name for path in vars(files).values() if os.path.lexists(path)]
    if taken:
        raise ConfigError(f"{directory} already holds {', '.join(taken)}; choose another directory")
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.ca_key, private_key_pem(ca_key), 0o600)
    server_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            server_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            server_names.append(x509.DNSName(host))
    for cert_path, key_path, name, names, usage in (
        (
            files.server_cert,
            files.server_key,
            hosts[0],
            server_names,
            ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        (
            files.client_cert,
            files.client_key,
            client_name,
            [x509.DNSName(client_name)],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, ca.subject, key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, private_key_pem(key), 0o600)
    return files


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Written aside and renamed in, so a server watching the files never reads half of one;
    # the aside file is created new, never through a file or link planted there.
    tmp = path.with_name(f".{path.name}.tmp")
    create_exclusive(tmp, data, mode)
    os.replace(tmp, path)
