"""Coalescing against scripted servers: what is sent together, alone, late or never."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from signoff.client import (
    CheckItem,
    Coalescing,
    Decision,
    InvalidInput,
    ItemFailure,
    Principal,
    Resource,
    SignoffClient,
    SignoffRpcError,
    Verdict,
)
from signoff.v1 import signoff_pb2 as pb

if TYPE_CHECKING:
    from tests.client.conftest import ScriptedServer

ALICE = Principal("alice@example.com", roles=("analyst",))
DOCS = [Resource("doc", id=str(n)) for n in range(6)]
# Long enough that only the call in flight returning (or a deadline) sends what queued.
PATIENT = Coalescing(window=1.0)


def item(n: int) -> CheckItem:
    return CheckItem(ALICE, "read", DOCS[n])


def decision(n: int) -> pb.CheckBatchResult:
    return pb.CheckBatchResult(
        decision=pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id=f"d-{n}")
    )


class Callers:
    """Checks run on threads of their own, each keeping what it returned or raised and when."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Any] = {}
        self.took: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def start(self, name: str, ask: Callable[[], Any]) -> None:
        def run() -> None:
            began = time.monotonic()
            try:
                self.outcomes[name] = ask()
            except Exception as err:
                self.outcomes[name] = err
            self.took[name] = time.monotonic() - began

        thread = threading.Thread(target=run)
        self._threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=15)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def queue_behind_a_stalled_check(
    scripted: ScriptedServer, client: SignoffClient, callers: Callers, lead_timeout: float = 0.4
) -> None:
    """Start a lone check the server holds until it times out, so what follows queues."""
    scripted.stall("Check")
    callers.start("lead", lambda: client.check_item(item(5), timeout=lead_timeout))
    wait_for(lambda: scripted.calls() == 1)


@pytest.fixture
def patient(scripted: ScriptedServer) -> Iterator[SignoffClient]:
    client = SignoffClient(scripted.address, coalescing=PATIENT)
    yield client
    client.close()


def test_a_lone_check_is_sent_at_once_as_a_plain_check(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    scripted.answer(pb.CheckResponse(verdict=pb.VERDICT_ALLOW, decision_id="d-1"))
    began = time.monotonic()
    assert patient.check_item(item(0)).decision_id == "d-1"
    # The window is a second: a lone check must not have waited for it.
    assert time.monotonic() - began < 0.5
    assert scripted.checks == [item(0).to_proto()]
    assert scripted.batches == []


def test_checks_asked_while_a_call_is_in_flight_go_together_in_one_check_batch(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers)
    callers.start("one", lambda: patient.check_item(item(0)))
    callers.start("pair", lambda: patient.check_batch([item(1), item(2)]))
    # The two callers must be queued before the stalled check returns.
    time.sleep(0.1)
    scripted.answer_batch(pb.CheckBatchResponse(results=[decision(n) for n in range(3)]))
    callers.join()

    assert len(scripted.batches) == 1
    sent = [request.SerializeToString() for request in scripted.batches[0].items]
    order = [0, 1, 2] if sent[0] == item(0).to_proto().SerializeToString() else [1, 2, 0]
    assert sent == [item(n).to_proto().SerializeToString() for n in order]
    # Each caller gets the results of its own items, whatever their place in the batch.
    ids = {n: f"d-{i}" for i, n in enumerate(order)}
    one, pair = callers.outcomes["one"], callers.outcomes["pair"]
    assert isinstance(one, Decision)
    assert one.decision_id == ids[0]
    assert [d.decision_id for d in pair] == [ids[1], ids[2]]
    assert isinstance(callers.outcomes["lead"], SignoffRpcError)
    # With nothing queued or in flight, the client holds no thread of its own.
    wait_for(lambda: not any(t.name == "signoff-coalesce" for t in threading.enumerate()))


def test_an_item_error_raises_what_unary_check_raises_and_check_batch_keeps_it_as_a_failure(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    error = pb.ItemError(
        code=3, message="invalid request: principal.id: is required", field="principal.id"
    )
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers)
    callers.start("check", lambda: patient.check_item(item(0)))
    time.sleep(0.05)
    callers.start("batch", lambda: patient.check_batch([item(1)]))
    time.sleep(0.1)
    scripted.answer_batch(
        pb.CheckBatchResponse(
            results=[pb.CheckBatchResult(error=error), pb.CheckBatchResult(error=error)]
        )
    )
    callers.join()

    raised = callers.outcomes["check"]
    assert isinstance(raised, SignoffRpcError)
    assert (raised.method, raised.code, raised.details) == (
        "Check",
        "INVALID_ARGUMENT",
        "invalid request: principal.id: is required",
    )
    assert callers.outcomes["batch"] == [
        ItemFailure(3, "invalid request: principal.id: is required", "principal.id")
    ]


def test_a_failed_batch_fails_each_caller_as_its_own_call_would_have(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers)
    callers.start("check", lambda: patient.check_item(item(0)))
    callers.start("batch", lambda: patient.check_batch([item(1), item(2)]))
    time.sleep(0.1)
    scripted.abort(grpc.StatusCode.UNAVAILABLE, "the service is restarting", "CheckBatch")
    callers.join()

    check, batch = callers.outcomes["check"], callers.outcomes["batch"]
    assert isinstance(check, SignoffRpcError)
    assert isinstance(batch, SignoffRpcError)
    assert (check.method, check.code, check.details) == (
        "Check",
        "UNAVAILABLE",
        "the service is restarting",
    )
    assert (batch.method, batch.code, batch.details) == (
        "CheckBatch",
        "UNAVAILABLE",
        "the service is restarting",
    )


def test_a_coalesced_check_gives_up_at_its_own_deadline_while_its_batch_goes_on(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers, lead_timeout=0.2)
    callers.start("hasty", lambda: patient.check_item(item(0), timeout=0.6))
    callers.start("patient", lambda: patient.check_item(item(1), timeout=1.5))
    time.sleep(0.05)
    scripted.stall("CheckBatch")
    callers.join()

    hasty, slow = callers.outcomes["hasty"], callers.outcomes["patient"]
    for raised in (hasty, slow):
        assert isinstance(raised, SignoffRpcError)
        assert (raised.method, raised.code) == ("Check", "DEADLINE_EXCEEDED")
    # The stalled batch held both; the hasty caller left at its own deadline, not the batch's.
    assert callers.took["hasty"] < 1.0 < callers.took["patient"]
    # The batch carried the most patient caller's deadline.
    batch_deadline = scripted.time_remaining[1]
    assert batch_deadline is not None
    assert 0.6 < batch_deadline <= 1.5


def test_a_check_given_up_while_queued_is_never_sent(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers, lead_timeout=0.6)
    callers.start("hasty", lambda: patient.check_item(item(0), timeout=0.1))
    callers.join()

    hasty = callers.outcomes["hasty"]
    assert isinstance(hasty, SignoffRpcError)
    assert hasty.code == "DEADLINE_EXCEEDED"
    assert callers.took["hasty"] < 0.5
    time.sleep(0.1)
    assert scripted.batches == []


def test_a_batch_refused_for_its_size_is_resent_in_smaller_batches(
    scripted: ScriptedServer, patient: SignoffClient
) -> None:
    callers = Callers()
    queue_behind_a_stalled_check(scripted, patient, callers)
    callers.start("a", lambda: patient.check_item(item(0)))
    callers.start("b", lambda: patient.check_item(item(1)))
    time.sleep(0.1)
    # A server allowing fewer items per batch than the client's max_items refuses the whole
    # batch before deciding anything; each check must still get its answer.
    scripted.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request: items: at most 1 items per batch",
        "CheckBatch",
    )
    scripted.answer_batch(
        pb.CheckBatchResponse(results=[decision(0)]), pb.CheckBatchResponse(results=[decision(1)])
    )
    callers.join()

    assert [len(batch.items) for batch in scripted.batches] == [2, 1, 1]
    for name in ("a", "b"):
        outcome = callers.outcomes[name]
        assert isinstance(outcome, Decision)
        assert outcome.verdict is Verdict.ALLOW


def test_a_callers_batch_larger_than_max_items_is_sent_whole_on_its_own(
    scripted: ScriptedServer,
) -> None:
    client = SignoffClient(scripted.address, coalescing=Coalescing(max_items=2))
    scripted.answer_batch(pb.CheckBatchResponse(results=[decision(n) for n in range(5)]))
    try:
        results = client.check_batch([item(n) for n in range(5)])
    finally:
        client.close()
    assert [len(batch.items) for batch in scripted.batches] == [5]
    assert [r.decision_id for r in results if isinstance(r, Decision)] == [
        f"d-{n}" for n in range(5)
    ]


def test_closing_the_client_fails_queued_checks_as_a_closed_channel_would(
    scripted: ScriptedServer,
) -> None:
    client = SignoffClient(scripted.address, coalescing=PATIENT)
    callers = Callers()
    queue_behind_a_stalled_check(scripted, client, callers, lead_timeout=2.0)
    callers.start("queued", lambda: client.check_item(item(0)))
    time.sleep(0.1)
    client.close()
    callers.join()
    queued = callers.outcomes["queued"]
    assert isinstance(queued, SignoffRpcError)
    assert queued.code == "CANCELLED"


def test_without_coalescing_concurrent_checks_are_each_their_own_call(
    scripted: ScriptedServer,
) -> None:
    client = SignoffClient(scripted.address, coalescing=None)
    scripted.stall("Check")
    scripted.answer(pb.CheckResponse(verdict=pb.VERDICT_ALLOW))
    callers = Callers()
    callers.start("stalled", lambda: client.check_item(item(0), timeout=0.3))
    wait_for(lambda: scripted.calls() == 1)
    callers.start("second", lambda: client.check_item(item(1)))
    callers.join()
    client.close()
    assert len(scripted.checks) == 2
    assert scripted.batches == []


@pytest.mark.parametrize(
    "options",
    [
        {"window": 0.0},
        {"window": 2.0},
        {"max_items": 0},
        {"max_bytes": -1},
        {"max_in_flight": True},
    ],
)
def test_coalescing_refuses_settings_that_cannot_work(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="Coalescing"):
        Coalescing(**options)


def test_checks_queued_when_the_callers_own_channel_closes_fail_as_calls_on_it_would(
    scripted: ScriptedServer,
) -> None:
    channel = grpc.insecure_channel(scripted.address)
    client = SignoffClient(scripted.address, channel=channel, coalescing=PATIENT)
    callers = Callers()
    queue_behind_a_stalled_check(scripted, client, callers, lead_timeout=5.0)
    callers.start("queued", lambda: client.check_item(item(0), timeout=5.0))
    time.sleep(0.1)
    channel.close()
    callers.join()
    client.close()
    # The stalled call is cancelled by the close; the queued check is then sent on a closed
    # channel, which refuses it at once, as it refuses a plain call.
    lead = callers.outcomes["lead"]
    assert isinstance(lead, SignoffRpcError)
    assert lead.code == "CANCELLED"
    queued = callers.outcomes["queued"]
    assert isinstance(queued, ValueError)
    assert "closed" in str(queued)
    assert callers.took["queued"] < 2.0
