"""Requests are parsed in their handlers: bytes that are no valid message are INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from signoff.errors import InvalidRequest
from signoff.server.pool import on_pool
from signoff.server.status import abort

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Behavior = Callable[[Any, grpc.ServicerContext], Any]


class RequestParsing(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Takes request parsing over from grpc for every RPC of the server.

    grpc parses before the handler runs: on bytes that are not a message (invalid UTF-8,
    truncated, nested past protobuf's limit) it logs a traceback and answers INTERNAL. Here the
    handler gets the raw bytes and parses them itself, answering INVALID_ARGUMENT and counting
    the call with `on_malformed(method)` instead.

    It must be the server's last interceptor: it remembers the handler it made for each method,
    and hands it out again without asking the interceptors after it.
    """

    def __init__(self, on_malformed: Callable[[str], None]) -> None:
        self._on_malformed = on_malformed
        self._made: dict[str, _Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        method = handler_call_details.method
        made = self._made.get(method)
        if made is not None:
            return made
        return self.handler(method, continuation(handler_call_details))

    def handler(self, method: str, handler: _Handler | None) -> _Handler | None:
        """`handler` of `method` ("/package.Service/Method") parsing its own requests."""
        made = self._made.get(method)
        if made is not None:
            return made
        if handler is None or handler.request_deserializer is None:
            return handler
        made = self._wrap(method.lstrip("/"), handler)
        # Only methods the server implements get here: a bounded set, made once each (a race
        # makes one twice, harmlessly).
        self._made[method] = made
        return made

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        parse = handler.request_deserializer
        assert parse is not None  # intercept_service passes such handlers on untouched
        message = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        name = message.full_name if message is not None else "request"
        refusal = f"not a valid {name} message"

        def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                return parse(raw)
            except DecodeError:
                # The parser's text may quote the bytes: the caller and the count get the type.
                self._on_malformed(method)
                abort(context, InvalidRequest("request", refusal))

        def unary(behavior: _Behavior) -> _Behavior:
            def run(raw: bytes, context: grpc.ServicerContext) -> Any:
                return behavior(parsed(raw, context), context)

            return run

        def streaming(behavior: _Behavior) -> _Behavior:
            def run(raws: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                return behavior((parsed(raw, context) for raw in raws), context)

            return run

        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), None, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                unary(handler.unary_stream), None, serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                streaming(handler.stream_unary), None, serialize
            )
        assert handler.stream_stream is not None  # the one kind left
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream), None, serialize
        )


class ParsingServer:
    """`server` as the generated `add_*_to_server` functions see it: every handler registered
    through it parses its own requests as RequestParsing's do, with no interceptor. A server
    without interceptors runs no interceptor pipeline per call, which costs every call more
    than most handlers take; tracing, when spans are exported, stays an interceptor around
    these handlers (so its span still covers a refused request). With `streams`, handlers
    streaming their responses run on that pool (pool.py), not on the server's workers."""

    def __init__(
        self,
        server: grpc.Server,
        parsing: RequestParsing,
        streams: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self._server = server
        self._parsing = parsing
        self._streams = streams

    def _made(self, method: str, handler: _Handler | None) -> _Handler | None:
        made = self._parsing.handler(method, handler)
        return made if self._streams is None else on_pool(made, self._streams)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, _Handler]) -> None:
        wrapped = {}
        for name, handler in handlers.items():
            made = self._made(f"/{service}/{name}", handler)
            assert made is not None  # a handler in, a handler out
            wrapped[name] = made
        register: Any = self._server.add_registered_method_handlers  # type: ignore[attr-defined]
        register(service, wrapped)

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_ParsingGeneric(handler, self._made) for handler in handlers)
        )


class _ParsingGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(
        self,
        inner: grpc.GenericRpcHandler[Any, Any],
        made: Callable[[str, _Handler | None], _Handler | None],
    ) -> None:
        self._inner = inner
        self._made = made

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler | None:
        found: _Handler | None = self._inner.service(handler_call_details)
        return self._made(handler_call_details.method, found)
