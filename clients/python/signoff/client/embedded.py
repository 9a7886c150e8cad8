"""Decisions in the caller's process from the service's signed bundle, audited by the service.

Needs the engine: `pip install 'signoff-client[embedded]'`. An `EmbeddedDecider` fetches the
signed bundle from the service's EmbeddedService (or reads a signed bundle file), verifies it
with the caller's public key, swaps in a newer one when it changes, and answers ALLOW, DENY and
MASK locally. REQUIRE_APPROVAL is never settled here: such a check, and any check naming an
approval, goes to the service's Check, where approvals are held, voted and consumed. Each
local decision is handed to a shipping thread as a tuple; that thread builds its audit record
(the service's audit view: ids and allowlisted attributes, never the payload) and sends the
records in batches to the service's audit trail.
"""

from __future__ import annotations

import collections
import copy
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from signoff.audit.record import DecisionRecord
from signoff.bundles.source import SignedBundleSource
from signoff.client.errors import InvalidInput, SignoffClientError, SignoffRpcError
from signoff.client.types import CheckItem, Decision
from signoff.engine import cel
from signoff.engine.evaluator import Clock, Engine
from signoff.engine.model import Decision as EngineDecision
from signoff.engine.model import Request, Verdict
from signoff.errors import InvalidRequest, SignoffError
from signoff.limits import Limits
from signoff.server import convert
from signoff.v1 import embedded_pb2 as epb
from signoff.v1 import embedded_pb2_grpc as epb_grpc
from signoff.v1 import signoff_pb2, signoff_pb2_grpc
from signoff.views import AuditSelection, Views

__all__ = ["EmbeddedDecider", "EmbeddedStats"]

log = logging.getLogger("signoff.client.embedded")
_REQUIRE_APPROVAL = Verdict.REQUIRE_APPROVAL
MAX_BATCH = 500  # the service takes up to 1000 records per call


@dataclass(frozen=True)
class EmbeddedStats:
    """What the decider has done since it started."""

    revision: str
    decided: int  # decisions made locally
    shipped: int  # records the service accepted
    dropped: int  # records lost: the buffer was full, or the service refused them
    pending: int  # records waiting to be shipped
    bundle_refusals: int  # fetched bundles that failed verification (the old one kept serving)


class EmbeddedDecider:
    """Decides in this process with the service's signed bundle; see the module docstring.

    `channel` reaches the service (its EmbeddedService, and DecisionService for approvals);
    it stays the caller's to close. `clock` (default: the system's) is the decisions' time.
    `public_key` is the Ed25519 public key (PEM file) bundles must be signed with; nothing
    unsigned is ever loaded. With `bundle_file`, the bundle is read from that file instead of
    the service (records still go to the service). The first bundle is loaded before the
    constructor returns (a refusal raises); later ones every `poll_interval` seconds.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        public_key: str | Path,
        bundle_file: str | Path | None = None,
        backend: str = cel.DEFAULT_BACKEND,
        clock: Clock | None = None,
        poll_interval: float = 30.0,
        flush_interval: float = 0.5,
        buffer_max: int = 10_000,
        timeout: float = 5.0,
        hash_key_id: str = "",
        audit_attributes: Iterable[str] = (),
        decider: str = "",
        limits: Limits | None = None,
    ) -> None:
        if buffer_max < 1:
            raise InvalidInput("buffer_max must be at least 1")
        self._stub = epb_grpc.EmbeddedServiceStub(channel)
        self._decisions = signoff_pb2_grpc.DecisionServiceStub(channel)
        self._clock = clock
        self._timeout = timeout
        self._hash_key_id = hash_key_id
        self._limits = limits or Limits()
        self._decider = decider or f"{socket.gethostname()}/{os.getpid()}"[:200]
        # Never a payload value: only the service holds the key its HASH masks need.
        self._views = Views(
            hash_key=b"",
            hash_key_id=hash_key_id,
            audit=AuditSelection.parse(audit_attributes, ()),
        )
        self._private = Path(tempfile.mkdtemp(prefix="signoff-embedded-"))
        self._fetched = self._private / "bundle.tar.gz"
        path = Path(bundle_file) if bundle_file is not None else self._fetched
        self._path = path
        # One source for every load: it refuses a bundle signed before the one it accepted.
        self._source = SignedBundleSource(path, public_key, backend=backend)
        self._from_service = bundle_file is None
        self._etag = ""
        self._refresh_lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._refusals = 0
        try:
            self._engine = self._load_first()
        except BaseException:
            self._remove_private()
            raise
        # Decision ids: unique per decider without a uuid4 per decision on the hot path.
        self._id_prefix = uuid.uuid4().hex[:20]
        self._ids = itertools.count(1)
        self._pending: collections.deque[tuple[Request, EngineDecision, str, float]] = (
            collections.deque()
        )
        self._buffer_max = buffer_max
        self._count_lock = threading.Lock()
        self._shipped = 0
        self._dropped = 0
        self._closed = threading.Event()
        self._flush_interval = flush_interval
        self._poll_interval = poll_interval
        self._ship_lock = threading.Lock()
        self._shipper = threading.Thread(target=self._ship_loop, name="signoff-embedded-ship")
        self._shipper.daemon = True
        self._shipper.start()
        self._poller = threading.Thread(target=self._poll_loop, name="signoff-embedded-poll")
        self._poller.daemon = True
        self._poller.start()

    # --- deciding ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine deciding now (replaced whole when a newer bundle arrives)."""
        return self._engine

    def decide(self, request: Request) -> tuple[EngineDecision, str]:
        """The policy's decision on `request` and its decision id, recorded for the audit
        trail. A REQUIRE_APPROVAL decision is returned as the policy says, and not recorded:
        only the service may hold or consume approvals (`check` sends it there). Raises
        signoff.errors.InvalidRequest for malformed input."""
        decision = self._engine.decide(request)
        if decision.verdict is _REQUIRE_APPROVAL:
            return decision, ""
        decision_id = f"{self._id_prefix}{next(self._ids):012x}"
        pending = self._pending
        if len(pending) < self._buffer_max:
            pending.append((request, decision, decision_id, time.time()))
        else:
            with self._count_lock:
                self._dropped += 1
        return decision, decision_id

    def check(self, item: CheckItem, *, timeout: float | None = None) -> Decision:
        """The answer the service's Check would give (see `check_message`)."""
        return self.check_message(item.to_proto(), timeout=timeout)

    def check_message(
        self, message: signoff_pb2.CheckRequest, *, timeout: float | None = None
    ) -> Decision:
        """The answer the service's Check would give to `message`, decided here when the
        policy allows, denies or masks; a check naming an approval, or one the policy wants
        approved, is sent to the service. Raises InvalidInput for what the service would
        refuse as INVALID_ARGUMENT (the same message), SignoffRpcError when a call to the
        service fails."""
        if message.approval_id:
            return self._forward(message, timeout)
        try:
            request = convert.to_request(message, self._limits)
            decision, decision_id = self.decide(request)
        except InvalidRequest as exc:
            raise InvalidInput(f"invalid request: {exc.field}: {exc.message}") from None
        if decision.verdict is _REQUIRE_APPROVAL:
            return self._forward(message, timeout)
        return Decision.from_proto(convert.to_response(decision, decision_id, self._hash_key_id))

    def _forward(self, message: signoff_pb2.CheckRequest, timeout: float | None) -> Decision:
        try:
            response = self._decisions.Check(
                message, timeout=self._timeout if timeout is None else timeout
            )
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call):
                raise SignoffRpcError("Check", err.code().name, err.details() or "") from err
            raise SignoffRpcError("Check", "UNKNOWN", str(err)) from err
        return Decision.from_proto(response)

    # --- the bundle --------------------------------------------------------------------------

    def _load_first(self) -> Engine:
        if self._from_service:
            self._fetch()
        else:
            self._stamp = self._file_stamp()
        try:
            return Engine(self._source(), self._clock)
        except SignoffError as exc:
            raise SignoffClientError(f"the signed bundle was refused: {exc}") from None

    def refresh(self) -> bool:
        """Look for a newer bundle now; True when one was verified and swapped in. A bundle
        that fails verification is refused (logged and counted) and the current one stays."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            if self._from_service:
                changed = self._fetch()
            else:
                stamp = self._file_stamp()
                changed, self._stamp = stamp != self._stamp, stamp
            if not changed:
                return False
            engine = Engine(self._source(), self._clock)
        except (SignoffError, SignoffClientError, grpc.RpcError, OSError) as exc:
            self._refusals += 1
            log.warning("policy bundle not updated: %s", str(exc).splitlines()[0][:300])
            return False
        if engine.bundle.revision == self._engine.bundle.revision:
            return False
        self._engine = engine
        log.info("policy bundle revision %s now deciding", engine.bundle.revision[:12])
        return True

    def _fetch(self) -> bool:
        """Fetch the bundle into the private file when it changed; True when it did."""
        try:
            got = self._stub.GetBundle(
                epb.GetBundleRequest(known_etag=self._etag), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise SignoffClientError(f"cannot fetch the signed bundle: {exc.code()}") from None
        if got.not_modified:
            return False
        fd = os.open(self._fetched, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(got.bundle)
        self._etag = got.etag
        return True

    def _file_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _poll_loop(self) -> None:
        while not self._closed.wait(self._poll_interval):
            try:
                self.refresh()
            except Exception as exc:  # the thread must outlive any one failure
                log.error("looking for a newer bundle failed: %s", type(exc).__name__)

    # --- the records -------------------------------------------------------------------------

    def _ship_loop(self) -> None:
        while not self._closed.wait(self._flush_interval):
            try:
                self.flush()
            except Exception as exc:  # the thread must outlive any one failure
                log.error("shipping decision records failed: %s", type(exc).__name__)

    def flush(self) -> int:
        """Send every pending record now; how many the service accepted. Records the service
        cannot be reached for stay pending (up to the buffer's bound) for the next try."""
        accepted = 0
        with self._ship_lock:
            pending = self._pending
            while pending:
                batch = [pending.popleft() for _ in range(min(MAX_BATCH, len(pending)))]
                records, good = [], []
                for entry in batch:
                    try:
                        records.append(_record_json(self._views, *entry))
                        good.append(entry)
                    except (TypeError, ValueError):
                        # Not JSON (NaN, a set...): only a Request built in-process can hold
                        # one; the record is lost, and counted, rather than the whole batch.
                        self._count_drops(1)
                        log.error("decision record %s cannot be encoded", entry[2])
                if not records:
                    continue
                try:
                    reply = self._stub.SubmitDecisionRecords(
                        epb.SubmitDecisionRecordsRequest(records=records, decider=self._decider),
                        timeout=self._timeout,
                    )
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                        self._count_drops(len(records))
                        log.error("the service refused %d decision records", len(records))
                        continue
                    room = self._buffer_max - len(pending)
                    kept = good[:room] if room > 0 else []
                    pending.extendleft(reversed(kept))
                    self._count_drops(len(good) - len(kept))
                    break
                accepted += reply.accepted
                self._count_drops(len(records) - reply.accepted)
            self._shipped += accepted
        return accepted

    def _count_drops(self, n: int) -> None:
        with self._count_lock:
            self._dropped += n

    def stats(self) -> EmbeddedStats:
        # The id counter is the count of local decisions (a copy reads it without a step).
        decided = next(copy.copy(self._ids)) - 1
        return EmbeddedStats(
            self._engine.bundle.revision,
            decided,
            self._shipped,
            self._dropped,
            len(self._pending),
            self._refusals,
        )

    def close(self) -> None:
        """Stop looking for bundles and ship every pending record (nothing is lost on a clean
        shutdown while the service can be reached). The channel is the caller's."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._poller.join()
        self._shipper.join()
        deadline = time.monotonic() + self._timeout
        while self._pending and time.monotonic() < deadline:
            if not self.flush() and self._pending:
                time.sleep(0.05)
        if self._pending:
            lost = len(self._pending)
            self._pending.clear()
            self._count_drops(lost)
            log.error("%d decision records lost: the service could not be reached", lost)
        self._remove_private()

    def _remove_private(self) -> None:
        for name in os.listdir(self._private):
            os.unlink(self._private / name)
        os.rmdir(self._private)

    def __enter__(self) -> EmbeddedDecider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_json(
    views: Views, request: Request, decision: EngineDecision, decision_id: str, at: float
) -> str:
    """The decision's audit record as the service writes its own (no trace, no caller: the
    service adds who sent it)."""
    record = DecisionRecord.of(
        decision_id, decision, decision, "", "", "", views.audit_view(request, decision)
    )
    doc: dict[str, Any] = record.doc()
    doc["decided_at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + (
        f".{int(at % 1 * 1000):03d}Z"
    )
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
