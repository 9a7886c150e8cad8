"""Tamper-evident audit log of decisions and approval transitions, kept in Redis Streams."""

from signoff.audit.chain import GENESIS, STREAMS, Hasher, StreamKeys, audit_key, canonical_json
from signoff.audit.events import DEFAULT_GROUP, ApprovalEventAuditor, event_record
from signoff.audit.log import Ack, AuditConfig, AuditLog
from signoff.audit.verify import BadRecord, VerifyResult, export, verify
from signoff.errors import AuditUnavailable

__all__ = [
    "DEFAULT_GROUP",
    "GENESIS",
    "STREAMS",
    "Ack",
    "ApprovalEventAuditor",
    "AuditConfig",
    "AuditLog",
    "AuditUnavailable",
    "BadRecord",
    "Hasher",
    "StreamKeys",
    "VerifyResult",
    "audit_key",
    "canonical_json",
    "event_record",
    "export",
    "verify",
]
