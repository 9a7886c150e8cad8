"""A burst of the largest requests a real `signoff serve` accepts leaves its memory bounded."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signoff.server.convert import Limits
from signoff.v1 import signoff_pb2 as pb
from tests.server.harness import (
    KEY,
    REDIS_URL,
    TIMEOUT,
    Served,
    allowed_read,
    drop_prefix,
    rpc_error,
    serve_process,
)

PREFIX = f"signoff:test:memory:{uuid.uuid4().hex}:"
CALLERS = 96
MiB = 1024 * 1024
# What 96 callers at the old 16 MiB message limit could send at once: 15 MiB each, ~1.4 GiB.
OLD_MAXIMUM = 15 * MiB
# The server holds ~100 MiB once started. Under the old limits the bursts below took it past
# 1.5 GiB and left ~1 GiB behind.
PEAK_GROWTH_BOUND = 250 * MiB
KEPT_GROWTH_BOUND = 120 * MiB
CHECK = "/signoff.v1.DecisionService/Check"


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    # The defaults under test: no limit flags; no dev secret or audit keys in Redis.
    env = {"SIGNOFF_HASH_KEY": KEY.decode(), "SIGNOFF_AUDIT": "off"}
    try:
        with serve_process("--address", "127.0.0.1:0", prefix=PREFIX, env=env) as served:
            yield served
    finally:
        drop_prefix(redis.Redis.from_url(REDIS_URL), PREFIX)


def _memory(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of `pid`, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                out[name] = int(value.split()[0]) * 1024
    return out


def _request_of(size: int) -> bytes:
    """A CheckRequest of exactly `size` bytes, nearly all of it one payload string."""
    request = allowed_read()
    request.payload["blob"] = ""
    length = size - request.ByteSize()
    # Length prefixes grow with the string: shrink it by what the first guess overshoots.
    for _ in range(3):
        request.payload["blob"] = "x" * length
        length -= request.ByteSize() - size
    raw = request.SerializeToString()
    assert len(raw) == size, len(raw)
    return raw


def _burst(port: int, body: bytes) -> Counter[str]:
    """CALLERS concurrent calls, one connection each, all sending `body`; their status codes."""

    def one(_: int) -> str:
        options = [("grpc.max_send_message_length", 64 * MiB)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            try:
                channel.unary_unary(CHECK, None, None)(body, timeout=20.0)
            except grpc.RpcError as error:
                # Every RpcError a channel raises is also its grpc.Call.
                return str(cast(grpc.Call, error).code().name)
            return "OK"

    with ThreadPoolExecutor(CALLERS) as pool:
        return Counter(pool.map(one, range(CALLERS)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_burst_of_maximum_size_requests_keeps_server_memory_bounded(server: Served) -> None:
    before = _memory(server.process.pid)
    largest = Limits().max_message_bytes

    at_limit = _burst(server.port, _request_of(largest))
    over_limit = _burst(server.port, _request_of(OLD_MAXIMUM))

    after = _memory(server.process.pid)
    assert after["VmHWM"] - before["VmRSS"] < PEAK_GROWTH_BOUND, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < KEPT_GROWTH_BOUND, (before, after)
    # Each request at the limit is read and answered (its payload is over the 256 KiB Struct
    # bound); each one past it is refused before its body is read.
    assert at_limit == Counter({"INVALID_ARGUMENT": CALLERS})
    assert over_limit == Counter({"RESOURCE_EXHAUSTED": CALLERS})
    assert server.process.poll() is None


def test_message_and_concurrency_limits_come_from_the_environment_and_flags() -> None:
    env = {
        "SIGNOFF_HASH_KEY": KEY.decode(),
        "SIGNOFF_AUDIT": "off",
        "SIGNOFF_MAX_MESSAGE_BYTES": str(64 * 1024),
    }
    args = ("--address", "127.0.0.1:0", "--max-concurrent-rpcs", "1")
    try:
        with (
            serve_process(*args, prefix=PREFIX, env=env) as served,
            grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel,
        ):
            check = channel.unary_unary(CHECK, None, None)
            small = check(_request_of(64 * 1024), timeout=TIMEOUT)
            large = rpc_error(lambda: check(_request_of(64 * 1024 + 1), timeout=TIMEOUT))
            # An open health watch is the one call admitted; a check meanwhile is refused.
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
            next(watch)
            crowded = rpc_error(lambda: check(allowed_read().SerializeToString(), timeout=TIMEOUT))
            watch.cancel()
            deadline = time.monotonic() + TIMEOUT
            while True:  # the server frees the slot as soon as it sees the cancellation
                try:
                    check(allowed_read().SerializeToString(), timeout=TIMEOUT)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
    finally:
        drop_prefix(redis.Redis.from_url(REDIS_URL), PREFIX)

    assert pb.CheckResponse.FromString(small).verdict == pb.VERDICT_ALLOW
    assert large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert crowded.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
