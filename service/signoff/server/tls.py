"""TLS for the server: certificate files checked at start, re-read when they rotate."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from signoff.errors import ConfigError

log = logging.getLogger("signoff.server.tls")
# A certificate this close to its end is still served, with a warning, so a missed rotation
# is heard of before callers start failing.
EXPIRY_WARNING = dt.timedelta(days=14)


@dataclass(frozen=True)
class TLSFiles:
    """The server's certificate chain and key (PEM), and the roots its callers' certificates
    must chain to; with `client_ca` every caller must present a certificate (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


Stamp = tuple[tuple[int, int, int, int, int], ...]


@dataclass(frozen=True)
class _Loaded:
    stamp: Stamp
    key: bytes
    chain: bytes
    client_ca: bytes | None
    not_after: dt.datetime


def _stamp(files: TLSFiles) -> Stamp:
    stamps = []
    for path in (files.cert, files.key, files.client_ca):
        if path is not None:
            st = os.stat(path)
            # ctime too: fixing a file's owner or mode after a rotation changes nothing else.
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(stamps)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None


def _load(files: TLSFiles, now: dt.datetime) -> _Loaded:
    """Read and check the files together, so a mismatched key or an expired certificate is a
    clear error here rather than a handshake failure every caller sees."""
    stamp = _stamp(files)
    chain = _read(files.cert, "certificate")
    key_pem = _read(files.key, "key")
    client_ca = _read(files.client_ca, "client CA") if files.client_ca else None
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise ConfigError(f"the TLS certificate {files.cert} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"the TLS key {files.key} is not an unencrypted PEM private key"
        ) from None
    leaf = certs[0]
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, fmt) != leaf.public_key().public_bytes(enc, fmt):
        raise ConfigError(f"the TLS key {files.key} does not belong to {files.cert}")
    ends = f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(f"the TLS certificate {files.cert} expired at {ends}")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"the TLS certificate {files.cert} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        )
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise ConfigError(
                f"the TLS client CA {files.client_ca} is not a PEM certificate"
            ) from None
    if leaf.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning("the TLS certificate %s expires at %s", files.cert, ends)
    return _Loaded(stamp, key_pem, chain, client_ca, leaf.not_valid_after_utc)


class ServerTLS:
    """Server credentials whose certificate follows the files.

    gRPC asks for the configuration at each new handshake; the files are looked at (a stat
    each) and re-read when they changed. A changed set that does not check out (half-written,
    key and certificate from different rotations) is logged and the last good one kept, so a
    rotation can never take the listener down. Connections already open keep their session.
    """

    def __init__(self, files: TLSFiles, *, now: dt.datetime | None = None) -> None:
        self.files = files
        self._lock = threading.Lock()
        try:
            self._current = _load(files, now or dt.datetime.now(dt.UTC))
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS file {exc.filename}: {exc.strerror}") from None
        # A set of files that did not check out, not tried again until one of them changes.
        self._refused: Stamp | None = None
        self._unreadable_warned = float("-inf")

    @property
    def mutual(self) -> bool:
        """Whether every caller must present a certificate."""
        return self.files.client_ca is not None

    @property
    def mode(self) -> str:
        return "mutual TLS" if self.mutual else "TLS"

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._current),
            # gRPC documents None as "keep the current one"; grpc-stubs does not allow it.
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    @staticmethod
    def _configuration(loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(loaded.key, loaded.chain)], root_certificates=loaded.client_ca
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs inside gRPC's handshake: it must answer, never raise.
        try:
            return self.refresh()
        except Exception:
            log.exception("checking the TLS files for rotation failed; keeping the current ones")
            return None

    def refresh(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed and check out, else None (keep)."""
        with self._lock:
            try:
                stamp = _stamp(self.files)
                if stamp == self._current.stamp or stamp == self._refused:
                    return None
                loaded = _load(self.files, dt.datetime.now(dt.UTC))
            except OSError as exc:
                # A file missing mid-rotation (unreadable ones are refusals, remembered by a
                # stamp whose ctime moves with any fix): each handshake looks again, with the
                # warning kept to one a minute.
                if time.monotonic() - self._unreadable_warned > 60.0:
                    self._unreadable_warned = time.monotonic()
                    log.warning(
                        "TLS file %s unreadable (%s); keeping the current ones",
                        exc.filename,
                        exc.strerror,
                    )
                return None
            except ConfigError as exc:
                log.warning("TLS files changed but were refused: %s; keeping the current ones", exc)
                self._refused = stamp
                return None
            self._current, self._refused = loaded, None
            log.info(
                "TLS certificate %s reloaded (valid until %s)",
                self.files.cert,
                f"{loaded.not_after:%Y-%m-%d %H:%M}Z",
            )
            return self._configuration(loaded)
