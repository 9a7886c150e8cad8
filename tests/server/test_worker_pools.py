"""Response streams (approval watches) run on threads of their own, never the workers'."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from signoff.server.parsing import ParsingServer, RequestParsing
from signoff.server.pool import StreamsOnPool, on_pool, streams_pool

SERVICE = "test.Pools"
Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


class Rewrapping(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Like the tracing interceptor: hands out a new handler around the one it is given."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_stream is None:
            return handler
        inner = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(
            lambda request, context: inner(request, context),
            handler.request_deserializer,
            handler.response_serializer,
        )


def _serve(
    streams: int, *, intercepted: bool
) -> tuple[grpc.Server, int, threading.Event, futures.ThreadPoolExecutor]:
    release = threading.Event()
    pool = streams_pool(streams)

    def hold(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield Response(status=Response.SERVING)
        release.wait(30)

    def answer(request: Any, context: grpc.ServicerContext) -> Any:
        return Response(status=Response.SERVING)

    handlers = {
        "Hold": grpc.unary_stream_rpc_method_handler(
            hold, Request.FromString, Response.SerializeToString
        ),
        "Answer": grpc.unary_unary_rpc_method_handler(
            answer, Request.FromString, Response.SerializeToString
        ),
    }
    interceptors: list[grpc.ServerInterceptor[Any, Any]] = (
        [StreamsOnPool(Rewrapping(), pool)] if intercepted else []
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],
    )
    ParsingServer(server, RequestParsing(lambda method: None), pool).add_registered_method_handlers(
        SERVICE, handlers
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, release, pool


@pytest.mark.parametrize("intercepted", [False, True], ids=["untraced", "traced"])
def test_open_streams_leave_the_single_worker_to_unary_calls(intercepted: bool) -> None:
    server, port, release, pool = _serve(3, intercepted=intercepted)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            hold: Callable[..., Any] = channel.unary_stream(
                f"/{SERVICE}/Hold", Request.SerializeToString, Response.FromString
            )
            answer: Callable[..., Any] = channel.unary_unary(
                f"/{SERVICE}/Answer", Request.SerializeToString, Response.FromString
            )
            streams = [hold(Request(), timeout=30) for _ in range(3)]
            for stream in streams:  # each is open and holding its thread
                assert next(stream).status == Response.SERVING
            # One worker, three streams open: on a shared pool this call would wait 30 s.
            assert answer(Request(), timeout=5).status == Response.SERVING
            release.set()
            for stream in streams:
                assert list(stream) == []
    finally:
        release.set()
        server.stop(None).wait()
        pool.shutdown(wait=False)


def test_handlers_that_do_not_stream_responses_are_left_alone() -> None:
    pool = streams_pool(1)
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
    assert on_pool(handler, pool) is handler
    assert on_pool(None, pool) is None
    pool.shutdown()
