"""Coalescing concurrent checks into CheckBatch calls: the policy, the queue, the threaded sender.

A Python gRPC call costs the server far more than deciding a check does, so checks asked at
the same time are worth sending as one CheckBatch. The rule is Nagle's: a check asked while
nothing is in flight is sent at once, alone, as the plain call it is (Check, or the caller's
own CheckBatch); checks asked while a call is in flight queue and go together when it
returns, when `max_items` or `max_bytes` are queued, or after `window` at the latest. A
caller's own CheckBatch is never split. Each caller waits for its own answer until its own
deadline, never longer, and a check given up while still queued is never sent.

The queue and the bookkeeping here are shared by the threaded client (`ThreadCoalescer`,
below) and the asyncio client (`signoff.client.aio`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from signoff.client.calls import batch_results, deadline_error, rpc_error, single_result
from signoff.client.errors import InvalidInput, ProtocolError, SignoffRpcError
from signoff.client.types import Decision, ItemFailure, frame
from signoff.v1 import signoff_pb2

__all__ = ["Coalescing"]

CHECK = "/signoff.v1.DecisionService/Check"
CHECK_BATCH = "/signoff.v1.DecisionService/CheckBatch"
Method = Literal["Check", "CheckBatch"]

# The server refuses a batch as a whole, before deciding any item, when it has more items or
# bytes than it accepts: its checks are safe to resend in smaller batches.
_ITEMS_REFUSAL = "invalid request: items:"
_SIZE_REFUSAL = "larger than max"


@dataclass(frozen=True)
class Coalescing:
    """How concurrent checks are gathered into CheckBatch calls.

    `window`: the longest a check waits for a call in flight before it is sent anyway (seconds).
    `max_items`, `max_bytes`: a batch never holds more (the server's defaults allow 1000 items
    and 1 MiB); a check or a caller's batch larger than that is sent on its own.
    `max_in_flight`: coalesced calls in flight at once before checks queue.
    """

    window: float = 0.001
    max_items: int = 256
    max_bytes: int = 256 * 1024
    max_in_flight: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.window <= 1:
            raise InvalidInput(f"Coalescing.window must be in (0, 1] seconds, not {self.window!r}")
        for name in ("max_items", "max_bytes", "max_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"Coalescing.{name} must be a positive integer, not {value!r}")


# Where an Entry is: waiting in the queue, in a call, answered, given up by its caller.
QUEUED, SENT, DONE, ABANDONED = range(4)


class Entry:
    """One caller's question: a single check, or the items of one check_batch call, kept whole."""

    __slots__ = (
        "answer",
        "count",
        "deadline",
        "error",
        "flight",
        "frames",
        "method",
        "payloads",
        "queued_at",
        "signal",
        "size",
        "state",
    )

    def __init__(self, method: Method, payloads: Sequence[bytes], deadline: float) -> None:
        self.method: Method = method
        self.payloads = payloads
        self.count = len(payloads)
        # Framed once: the size is then exact, and a batch is these bytes joined.
        # CheckBatchRequest.items is field 1, length-delimited.
        self.frames = [frame(b"\x0a", p) for p in payloads]
        self.size = sum(len(frame) for frame in self.frames)
        self.deadline = deadline
        self.queued_at = 0.0
        self.state = QUEUED
        self.answer: Any = None
        self.error: Exception | None = None
        self.flight: Flight | None = None
        self.signal: Any = None  # how the sender wakes the caller: a Lock, an asyncio Future

    def request(self) -> bytes:
        """This entry sent on its own, as the call the caller asked for."""
        if self.method == "Check":
            return self.payloads[0]
        return b"".join(self.frames)

    def outcome(self) -> Any:
        """The caller's answer: a Decision for a check, the list for a batch; or its error."""
        if self.error is not None:
            raise self.error
        if self.method == "Check":
            if isinstance(self.answer, signoff_pb2.CheckResponse):
                return Decision.from_proto(self.answer)
            return single_result(self.answer[0])
        results: Sequence[signoff_pb2.CheckBatchResult] = self.answer
        return batch_results(results, self.count)


def check_outcome(entry: Entry) -> Decision:
    decision: Decision = entry.outcome()
    return decision


def batch_outcome(entry: Entry) -> list[Decision | ItemFailure]:
    results: list[Decision | ItemFailure] = entry.outcome()
    return results


class Flight:
    """One coalesced call in flight; cancelled once every caller in it has given up."""

    __slots__ = ("cancel", "entries", "live")

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.live = len(entries)
        self.cancel: Callable[[], Any] | None = None

    def request(self) -> bytes:
        return b"".join(frame for entry in self.entries for frame in entry.frames)

    def timeout(self, now: float) -> float:
        # The call lives as long as its most patient caller; each of the others stops waiting
        # at its own deadline.
        return max(entry.deadline for entry in self.entries) - now

    def settle(self, response: signoff_pb2.CheckBatchResponse) -> None:
        """Hand each entry still waiting its slice of the results."""
        total = sum(entry.count for entry in self.entries)
        results = response.results
        if len(results) != total:
            error = ProtocolError(f"CheckBatch returned {len(results)} results for {total} items")
            for entry in self.entries:
                if entry.state == SENT:
                    entry.error = error
            return
        at = 0
        for entry in self.entries:
            if entry.state == SENT:
                entry.answer = results[at : at + entry.count]
            at += entry.count

    def fail(self, err: Exception) -> None:
        """Fail every entry still waiting: with the client's error for a failed call, or with
        what grpc raised before any call (e.g. ValueError on a closed channel), as unary."""
        for entry in self.entries:
            if entry.state == SENT:
                entry.error = (
                    rpc_error(entry.method, err) if isinstance(err, grpc.RpcError) else err
                )


def refused_shape(err: grpc.RpcError) -> bool:
    """Whether the server refused a batch for its size alone, before deciding anything."""
    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError):
        return False
    details = err.details() or ""
    code = err.code()
    return (code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith(_ITEMS_REFUSAL)) or (
        code is grpc.StatusCode.RESOURCE_EXHAUSTED and _SIZE_REFUSAL in details
    )


class Queue:
    """The checks waiting for a call, and when to send them. Not thread-safe: its owner locks."""

    def __init__(self, policy: Coalescing) -> None:
        self.policy = policy
        self.max_items = policy.max_items
        self.max_bytes = policy.max_bytes
        self.in_flight = 0
        self._queued: deque[Entry] = deque()
        self._items = 0
        self._bytes = 0

    def fits(self, entry: Entry) -> bool:
        """Whether `entry` may share a call; a larger one is sent on its own, as asked."""
        return entry.count <= self.max_items and entry.size <= self.max_bytes

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and not self._items

    def add(self, entry: Entry, now: float) -> None:
        entry.queued_at = now
        self._queued.append(entry)
        self._items += entry.count
        self._bytes += entry.size

    def due(self) -> float | None:
        """When the oldest queued check has waited the window, or None when none waits."""
        while self._queued and self._queued[0].state == ABANDONED:
            self._queued.popleft()
        return self._queued[0].queued_at + self.policy.window if self._queued else None

    def take(self, now: float) -> Flight | None:
        """The next call to send now, if any is due (its in_flight counted)."""
        due = self.due()
        if due is None:
            return None
        if not (
            self.in_flight < self.policy.max_in_flight
            or self._items >= self.max_items
            or self._bytes >= self.max_bytes
            or now >= due
        ):
            return None
        batch: list[Entry] = []
        items = size = 0
        while self._queued:
            entry = self._queued[0]
            if entry.state == ABANDONED:
                self._queued.popleft()
                continue
            full = items + entry.count > self.max_items or size + entry.size > self.max_bytes
            if batch and full:
                break
            self._queued.popleft()
            entry.state = SENT
            batch.append(entry)
            items += entry.count
            size += entry.size
        self._items -= items
        self._bytes -= size
        self.in_flight += 1
        flight = Flight(batch)
        for entry in batch:
            entry.flight = flight
        return flight

    def abandon(self, entry: Entry) -> Callable[[], Any] | None:
        """The caller gave up on `entry`: drop it if queued. Returns the cancel of its call
        when nobody waits for that call any more."""
        state, entry.state = entry.state, ABANDONED
        if state == QUEUED:
            self._items -= entry.count
            self._bytes -= entry.size
            return None
        flight = entry.flight
        if state == SENT and flight is not None:
            flight.live -= 1
            if flight.live == 0:
                return flight.cancel
        return None

    def shrink(self, err: grpc.RpcError, flight: Flight) -> None:
        """After a refusal for size, send smaller batches from now on."""
        items = sum(entry.count for entry in flight.entries)
        if isinstance(err, grpc.Call | grpc.aio.AioRpcError) and (
            err.code() is grpc.StatusCode.INVALID_ARGUMENT
        ):
            self.max_items = max(1, min(self.max_items, items // 2))
        else:
            size = sum(entry.size for entry in flight.entries)
            self.max_bytes = max(1, min(self.max_bytes, size // 2))

    def drain(self) -> list[Entry]:
        """Every entry still queued (the client is closing)."""
        out = [entry for entry in self._queued if entry.state == QUEUED]
        self._queued.clear()
        self._items = self._bytes = 0
        return out


def _wake(signals: list[threading.Lock]) -> None:
    for signal in signals:
        signal.release()


def closed_error(method: Method) -> SignoffRpcError:
    # What grpc itself raises for a call on a closed channel.
    return SignoffRpcError(method, grpc.StatusCode.CANCELLED.name, "Channel closed!")


class ThreadCoalescer:
    """Coalesces checks from many threads over one channel (see the module's docstring).

    A lone check is sent by its caller's thread as a plain blocking call; coalesced calls are
    sent with grpc futures, whose completion hands out the answers and sends what queued
    meanwhile. A timer thread sends whatever has waited the window.
    """

    def __init__(self, channel: grpc.Channel, policy: Coalescing) -> None:
        self._queue = Queue(policy)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None
        self._closed = False
        # Bytes in: every item is serialized once, to size it, and framed into the batch as is.
        self._check = channel.unary_unary(CHECK, None, signoff_pb2.CheckResponse.FromString)
        self._batch = channel.unary_unary(
            CHECK_BATCH, None, signoff_pb2.CheckBatchResponse.FromString
        )

    def run(self, entry: Entry) -> None:
        """Settle `entry` (its answer or error), returning no later than its deadline."""
        now = time.monotonic()
        if entry.deadline <= now:
            entry.error = deadline_error(entry.method)
            return
        with self._lock:
            # Once closed, each check is its own call again, and fails as such on a closed
            # channel (a channel of the caller's own may well still be open).
            alone = self._closed or not self._queue.fits(entry)
            lead = alone or self._queue.idle
            if lead and not alone:
                self._queue.in_flight += 1
            if not lead:
                entry.signal = threading.Lock()
                entry.signal.acquire()
                self._queue.add(entry, now)
                flights = self._take(now)
                if self._timer is None:
                    self._timer = threading.Thread(
                        target=self._time, name="signoff-coalesce", daemon=True
                    )
                    self._timer.start()
        if lead:
            self._lead(entry, counted=not alone)
            return
        self._send(flights)
        self._wait(entry)

    def _lead(self, entry: Entry, *, counted: bool) -> None:
        call = self._check if entry.method == "Check" else self._batch
        try:
            response = call(entry.request(), timeout=entry.deadline - time.monotonic())
            entry.answer = response if entry.method == "Check" else response.results
        except grpc.RpcError as err:
            entry.error = rpc_error(entry.method, err)
        finally:
            if counted:
                with self._lock:
                    self._queue.in_flight -= 1
                    flights = self._take(time.monotonic())
                self._send(flights)

    def _wait(self, entry: Entry) -> None:
        signal: threading.Lock = entry.signal
        try:
            if signal.acquire(timeout=max(0.0, entry.deadline - time.monotonic())):
                return
        except BaseException:
            self._give_up(entry)
            raise
        self._give_up(entry)

    def _give_up(self, entry: Entry) -> None:
        with self._lock:
            if entry.state == DONE:
                return  # answered as the wait ended: keep the answer
            cancel = self._queue.abandon(entry)
            entry.error = deadline_error(entry.method)
        if cancel is not None:
            cancel()

    def _take(self, now: float) -> list[Flight]:
        flights = []
        while (flight := self._queue.take(now)) is not None:
            flights.append(flight)
        return flights

    def _send(self, flights: list[Flight]) -> None:
        for flight in flights:
            now = time.monotonic()
            try:
                future = self._batch.future(flight.request(), timeout=flight.timeout(now))
            except Exception as err:  # refused before any call, e.g. the channel is closed
                self._refused(flight, err)
                continue
            flight.cancel = future.cancel
            future.add_done_callback(functools.partial(self._settle, flight))

    def _refused(self, flight: Flight, err: Exception) -> None:
        with self._lock:
            flight.fail(err)
            self._queue.in_flight -= 1
            woken = self._finish(flight.entries)
            flights = self._take(time.monotonic())
        _wake(woken)
        self._send(flights)

    def _settle(self, flight: Flight, done: Any) -> None:
        refused = False
        with self._lock:
            # Under the lock, so a caller giving up at this moment gets either its answer or
            # its deadline error, never a mix.
            if not done.cancelled():
                try:
                    flight.settle(done.result())
                except grpc.RpcError as err:
                    # Resent in smaller batches, unless this batch was one caller's own.
                    refused = len(flight.entries) > 1 and refused_shape(err)
                    if refused:
                        self._queue.shrink(err, flight)
                    else:
                        flight.fail(err)
            self._queue.in_flight -= 1
            flights = self._take(time.monotonic())
            if refused:
                for entry in flight.entries:
                    if entry.state == SENT:
                        entry.state = QUEUED
                        self._queue.add(entry, entry.queued_at)
                flights += self._take(time.monotonic())
                woken = []
            else:
                woken = self._finish(flight.entries)
        # The next call goes out first: the server works on it while the callers wake.
        try:
            self._send(flights)
        finally:
            _wake(woken)

    def _finish(self, entries: list[Entry]) -> list[threading.Lock]:
        """Mark the entries answered; returns their callers' signals, to release once the
        lock is let go (a caller woken while it is held would at once wait for it)."""
        # Under the lock, so a caller giving up at this moment sees DONE and takes the answer.
        woken = []
        for entry in entries:
            if entry.state == SENT or entry.state == QUEUED:
                entry.state = DONE
                woken.append(entry.signal)
        return woken

    def _time(self) -> None:
        # While calls are in flight the timer polls every window rather than being woken for
        # each check that queues: under load that is far fewer wake-ups. Once nothing is in
        # flight or queued it ends (the next check to queue starts another), so an idle or
        # forgotten client holds no thread.
        window = self._queue.policy.window
        with self._lock:
            while not self._closed:
                due = self._queue.due()
                now = time.monotonic()
                if due is None and not self._queue.in_flight:
                    break
                if due is None or due > now:
                    self._wake.wait(window if due is None else due - now)
                    continue
                flights = self._take(now)
                self._lock.release()
                try:
                    self._send(flights)
                finally:
                    self._lock.acquire()
            if self._timer is threading.current_thread():
                self._timer = None

    def close(self) -> None:
        """Fail what is still queued, as a closing channel fails its calls; stop the timer."""
        with self._lock:
            self._closed = True
            left = self._queue.drain()
            for entry in left:
                entry.error = closed_error(entry.method)
            woken = self._finish(left)
            self._wake.notify()
            timer = self._timer
        _wake(woken)
        if timer is not None and timer is not threading.current_thread():
            timer.join()
