"""The floor: a bare grpcio sync server answering signoff's methods with fixed response bytes.

It runs with the same server options and worker count as `signoff serve`, takes the request
bytes without parsing them and returns pre-serialized responses, so what signoff costs beyond
it is signoff's own work. The load generator cannot tell it from signoff: same method paths,
valid CheckResponse / CheckBatchResponse bytes (one decision per batch item).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

from bench.signoff_server import ServedProcess, ready_line

REPO = Path(__file__).resolve().parent.parent
CHECK = "Check"
BATCH = "CheckBatch"
SERVICE = "signoff.v1.DecisionService"


def _responses() -> tuple[bytes, bytes]:
    from signoff.v1 import signoff_pb2 as pb

    decision = pb.CheckResponse(
        verdict=pb.VERDICT_ALLOW,
        decision_id="00000000-0000-4000-8000-000000000000",
        policy_revision="0" * 64,
        matched_rules=["echo"],
    )
    # A batch answer grows with the batch: one result per item, counted on the wire.
    return decision.SerializeToString(), pb.CheckBatchResult(decision=decision).SerializeToString()


def _count_items(raw: bytes) -> int:
    """Items of a CheckBatchRequest: field 1, length-delimited, walked without parsing them."""
    count, pos, end = 0, 0, len(raw)
    while pos < end:
        tag, pos = _varint(raw, pos)
        kind = tag & 7
        if kind == 2:
            size, pos = _varint(raw, pos)
            pos += size
            count += tag >> 3 == 1
        elif kind == 0:
            _, pos = _varint(raw, pos)
        else:
            pos += 8 if kind == 1 else 4
    return count


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def serve(port: int, workers: int) -> tuple[Any, int]:
    """An echo server on 127.0.0.1:`port` (0: a free one); returns (server, port)."""
    import grpc

    from signoff.server import wire
    from signoff.server.app import MAX_RESPONSE_BYTES

    check, result = _responses()
    framed = wire.field(1, result)  # CheckBatchResponse.results

    def on_check(raw: bytes, context: Any) -> bytes:
        return check

    def on_batch(raw: bytes, context: Any) -> bytes:
        return framed * _count_items(raw)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    register: Any = server.add_registered_method_handlers  # type: ignore[attr-defined]
    register(
        SERVICE,
        {
            CHECK: grpc.unary_unary_rpc_method_handler(on_check, None, None),
            BATCH: grpc.unary_unary_rpc_method_handler(on_batch, None, None),
        },
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


class EchoServer(ServedProcess):
    """A running echo server subprocess."""


def start_echo(workers: int = 8, timeout: float = 30.0) -> EchoServer:
    """An echo server in its own process (its CPU measured apart from the load's)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.echo", "--workers", str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = ready_line(proc, timeout)
    server = EchoServer(proc, 0)
    if not line.startswith("echo listening on "):
        server.stop()
        raise RuntimeError(f"echo server did not start in {timeout} s: {line!r}")
    server.port = int(line.split()[3].rsplit(":", 1)[1])
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8, help="as signoff serve's --workers")
    args = parser.parse_args(argv)
    server, port = serve(args.port, args.workers)
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
