"""Coalesced checks get exactly the answers and errors of unary calls, against the real server."""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.client import (
    CheckItem,
    Coalescing,
    Context,
    Decision,
    Field,
    ItemFailure,
    Principal,
    Resource,
    SignoffClient,
    SignoffClientError,
    SignoffRpcError,
)
from signoff.client.aio import AsyncSignoffClient
from signoff.client.coalesce import CHECK_BATCH
from signoff.engine.evaluator import Engine
from signoff.limits import Limits
from signoff.server import app
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, bundled, drop_prefix, serving

PROD = Context(environment="prod")
ALICE = Principal("alice@acme.io", roles=("analyst",), attributes={"tenant": "acme"})
EVE = Principal("eve@globex.io", roles=("analyst",), attributes={"tenant": "globex"})
IVAN = Principal("ivan@acme.io", roles=("iam_admin",), attributes={"tenant": "acme"})
BOT = Principal(
    "agent:export-bot",
    kind="agent",
    roles=("analyst",),
    attributes={"tenant": "acme", "owner": "alice@acme.io", "owner_mfa": True},
)
CUSTOMERS = Resource(
    "customer_table",
    id="crm.customers",
    attributes={"tenant": "acme"},
    fields=(
        Field("customers.*.id", ("pii.customer_id",)),
        Field("customers.*.email", ("pii.email",)),
        Field("customers.*.country"),
    ),
)
DB_ADMIN = Resource("iam_role", id="roles/db-admin", attributes={"tenant": "acme"})

# Valid, invalid and approval-requiring checks; the server runs at night, when the agent's
# export and every prod role grant are held for sign-off.
ITEMS = {
    "read": CheckItem(ALICE, "read", CUSTOMERS, PROD, {"row_limit": 20}),
    "export masked": CheckItem(ALICE, "export", CUSTOMERS, PROD, {"target": "s3://a/b"}),
    "explained": CheckItem(ALICE, "export", CUSTOMERS, PROD, explain=True),
    "other tenant": CheckItem(EVE, "read", CUSTOMERS, PROD),
    "agent export held": CheckItem(BOT, "export", CUSTOMERS, PROD, {"target": "s3://a/b"}),
    "grant held": CheckItem(
        IVAN, "grant_role", DB_ADMIN, PROD, {"grantee": "bob@acme.io", "role": "db-admin"}
    ),
    "unknown approval": CheckItem(BOT, "export", CUSTOMERS, PROD, approval_id="apr_nothing"),
    "no principal id": CheckItem(Principal(""), "read", CUSTOMERS, PROD),
    "no action": CheckItem(ALICE, "", CUSTOMERS, PROD),
    "undeclared attribute": CheckItem(
        Principal("alice@acme.io", roles=("analyst",), attributes={"shoe_size": 42}),
        "read",
        CUSTOMERS,
    ),
    "empty path segment": CheckItem(
        ALICE, "read", Resource("customer_table", fields=(Field("a..b"),))
    ),
    "mistyped payload": CheckItem(ALICE, "read", CUSTOMERS, PROD, {"row_limit": "twenty"}),
}

# One caller: a single check, or a check_batch of a few items.
Call = tuple[str, tuple[str, ...]]
calls = st.one_of(
    st.builds(lambda name: ("check", (name,)), st.sampled_from(sorted(ITEMS))),
    st.builds(
        lambda names: ("batch", tuple(names)),
        st.lists(st.sampled_from(sorted(ITEMS)), min_size=1, max_size=3),
    ),
)
mixes = st.lists(calls, min_size=2, max_size=8)


def normal(outcome: Any) -> Any:
    """What must agree: everything but the ids that are new on every decision."""
    if isinstance(outcome, list):
        return [normal(item) for item in outcome]
    if isinstance(outcome, Decision):
        view = outcome.to_dict()
        view["decision_id"] = bool(view["decision_id"])
        view["approval_id"] = bool(view.get("approval_id"))
        return view
    if isinstance(outcome, ItemFailure):
        return outcome
    assert isinstance(outcome, SignoffClientError), outcome
    return (type(outcome).__name__, str(outcome))


def ask(client: SignoffClient, call: Call) -> Any:
    kind, names = call
    items = [ITEMS[name] for name in names]
    try:
        return client.check_item(items[0]) if kind == "check" else client.check_batch(items)
    except SignoffClientError as err:
        return err


class CountCalls(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Counts the CheckBatch calls (the coalescing client's; the unary one sends none) and
    those the server refused with RESOURCE_EXHAUSTED."""

    def __init__(self) -> None:
        self.batches = 0
        self.exhausted = 0

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.method != CHECK_BATCH:
            return continuation(client_call_details, request)
        self.batches += 1
        outcome = continuation(client_call_details, request)
        outcome.add_done_callback(self._done)
        return outcome

    def _done(self, outcome: Any) -> None:
        if outcome.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            self.exhausted += 1


@pytest.fixture(scope="module")
def unary(approvals_address: str) -> Iterator[SignoffClient]:
    with SignoffClient(approvals_address, coalescing=None) as client:
        yield client


def test_coalesced_threads_get_the_answers_and_errors_of_unary_calls(
    approvals_address: str, unary: SignoffClient
) -> None:
    counter = CountCalls()
    channel = grpc.intercept_channel(grpc.insecure_channel(approvals_address), counter)
    # A wide window, so the callers that queue behind the first call go together.
    coalesced = SignoffClient(approvals_address, channel=channel, coalescing=Coalescing(0.05))

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mixes)
    def check(mix: list[Call]) -> None:
        expected = [normal(ask(unary, call)) for call in mix]
        got: list[Any] = [None] * len(mix)
        start = threading.Barrier(len(mix))

        def run(i: int) -> None:
            start.wait()
            got[i] = normal(ask(coalesced, mix[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(mix))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert got == expected

    try:
        check()
    finally:
        coalesced.close()
        channel.close()
    # Some calls carried several callers' checks: coalescing was exercised, not bypassed.
    assert counter.batches > 0


def test_coalesced_tasks_get_the_answers_and_errors_of_unary_calls(
    approvals_address: str, unary: SignoffClient
) -> None:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mixes)
    def check(mix: list[Call]) -> None:
        expected = [normal(ask(unary, call)) for call in mix]

        async def one(client: AsyncSignoffClient, call: Call) -> Any:
            kind, names = call
            items = [ITEMS[name] for name in names]
            try:
                if kind == "check":
                    return await client.check_item(items[0])
                return await client.check_batch(items)
            except SignoffClientError as err:
                return err

        async def main() -> list[Any]:
            async with AsyncSignoffClient(approvals_address) as client:
                return await asyncio.gather(*(one(client, call) for call in mix))

        assert [normal(outcome) for outcome in asyncio.run(main())] == expected

    check()


VOLATILE = ("at", "decision_id", "entry_id", "hash", "prev", "seq", "trace_id")


def audit_records(audit: AuditLog) -> list[str]:
    """The decision records, without what is new on every record, in a stable order."""
    assert audit.flush(10.0)
    out = io.StringIO()
    audit.export("decisions", None, None, out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return sorted(
        json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True)
        for r in records
    )


AUDITED = ["read", "export masked", "explained", "other tenant"] * 3


def records_of(coalescing: Coalescing | None, counter: CountCalls) -> list[str]:
    """The audit records a server with a fresh trail keeps of AUDITED, asked all at once."""
    prefix = f"signoff:test:coalesce-audit:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    running = app.start(
        Engine(bundled(), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        audit=audit,
        views=Views(hash_key=KEY, hash_key_id=KEY_ID),
    )
    address = f"127.0.0.1:{running.port}"
    channel = grpc.intercept_channel(grpc.insecure_channel(address), counter)
    client = SignoffClient(address, channel=channel, coalescing=coalescing)
    start = threading.Barrier(len(AUDITED))

    def run(name: str) -> None:
        start.wait()
        client.check_item(ITEMS[name])

    try:
        threads = [threading.Thread(target=run, args=(name,)) for name in AUDITED]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return audit_records(audit)
    finally:
        client.close()
        channel.close()
        running.stop(grace=None)
        audit.close(timeout=1.0)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def test_coalesced_checks_leave_the_audit_records_unary_checks_leave() -> None:
    counter = CountCalls()
    unary = records_of(None, counter)
    assert counter.batches == 0
    coalesced = records_of(Coalescing(0.05), counter)
    assert counter.batches > 0
    assert len(unary) == len(AUDITED)
    assert coalesced == unary


def test_a_server_taking_smaller_messages_than_the_clients_batches_still_answers_each_check() -> (
    None
):
    # Each check is about 700 bytes and fits the server's 3000; five queued together do not.
    # The server refuses that batch whole, before deciding anything; the client resends the
    # checks in smaller batches, and every caller gets the answer a plain Check gets.
    wide = Resource(
        "customer_table",
        id="crm.customers",
        attributes={"tenant": "acme"},
        fields=tuple(Field(f"customers.*.{'x' * 150}{n}") for n in range(4)),
    )
    asked = CheckItem(ALICE, "read", wide, PROD, {"row_limit": 20})
    counter = CountCalls()
    with serving(limits=Limits(max_message_bytes=3000)) as running:
        address = f"127.0.0.1:{running.port}"
        with SignoffClient(address, coalescing=None) as unary:
            expected = normal(unary.check_item(asked))
        channel = grpc.intercept_channel(grpc.insecure_channel(address), counter)
        client = SignoffClient(address, channel=channel, coalescing=Coalescing(0.05))
        got: list[Any] = [None] * 12
        start = threading.Barrier(len(got))

        def run(i: int) -> None:
            start.wait()
            try:
                got[i] = normal(client.check_item(asked))
            except SignoffClientError as err:
                got[i] = normal(err)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(got))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            client.close()
            channel.close()
    assert got == [expected] * len(got)
    assert counter.exhausted >= 1  # a batch was refused, and its checks answered all the same


def test_under_load_every_coalesced_check_ends_by_its_own_deadline_with_the_unary_answer(
    signoff_address: str,
) -> None:
    # 16 threads, each asking 25 checks with timeouts from half a millisecond to a second:
    # whatever is coalesced with what, each check gets the unary answer or DEADLINE_EXCEEDED,
    # and returns by its own deadline (plus slack for a loaded machine), never by another's.
    names = ["read", "export masked", "other tenant", "no action", "explained"]
    with SignoffClient(signoff_address, coalescing=None) as unary:
        expected = {name: normal(ask(unary, ("check", (name,)))) for name in names}
    client = SignoffClient(signoff_address)
    late: list[str] = []
    wrong: list[str] = []
    timed_out = 0

    def run(seed: int) -> None:
        nonlocal timed_out
        rng = random.Random(seed)
        for _ in range(25):
            name = rng.choice(names)
            timeout = rng.choice([0.0005, 0.002, 0.01, 1.0])
            began = time.monotonic()
            try:
                got = normal(client.check_item(ITEMS[name], timeout=timeout))
            except SignoffRpcError as err:
                if err.code == "DEADLINE_EXCEEDED":
                    timed_out += 1
                    got = expected[name]
                else:
                    got = normal(err)
            took = time.monotonic() - began
            if took > timeout + 1.0:
                late.append(f"{name} took {took:.3f} s of {timeout} s")
            if got != expected[name]:
                wrong.append(name)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        client.close()
    assert not late
    assert not wrong
    assert timed_out > 0  # the tiny timeouts did run out, some while queued
