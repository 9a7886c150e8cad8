"""Service configuration from command-line flags and SIGNOFF_* environment variables."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signoff.approvals.store import DEFAULT_MAX_PENDING_PER_REQUESTER
from signoff.client.tls import is_loopback
from signoff.engine.cel import BACKENDS, DEFAULT_BACKEND
from signoff.errors import ConfigError
from signoff.keys import KeySources, load
from signoff.server.convert import Limits
from signoff.server.tls import TLSFiles

log = logging.getLogger("signoff.config")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# A request too small to carry a decent check, or one past protobuf's 2 GiB, is a mistake.
MIN_MESSAGE_BYTES = 4096
MAX_MESSAGE_BYTES = 2**31 - 1


@dataclass(frozen=True)
class Config:
    address: str
    rules: Path
    backend: str
    workers: int
    max_batch_items: int
    keys: KeySources  # without a root, purposes not set on their own use the dev fallback
    log_level: str
    redis_url: str
    redis_prefix: str
    metrics_address: str  # "" = no Prometheus endpoint
    audit: bool
    audit_max_records: int
    audit_attributes: tuple[str, ...]
    audit_payload_keys: tuple[str, ...]
    processes: int = 1
    decision_cache: int = 4096
    bundle_public_key: Path | None = None  # set: --rules must be a signed bundle
    tls: TLSFiles | None = None  # None: plaintext (loopback, or --allow-plaintext)
    share_port: bool = False  # set for the processes of `--processes N`, never by hand
    max_pending_approvals: int = DEFAULT_MAX_PENDING_PER_REQUESTER
    max_message_bytes: int = Limits.max_message_bytes
    max_concurrent_rpcs: int = Limits.max_concurrent_rpcs


# Filled by add_serve_arguments: the variable each serve option reads, by its dest.
_ENV_OF: dict[str, str] = {}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    def option(*flags: str, env: str, default: str, **kwargs: Any) -> None:
        # The default is the variable's text, or `default`: argparse converts a string default
        # with `type` and reports a bad value like a bad flag.
        action = parser.add_argument(*flags, default=os.environ.get(env, default), **kwargs)
        _ENV_OF[action.dest] = env

    option(
        "--address",
        env="SIGNOFF_ADDRESS",
        default="127.0.0.1:50051",
        help="host:port to listen on (SIGNOFF_ADDRESS; default 127.0.0.1:50051)",
    )
    option(
        "--tls-cert",
        env="SIGNOFF_TLS_CERT",
        default="",
        help="PEM certificate chain to serve over TLS (SIGNOFF_TLS_CERT); re-read when it "
        "changes, so a rotated certificate needs no restart",
    )
    option(
        "--tls-key",
        env="SIGNOFF_TLS_KEY",
        default="",
        help="PEM private key of --tls-cert (SIGNOFF_TLS_KEY)",
    )
    option(
        "--tls-client-ca",
        env="SIGNOFF_TLS_CLIENT_CA",
        default="",
        help="PEM roots that callers' certificates must chain to; when set, every caller "
        "must present one (mutual TLS) (SIGNOFF_TLS_CLIENT_CA)",
    )
    option(
        "--allow-plaintext",
        choices=("on", "off"),
        env="SIGNOFF_ALLOW_PLAINTEXT",
        default="off",
        help="serve without TLS on an address beyond loopback, e.g. behind a TLS-terminating "
        "proxy (SIGNOFF_ALLOW_PLAINTEXT; default off: refused, as bearer tokens would "
        "cross the network in clear)",
    )
    option(
        "--rules",
        env="SIGNOFF_RULES",
        default="rules",
        help="policy bundle directory (SIGNOFF_RULES; default ./rules)",
    )
    option(
        "--bundle-public-key",
        env="SIGNOFF_BUNDLE_PUBLIC_KEY",
        default="",
        help="Ed25519 public key (PEM) for signed bundles (SIGNOFF_BUNDLE_PUBLIC_KEY); when "
        "set, --rules must be a bundle made by `signoff bundle sign`, and nothing unsigned is "
        "served",
    )
    option(
        "--cel-backend",
        choices=BACKENDS,
        env="SIGNOFF_CEL_BACKEND",
        default=DEFAULT_BACKEND,
        help="CEL evaluator (SIGNOFF_CEL_BACKEND; default cel-expr)",
    )
    option(
        "--workers",
        type=int,
        env="SIGNOFF_WORKERS",
        default="8",
        help="gRPC worker threads (SIGNOFF_WORKERS; default 8)",
    )
    option(
        "--processes",
        type=int,
        env="SIGNOFF_PROCESSES",
        default="1",
        help="serving processes sharing the address (SIGNOFF_PROCESSES; default 1). Each "
        "runs --workers threads; more than one uses every core, as Python threads cannot.",
    )
    option(
        "--decision-cache",
        type=int,
        env="SIGNOFF_DECISION_CACHE",
        default="4096",
        help="decisions kept per process for repeated identical requests; 0 turns the cache "
        "off (SIGNOFF_DECISION_CACHE; default 4096)",
    )
    option(
        "--max-batch-items",
        type=int,
        env="SIGNOFF_MAX_BATCH_ITEMS",
        default="1000",
        help="largest CheckBatch accepted (SIGNOFF_MAX_BATCH_ITEMS; default 1000)",
    )
    option(
        "--max-message-bytes",
        type=int,
        env="SIGNOFF_MAX_MESSAGE_BYTES",
        default=str(Limits.max_message_bytes),
        help="largest request message read, in bytes; a larger one is refused with "
        "RESOURCE_EXHAUSTED before its body is read (SIGNOFF_MAX_MESSAGE_BYTES; default "
        "1048576, 1 MiB)",
    )
    option(
        "--max-concurrent-rpcs",
        type=int,
        env="SIGNOFF_MAX_CONCURRENT_RPCS",
        default=str(Limits.max_concurrent_rpcs),
        help="calls admitted at once per process, running or waiting for a worker; more are "
        "refused with RESOURCE_EXHAUSTED; 0: no limit (SIGNOFF_MAX_CONCURRENT_RPCS; default 256)",
    )
    option(
        "--max-pending-approvals",
        type=int,
        env="SIGNOFF_MAX_PENDING_APPROVALS",
        default=str(DEFAULT_MAX_PENDING_PER_REQUESTER),
        help="approvals one principal may have waiting at once; past it, a check needing "
        "another is denied (approval_pending_limit); 0: no limit "
        "(SIGNOFF_MAX_PENDING_APPROVALS; default 20)",
    )
    option(
        "--hash-key-file",
        env="SIGNOFF_HASH_KEY_FILE",
        default="",
        help="file holding the root secret (SIGNOFF_HASH_KEY_FILE); SIGNOFF_HASH_KEY may hold "
        "it instead. The masking, audit and digest keys are derived from it (HKDF); it never "
        "leaves the service. Never put it in policy files.",
    )
    for purpose, use in (
        ("masking", "the HASH mask; pipelines get it with `signoff keys masking`"),
        ("audit", "the audit hash chain"),
        ("digest", "approval digests"),
    ):
        name = f"SIGNOFF_{purpose.upper()}_KEY"
        option(
            f"--{purpose}-key-file",
            env=f"{name}_FILE",
            default="",
            help=f"file holding the key for {use}, as hex ({name}_FILE; or the hex in {name}); "
            "set, it replaces the key derived from the root, so it rotates on its own",
        )
    option(
        "--redis-url",
        env="REDIS_URL",
        default="redis://127.0.0.1:6379/0",
        help="approval store (REDIS_URL; default redis://127.0.0.1:6379/0)",
    )
    option(
        "--redis-prefix",
        env="SIGNOFF_REDIS_PREFIX",
        default="signoff:",
        help="key prefix in Redis (SIGNOFF_REDIS_PREFIX; default 'signoff:')",
    )
    option(
        "--metrics-address",
        env="SIGNOFF_METRICS_ADDRESS",
        default="",
        help="host:port serving Prometheus metrics (SIGNOFF_METRICS_ADDRESS; default off). "
        "Traces and OTLP metrics follow the standard OTEL_* variables.",
    )
    option(
        "--audit",
        choices=("on", "off"),
        env="SIGNOFF_AUDIT",
        default="on",
        help="tamper-evident audit trail in Redis (SIGNOFF_AUDIT; default on)",
    )
    option(
        "--audit-max-records",
        env="SIGNOFF_AUDIT_MAX_RECORDS",
        default="1000000",
        type=int,
        help="records kept per audit stream (SIGNOFF_AUDIT_MAX_RECORDS; default 1000000)",
    )
    option(
        "--audit-attributes",
        env="SIGNOFF_AUDIT_ATTRIBUTES",
        default="",
        help="comma-separated attributes audit records keep, e.g. principal.tenant,"
        "resource.tenant (SIGNOFF_AUDIT_ATTRIBUTES; default none)",
    )
    option(
        "--audit-payload-keys",
        env="SIGNOFF_AUDIT_PAYLOAD_KEYS",
        default="",
        help="comma-separated payload keys audit records keep, after masking "
        "(SIGNOFF_AUDIT_PAYLOAD_KEYS; default none)",
    )
    option(
        "--log-level",
        env="SIGNOFF_LOG_LEVEL",
        default="INFO",
        choices=LOG_LEVELS,
        help="SIGNOFF_LOG_LEVEL; default INFO",
    )


def validate_plain(args: argparse.Namespace) -> None:
    """Check values argparse cannot: `choices` are not applied to defaults from the env."""
    if args.cel_backend not in BACKENDS:
        raise ConfigError(f"unknown CEL backend {args.cel_backend!r}; choose {', '.join(BACKENDS)}")
    if getattr(args, "audit", "on") not in ("on", "off"):
        raise ConfigError(f"SIGNOFF_AUDIT must be on or off, not {args.audit!r}")
    if getattr(args, "allow_plaintext", "off") not in ("on", "off"):
        raise ConfigError(
            f"SIGNOFF_ALLOW_PLAINTEXT must be on or off, not {args.allow_plaintext!r}"
        )
    if args.log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {args.log_level!r}; choose {', '.join(LOG_LEVELS)}")


def from_args(args: argparse.Namespace) -> Config:
    validate_plain(args)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.audit_max_records < 1:
        raise ConfigError("--audit-max-records must be at least 1")
    if args.max_batch_items < 1:
        raise ConfigError("--max-batch-items must be at least 1")
    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    if args.decision_cache < 0:
        raise ConfigError("--decision-cache must not be negative")
    if args.max_pending_approvals < 0:
        raise ConfigError("--max-pending-approvals must not be negative")
    if not MIN_MESSAGE_BYTES <= args.max_message_bytes <= MAX_MESSAGE_BYTES:
        raise ConfigError(
            f"--max-message-bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"
        )
    if args.max_concurrent_rpcs < 0:
        raise ConfigError("--max-concurrent-rpcs must not be negative")
    if not args.bundle_public_key and Path(args.rules).is_file():
        raise ConfigError("--rules is a file; a signed bundle needs --bundle-public-key")
    if args.processes > 1 and args.metrics_address:
        raise ConfigError(
            "--metrics-address would serve one process's metrics only; with --processes "
            "above 1, export metrics over OTLP (OTEL_METRICS_EXPORTER=otlp)"
        )
    tls = _tls(args)
    if tls is None and args.allow_plaintext != "on" and not is_loopback(args.address):
        raise ConfigError(
            f"refusing to serve {args.address} without TLS: approvers' bearer tokens would "
            "cross the network in clear; give --tls-cert and --tls-key, or --allow-plaintext "
            "on behind a proxy that terminates TLS"
        )
    return Config(
        address=args.address,
        rules=Path(args.rules),
        backend=args.cel_backend,
        workers=args.workers,
        max_batch_items=args.max_batch_items,
        keys=load(
            args.hash_key_file,
            {p: getattr(args, f"{p}_key_file", "") for p in ("masking", "audit", "digest")},
        ),
        log_level=args.log_level,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        metrics_address=args.metrics_address,
        audit=args.audit == "on",
        audit_max_records=args.audit_max_records,
        audit_attributes=tuple(a for a in args.audit_attributes.split(",") if a.strip()),
        audit_payload_keys=tuple(k for k in args.audit_payload_keys.split(",") if k.strip()),
        processes=args.processes,
        decision_cache=args.decision_cache,
        bundle_public_key=Path(args.bundle_public_key) if args.bundle_public_key else None,
        share_port=os.environ.get(SHARE_PORT_ENV) == "1",
        tls=tls,
        max_pending_approvals=args.max_pending_approvals,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
    )


def _tls(args: argparse.Namespace) -> TLSFiles | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if not args.tls_cert:
        if args.tls_client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    return TLSFiles(
        cert=Path(args.tls_cert),
        key=Path(args.tls_key),
        client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
    )


# How `--processes N` hands its configuration to the processes it starts: every serve option
# has an environment variable, so the children read exactly what the parent resolved.
SHARE_PORT_ENV = "SIGNOFF_SHARE_PORT"


def child_environment(args: argparse.Namespace, address: str) -> dict[str, str]:
    """The environment of one of the `--processes` children: these options, on `address`."""
    env = dict(os.environ)
    for dest, name in _ENV_OF.items():
        env[name] = str(getattr(args, dest))
    env.update({"SIGNOFF_ADDRESS": address, "SIGNOFF_PROCESSES": "1", SHARE_PORT_ENV: "1"})
    return env
