"""Worker threads: unary calls and response streams (approval watches) on separate budgets."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeAlias

import grpc

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def streams_pool(streams: int) -> futures.ThreadPoolExecutor:
    """The threads response streams run on: one per allowed stream, and one more, so a stream
    past the limit is refused at once instead of waiting for a thread to free up."""
    return futures.ThreadPoolExecutor(max_workers=streams + 1, thread_name_prefix="grpc-stream")


def on_pool(handler: _Handler | None, pool: futures.ThreadPoolExecutor) -> _Handler | None:
    """`handler`, run on `pool` if it streams its responses; other handlers unchanged.

    A watch holds its thread for as long as it is open: on the server's own pool, `--workers`
    open watches would leave no thread for checks. grpc runs a behavior on the pool named by
    its `experimental_thread_pool` attribute when it has one.
    """
    if handler is None or not handler.response_streaming:
        return handler
    inner: Callable[[Any, grpc.ServicerContext], Any] | None = (
        handler.unary_stream if handler.unary_stream is not None else handler.stream_stream
    )
    assert inner is not None  # a response-streaming handler has one of the two
    if getattr(inner, "experimental_thread_pool", None) is pool:
        return handler

    def run(request: Any, context: grpc.ServicerContext) -> Any:
        return inner(request, context)

    run.experimental_thread_pool = pool  # type: ignore[attr-defined]
    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream is not None
        else grpc.stream_stream_rpc_method_handler
    )
    return make(run, handler.request_deserializer, handler.response_serializer)


class StreamsOnPool(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """`inner` (an interceptor that wraps handlers, e.g. tracing's), keeping response streams
    on `pool`: the handler it makes in place of ours would otherwise lose the pool."""

    def __init__(
        self,
        inner: grpc.ServerInterceptor,  # type: ignore[type-arg]
        pool: futures.ThreadPoolExecutor,
    ) -> None:
        self._inner = inner
        self._pool = pool

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        made: _Handler | None = self._inner.intercept_service(continuation, handler_call_details)
        return on_pool(made, self._pool)
