"""Service configuration from command-line flags and SIGNOFF_* environment variables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from signoff.approvals.store import DEFAULT_MAX_PENDING_PER_REQUESTER
from signoff.keys import KeySources
from signoff.limits import Limits
from signoff.server.tls import TLSFiles

log = logging.getLogger("signoff.config")
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
    max_watchers: int = 16  # open WatchApproval streams per process, on threads of their own
