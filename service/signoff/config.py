"""Service configuration from command-line flags and SIGNOFF_* environment variables."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from signoff.engine.cel import BACKENDS, DEFAULT_BACKEND
from signoff.errors import ConfigError

log = logging.getLogger("signoff.config")
MIN_HASH_KEY_BYTES = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Config:
    address: str
    rules: Path
    backend: str
    workers: int
    max_batch_items: int
    hash_key: bytes | None  # None: not configured (development fallback applies)
    log_level: str
    redis_url: str
    redis_prefix: str
    metrics_address: str  # "" = no Prometheus endpoint
    audit: bool
    audit_max_records: int
    audit_attributes: tuple[str, ...]
    audit_payload_keys: tuple[str, ...]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--address",
        default=env("SIGNOFF_ADDRESS", "127.0.0.1:50051"),
        help="host:port to listen on (SIGNOFF_ADDRESS; default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--rules",
        default=env("SIGNOFF_RULES", "rules"),
        help="policy bundle directory (SIGNOFF_RULES; default ./rules)",
    )
    parser.add_argument(
        "--cel-backend",
        choices=BACKENDS,
        default=env("SIGNOFF_CEL_BACKEND", DEFAULT_BACKEND),
        help="CEL evaluator (SIGNOFF_CEL_BACKEND; default cel-expr)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=env(
            "SIGNOFF_WORKERS", "8"
        ),  # a string: argparse converts it and reports bad values
        help="gRPC worker threads (SIGNOFF_WORKERS; default 8)",
    )
    parser.add_argument(
        "--max-batch-items",
        type=int,
        default=env(
            "SIGNOFF_MAX_BATCH_ITEMS", "1000"
        ),  # a string: argparse converts it and reports bad values
        help="largest CheckBatch accepted (SIGNOFF_MAX_BATCH_ITEMS; default 1000)",
    )
    parser.add_argument(
        "--hash-key-file",
        default=env("SIGNOFF_HASH_KEY_FILE", ""),
        help="file holding the HMAC key for the hash mask (SIGNOFF_HASH_KEY_FILE); "
        "SIGNOFF_HASH_KEY may hold the key itself. Never put it in policy files.",
    )
    parser.add_argument(
        "--redis-url",
        default=env("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="approval store (REDIS_URL; default redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--redis-prefix",
        default=env("SIGNOFF_REDIS_PREFIX", "signoff:"),
        help="key prefix in Redis (SIGNOFF_REDIS_PREFIX; default 'signoff:')",
    )
    parser.add_argument(
        "--metrics-address",
        default=env("SIGNOFF_METRICS_ADDRESS", ""),
        help="host:port serving Prometheus metrics (SIGNOFF_METRICS_ADDRESS; default off). "
        "Traces and OTLP metrics follow the standard OTEL_* variables.",
    )
    parser.add_argument(
        "--audit",
        choices=("on", "off"),
        default=env("SIGNOFF_AUDIT", "on"),
        help="tamper-evident audit trail in Redis (SIGNOFF_AUDIT; default on)",
    )
    parser.add_argument(
        "--audit-max-records",
        default=env("SIGNOFF_AUDIT_MAX_RECORDS", "1000000"),
        type=int,
        help="records kept per audit stream (SIGNOFF_AUDIT_MAX_RECORDS; default 1000000)",
    )
    parser.add_argument(
        "--audit-attributes",
        default=env("SIGNOFF_AUDIT_ATTRIBUTES", ""),
        help="comma-separated attributes audit records keep, e.g. principal.tenant,"
        "resource.tenant (SIGNOFF_AUDIT_ATTRIBUTES; default none)",
    )
    parser.add_argument(
        "--audit-payload-keys",
        default=env("SIGNOFF_AUDIT_PAYLOAD_KEYS", ""),
        help="comma-separated payload keys audit records keep, after masking "
        "(SIGNOFF_AUDIT_PAYLOAD_KEYS; default none)",
    )
    parser.add_argument(
        "--log-level",
        default=env("SIGNOFF_LOG_LEVEL", "INFO"),
        choices=LOG_LEVELS,
        help="SIGNOFF_LOG_LEVEL; default INFO",
    )


def hash_key(key_file: str) -> bytes | None:
    """The service secret (hash-mask key, and the root of the approval digest key), from a
    file or SIGNOFF_HASH_KEY; None when neither is set."""
    if key_file:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read hash key file {key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get("SIGNOFF_HASH_KEY", "").encode()
    if not key:
        return None
    if len(key) < MIN_HASH_KEY_BYTES:
        raise ConfigError(f"hash key must be at least {MIN_HASH_KEY_BYTES} bytes")
    return key


def validate_plain(args: argparse.Namespace) -> None:
    """Check values argparse cannot: `choices` are not applied to defaults from the env."""
    if args.cel_backend not in BACKENDS:
        raise ConfigError(f"unknown CEL backend {args.cel_backend!r}; choose {', '.join(BACKENDS)}")
    if getattr(args, "audit", "on") not in ("on", "off"):
        raise ConfigError(f"SIGNOFF_AUDIT must be on or off, not {args.audit!r}")
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
    return Config(
        address=args.address,
        rules=Path(args.rules),
        backend=args.cel_backend,
        workers=args.workers,
        max_batch_items=args.max_batch_items,
        hash_key=hash_key(args.hash_key_file),
        log_level=args.log_level,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        metrics_address=args.metrics_address,
        audit=args.audit == "on",
        audit_max_records=args.audit_max_records,
        audit_attributes=tuple(a for a in args.audit_attributes.split(",") if a.strip()),
        audit_payload_keys=tuple(k for k in args.audit_payload_keys.split(",") if k.strip()),
    )
