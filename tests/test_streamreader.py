"""The consumer-group reader shared by the notifier and the auditor, against real Redis."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from signoff.streamreader import StreamGroupReader
from tests.notifier.support import redis_url

log = logging.getLogger("tests.streamreader")
MakeReader = Callable[..., StreamGroupReader]


def add(r: redis.Redis, stream: str, n: str) -> str:
    return str(r.xadd(stream, {"n": n}))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with redis_url() as found:
        yield found


# Both reply shapes: RESP2 lists, and RESP3 maps with one more level of nesting.
@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(url: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, decode_responses=True, protocol=request.param)
    yield client
    client.close()


@pytest.fixture
def stream(r: redis.Redis) -> Iterator[str]:
    key = f"signoff:test:{uuid.uuid4().hex}"
    yield key
    r.delete(key)


@pytest.fixture
def make_reader(r: redis.Redis, stream: str) -> MakeReader:
    def make(
        consumer: str = "a", *, group: str = "g", start: str = "0", claim_min_idle_ms: int = 0
    ) -> StreamGroupReader:
        return StreamGroupReader(
            r,
            stream,
            group,
            consumer,
            start=start,
            batch_size=10,
            claim_min_idle_ms=claim_min_idle_ms,
            log=log,
        )

    return make


def test_a_group_starts_at_new_entries_or_at_the_beginning_as_told(
    r: redis.Redis, stream: str, make_reader: MakeReader
) -> None:
    first = add(r, stream, "1")
    from_now = make_reader(group="late", start="$")
    from_now.ensure_group()
    whole = make_reader(start="0")
    whole.ensure_group()
    second = add(r, stream, "2")

    assert from_now.read_new(0) == [(second, {"n": "2"})]
    assert whole.read_new(0) == [(first, {"n": "1"}), (second, {"n": "2"})]


def test_creating_the_group_twice_is_harmless(make_reader: MakeReader) -> None:
    reader = make_reader()
    reader.ensure_group()
    reader.ensure_group()

    assert reader.group_ready


def test_an_entry_deleted_after_delivery_comes_back_from_the_pending_list_without_fields(
    r: redis.Redis, stream: str, make_reader: MakeReader
) -> None:
    reader = make_reader()
    reader.ensure_group()
    kept = add(r, stream, "1")
    gone = add(r, stream, "2")
    assert len(reader.read_new(0)) == 2
    r.xdel(stream, gone)

    assert reader.read_own_pending() == [(kept, {"n": "1"}), (gone, None)]
    reader.ack(kept)
    reader.ack(gone)
    assert reader.read_own_pending() == []


def test_claim_takes_over_idle_entries_and_names_those_already_trimmed(
    r: redis.Redis, stream: str, make_reader: MakeReader
) -> None:
    crashed, peer = make_reader("crashed"), make_reader("peer")
    crashed.ensure_group()
    kept = add(r, stream, "1")
    gone = add(r, stream, "2")
    assert len(crashed.read_new(0)) == 2
    r.xdel(stream, gone)

    assert peer.claim() == ([(kept, {"n": "1"})], [gone])
    assert peer.read_own_pending() == [(kept, {"n": "1"})]


def test_refreshed_entries_are_not_taken_over(
    r: redis.Redis, stream: str, make_reader: MakeReader
) -> None:
    owner, peer = make_reader("owner"), make_reader("peer", claim_min_idle_ms=300)
    owner.ensure_group()
    entry = add(r, stream, "1")
    owner.read_new(0)
    time.sleep(0.35)
    owner.refresh([entry])
    owner.refresh([])  # nothing to refresh is not an error

    assert peer.claim() == ([], [])


def test_a_deleted_group_is_recreated_and_other_errors_are_raised(
    r: redis.Redis, stream: str, make_reader: MakeReader, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_reader()
    reader.ensure_group()
    r.delete(stream)
    with pytest.raises(redis.ResponseError) as missing:
        reader.read_new(0)

    with caplog.at_level(logging.WARNING, logger=log.name):
        reader.recreate_missing_group(missing.value)
    entry = add(r, stream, "1")

    assert "consumer group g vanished; recreating it" in caplog.text
    assert reader.read_new(0) == [(entry, {"n": "1"})]
    other = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        reader.recreate_missing_group(other)
