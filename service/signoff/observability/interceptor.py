"""A gRPC server interceptor that opens one SERVER span per RPC and continues the caller's trace."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from signoff.observability.guard import Shield

_OK = grpc.StatusCode.OK
DEFAULT_DESCRIPTION: str = DEFAULT_ON.get_description()  # type: ignore[no-untyped-call]
_Behavior = Callable[[Any, grpc.ServicerContext], Any]


class ServerTracing(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler in a span named by the RPC's full method, e.g. `pkg.Service/Method`."""

    def __init__(
        self,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        shield: Shield,
        *,
        skip_services: Collection[str] = (),
    ) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._shield = shield
        self._skip = frozenset(skip_services)
        self._default_sampler: bool | None = None
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler]] = {}  # type: ignore[type-arg]

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
        handler = continuation(handler_call_details)
        # Only methods the server implements get here, so span names stay a bounded set.
        if handler is None:
            return None
        full = handler_call_details.method
        known = self._wrapped.get(full)
        if known is not None and known[0] is handler:
            # The same handler as before: its wrapper too. Making one per call (a handler,
            # its closures) cost each traced call more than its span's attributes.
            return known[1]
        wrapped = self._wrap(full, handler)
        if len(self._wrapped) < 1024:  # methods the server implements: a bounded set anyway
            self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _wrap(
        self,
        path: str,
        handler: grpc.RpcMethodHandler,  # type: ignore[type-arg]
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        full = path.lstrip("/")
        service, _, method = full.rpartition("/")
        if service in self._skip:
            return handler
        rpc = _Rpc(self, full, service, method)
        deser, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(rpc.single(handler.unary_unary), deser, ser)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                rpc.stream(handler.unary_stream), deser, ser
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                rpc.single(handler.stream_unary), deser, ser
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                rpc.stream(handler.stream_stream), deser, ser
            )
        return handler

    def start(
        self, full: str, service: str, method: str, metadata: Any
    ) -> _Call | None:  # None: the call runs untraced
        with self._shield("start RPC span"):
            carrier = _carrier(metadata)
            # No W3C header, nothing to extract: a new trace, as extract would have said.
            parent = self._propagator.extract(carrier) if carrier else _EMPTY
            span = self._tracer.start_span(
                full,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
                # Exception messages may quote caller data: the status code name says enough.
                record_exception=False,
                set_status_on_exception=False,
            )
            return _Call(span, trace.set_span_in_context(span, parent), self._shield)
        return None

    def trace_id(self, full: str, service: str, method: str, metadata: Any) -> str:
        """The trace id (32 hex digits, "" when unsampled) that `start` would give the call's
        span, without making one: for calls served untraced because nothing exports spans,
        whose audit records still link to the caller's trace as they did with the span."""
        with self._shield("trace id of an untraced RPC"):
            carrier = _carrier(metadata)
            tracer: Any = self._tracer
            sampler, ids = getattr(tracer, "sampler", None), getattr(tracer, "id_generator", None)
            if (
                ids is not None
                and "traceparent" not in carrier
                and self._samples_roots(sampler)
                and tracer._is_enabled()
            ):
                # No caller trace, and new traces are all sampled: a new random id, which is
                # all the sampler would say (its answer costs more than the rest).
                return trace.format_trace_id(ids.generate_trace_id())
            parent = self._propagator.extract(carrier) if carrier else None
            if sampler is None or ids is None:  # not the SDK's tracer: ask a real span
                span = self._tracer.start_span(full, context=parent, kind=SpanKind.SERVER)
                span.end()
                return _sampled_id(span.get_span_context())
            enabled = getattr(tracer, "_is_enabled", None)
            if enabled is not None and not enabled():
                return ""
            known = trace.get_current_span(parent).get_span_context()
            trace_id = known.trace_id if known.is_valid else ids.generate_trace_id()
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            sampled = sampler.should_sample(parent, trace_id, full, SpanKind.SERVER, attributes)
            return trace.format_trace_id(trace_id) if sampled.decision.is_sampled() else ""
        return ""

    def _samples_roots(self, sampler: object) -> bool:
        """Whether `sampler` (the tracer's, fixed for its life) is the SDK's default: every
        new trace sampled, callers' traces followed. Only its answer is known without asking."""
        if self._default_sampler is None:
            describe: Any = getattr(sampler, "get_description", None)
            self._default_sampler = callable(describe) and describe() == DEFAULT_DESCRIPTION
        return self._default_sampler


def _sampled_id(ctx: trace.SpanContext) -> str:
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid and ctx.trace_flags.sampled else ""


class _Rpc:
    """One method's calls: wraps its handler so a span covers each call."""

    def __init__(self, tracing: ServerTracing, full: str, service: str, method: str) -> None:
        self._tracing = tracing
        self._names = (full, service, method)

    def single(self, behavior: _Behavior) -> _Behavior:
        def traced(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._tracing.start(*self._names, context.invocation_metadata())
            if call is None:
                return behavior(request, context)
            response = _attached(call, context, lambda: behavior(request, context))
            call.finish(_status_of(context, failed=False))
            return response

        return traced

    def stream(self, behavior: _Behavior) -> _Behavior:
        def traced(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._tracing.start(*self._names, context.invocation_metadata())
            if call is None:
                return behavior(request, context)
            # grpc stops iterating a cancelled stream, so only this callback sees its end.
            with call.shield("watch RPC end"):
                context.add_callback(lambda: call.finish(_status_of(context, cancelled=True)))
            responses = _attached(call, context, lambda: behavior(request, context))
            return _TracedResponses(iter(responses), call, context)

        return traced


class _Call:
    """The span of one call; ended exactly once, whoever sees the end first."""

    def __init__(self, span: trace.Span, ctx: otel_context.Context, shield: Shield) -> None:
        self._span = span
        self._ctx = ctx
        self.shield = shield
        self._lock = threading.Lock()
        self._ended = False

    def attach(self) -> object | None:
        with self.shield("enter RPC span"):
            return otel_context.attach(self._ctx)
        return None

    def detach(self, token: object | None) -> None:
        if token is not None:
            with self.shield("leave RPC span"):
                otel_context.detach(token)  # type: ignore[arg-type]

    def finish(self, code: grpc.StatusCode) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        with self.shield("end RPC span"):
            self._span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not _OK:
                self._span.set_status(Status(StatusCode.ERROR, code.name))
            self._span.end()


class _TracedResponses(Iterator[Any]):
    """A response stream whose every step runs inside the call's span."""

    def __init__(
        self, responses: Iterator[Any], call: _Call, context: grpc.ServicerContext
    ) -> None:
        self._responses = responses
        self._call = call
        self._context = context

    def __next__(self) -> Any:
        token = self._call.attach()
        try:
            return next(self._responses)
        except StopIteration:
            self._call.finish(_status_of(self._context, failed=False))
            raise
        except BaseException:
            self._call.finish(_status_of(self._context, failed=True))
            raise
        finally:
            self._call.detach(token)


_EMPTY = otel_context.Context()
_W3C = frozenset({"traceparent", "tracestate"})


def _carrier(metadata: Any) -> dict[str, str]:
    """The W3C trace context entries of `metadata` (gRPC sends keys in lower case)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        # Binary (-bin) entries carry no W3C context; the first of a repeated key wins. The
        # propagator (W3C trace context) reads no other key.
        if isinstance(key, str) and isinstance(value, str) and key.lower() in _W3C:
            carrier.setdefault(key.lower(), value)
    return carrier


def _attached(call: _Call, context: grpc.ServicerContext, run: Callable[[], Any]) -> Any:
    """`run()` with the call's span as the current one; a raise finishes the span failed."""
    token = call.attach()
    try:
        return run()
    except BaseException:
        call.finish(_status_of(context, failed=True))
        raise
    finally:
        call.detach(token)


def _status_of(
    context: grpc.ServicerContext, *, failed: bool = False, cancelled: bool = False
) -> grpc.StatusCode:
    """The status the call ends with, as far as the server can tell."""
    code: object = None
    # grpc's servicer context has code() (set by abort and set_code); the stubs omit it.
    getter = getattr(context, "code", None)
    if callable(getter):
        try:
            code = getter()
        except Exception:
            code = None
    known = code if isinstance(code, grpc.StatusCode) else None
    if cancelled:
        return known if known is not None and known is not _OK else grpc.StatusCode.CANCELLED
    if failed:
        # abort() sets the code before raising; any other exception becomes UNKNOWN in grpc.
        return known if known is not None and known is not _OK else grpc.StatusCode.UNKNOWN
    return known if known is not None else _OK
