"""The service side of embedded deciders: the signed bundle to fetch, their records to audit."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from signoff.audit import AuditLog
from signoff.audit.chain import RESERVED
from signoff.audit.record import DecisionRecord, MalformedRecord
from signoff.errors import ConfigError, Conflict, InvalidRequest
from signoff.server.status import guarded
from signoff.v1 import embedded_pb2 as epb
from signoff.v1 import embedded_pb2_grpc as epb_grpc

MAX_RECORDS_PER_BATCH = 1000
MAX_RECORD_BYTES = 64 * 1024
MAX_DECIDER_LENGTH = 200
# What the service sets on an ingested record: a decider cannot claim another caller, or that
# the service itself decided.
DECIDED_BY = "embedded"


SERVICE_NAME = epb.DESCRIPTOR.services_by_name["EmbeddedService"].full_name


@dataclass(frozen=True)
class Embedded:
    """Serve embedded deciders: the signed bundle at `bundle` (None: none to hand out)."""

    bundle: Path | None


class EmbeddedService(epb_grpc.EmbeddedServiceServicer):
    """Serves the signed bundle at `bundle` (None: the service decides from an unsigned rules
    directory, which embedded deciders are not handed) and appends ingested decision records
    to `audit`, each naming the authenticated caller (`caller`, as DecisionService names it)."""

    def __init__(
        self,
        bundle: Path | None,
        audit: AuditLog | None,
        caller: Callable[[grpc.ServicerContext], str],
    ) -> None:
        self._bundle = bundle
        self._audit = audit
        self._caller = caller
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], str, bytes] | None = None

    def GetBundle(
        self, request: epb.GetBundleRequest, context: grpc.ServicerContext
    ) -> epb.GetBundleResponse:
        return guarded(context, lambda: self._get_bundle(request))

    def SubmitDecisionRecords(
        self, request: epb.SubmitDecisionRecordsRequest, context: grpc.ServicerContext
    ) -> epb.SubmitDecisionRecordsResponse:
        caller = self._caller(context)
        return guarded(context, lambda: self._submit(request, caller))

    def _get_bundle(self, request: epb.GetBundleRequest) -> epb.GetBundleResponse:
        etag, data = self._read()
        if request.known_etag == etag:
            return epb.GetBundleResponse(not_modified=True, etag=etag)
        return epb.GetBundleResponse(etag=etag, bundle=data)

    def _read(self) -> tuple[str, bytes]:
        if self._bundle is None:
            raise Conflict(
                "this service decides from an unsigned rules directory; embedded deciders "
                "need a signed bundle (signoff serve --bundle-public-key)"
            )
        try:
            st = os.stat(self._bundle)
        except OSError:
            raise ConfigError("the signed bundle cannot be read") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == stamp:
                return cached[1], cached[2]
            try:
                data = self._bundle.read_bytes()
            except OSError:
                raise ConfigError("the signed bundle cannot be read") from None
            etag = hashlib.sha256(data).hexdigest()
            self._cached = (stamp, etag, data)
            return etag, data

    def _submit(
        self, request: epb.SubmitDecisionRecordsRequest, caller: str
    ) -> epb.SubmitDecisionRecordsResponse:
        if self._audit is None:
            raise Conflict("this service keeps no audit trail to take decision records into")
        if len(request.records) > MAX_RECORDS_PER_BATCH:
            raise InvalidRequest("records", f"at most {MAX_RECORDS_PER_BATCH} per batch")
        if len(request.decider) > MAX_DECIDER_LENGTH:
            raise InvalidRequest("decider", f"longer than {MAX_DECIDER_LENGTH} characters")
        # Every record is checked before any is queued: a batch is taken whole or not at all.
        docs = [_record(text, i, caller, request.decider) for i, text in enumerate(request.records)]
        accepted = sum(self._audit.submit(doc) for doc in docs)
        return epb.SubmitDecisionRecordsResponse(accepted=accepted)


def _record(text: str, index: int, caller: str, decider: str) -> dict[str, Any]:
    """A submitted record, checked as the audit trail reads decision records back; the
    service's own fields (who sent it, that an embedded decider made it) replace any sent."""
    where = f"records[{index}]"
    if len(text) > MAX_RECORD_BYTES:
        raise InvalidRequest(where, f"longer than {MAX_RECORD_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidRequest(where, "not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(where, "not a JSON object")
    for key in (*RESERVED, "at", "caller", "decided_by", "decider"):
        if key in doc:
            raise InvalidRequest(f"{where}.{key}", "is set by the service")
    try:
        DecisionRecord.parse({**doc, "at": "1970-01-01T00:00:00Z"}, index)
    except MalformedRecord as exc:
        raise InvalidRequest(where, exc.message) from None
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(where, "not a decision record") from None
    if caller:
        doc["caller"] = caller
    doc["decided_by"] = DECIDED_BY
    if decider:
        doc["decider"] = decider
    return doc
