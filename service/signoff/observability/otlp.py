"""OTLP span encoding written as protobuf wire bytes: the SDK's encoder's message, much cheaper."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_key_value,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

# Why by hand: the SDK's encoder (encode_spans) builds a protobuf object per span, attribute
# and value from Python, about 47 µs for a decision's span with its 13 attributes on the
# benchmark machine: on its export thread that took a third of a traced server's GIL time
# and most of the 0.85x budget alone. Writing the same message's wire bytes directly costs a
# few µs per span; the message is then parsed once per batch (in C) for the SDK's exporter.
# Anything this does not write itself (links, mappings and bytes values, other types) is
# encoded by the SDK's own functions, so the message is always the SDK's (tests check that).

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
# Keys and values that repeat from span to span (names, verdicts, revisions) are encoded
# once; the table is emptied when full so caller-chosen values cannot grow it without bound.
_CACHE_LIMIT = 4096
_cache: dict[tuple[int, str, type, object], bytes] = {}


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: `tag` is (field number << 3) | 2, as one byte."""
    n = len(payload)
    return (bytes((tag, n)) if n < 0x80 else bytes((tag,)) + _varint(n)) + payload


def _text(tag: int, text: str) -> bytes:
    return _len(tag, text.encode("utf-8")) if text else b""


def _any_value(value: object) -> bytes | None:
    """An AnyValue's bytes, or None for what the SDK's encoder should write. Its fields are
    a oneof, so even a zero or empty value is written."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _len(0x0A, value.encode("utf-8"))
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            return None
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        parts = []
        for item in value:
            encoded = _any_value(item)
            if encoded is None:
                return None
            parts.append(_len(0x0A, encoded))
        return _len(0x2A, b"".join(parts))
    return None


def _attribute(tag: int, key: str, value: object) -> bytes:
    """One KeyValue as the field `tag` of its message."""
    scalar = isinstance(value, (str, bool, int, float))
    # The type is part of the key: True == 1 == 1.0, but each is encoded differently.
    cache_key = (tag, key, type(value), value) if scalar else None
    if cache_key is not None:
        hit = _cache.get(cache_key)
        if hit is not None:
            return hit
    encoded = _any_value(value)
    if encoded is None:
        pair: bytes = _encode_key_value(key, value).SerializeToString()
    else:
        pair = _text(0x0A, key) + _len(0x12, encoded)
    out = _len(tag, pair)
    if cache_key is not None:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[cache_key] = out
    return out


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    # The SDK's BoundedAttributes keeps a plain dict: iterating it directly is several times
    # faster than through the Mapping interface (a __getitem__ call per key).
    items = getattr(attributes, "_dict", attributes).items()
    return b"".join([_attribute(tag, k, v) for k, v in items])


def encode_span(span: ReadableSpan) -> bytes:
    """One Span message's bytes, as the SDK's `_encode_span(span)` serializes."""
    if span.links:
        encoded: bytes = _encode_span(span).SerializeToString()
        return encoded
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        parts.append(_text(0x1A, ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_text(0x2A, span.name))
    parts.append(b"\x30" + bytes((_KIND[span.kind],)))
    start, end = span.start_time or 0, span.end_time or 0
    if start:
        parts.append(b"\x39" + _FIXED64.pack(start))
    if end:
        parts.append(b"\x41" + _FIXED64.pack(end))
    # The span's own attributes, not the read-only view `attributes` makes on each access.
    parts.append(_attributes(0x4A, getattr(span, "_attributes", None) or span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b""
        if event.timestamp:
            body += b"\x09" + _FIXED64.pack(event.timestamp)
        body += _text(0x12, event.name) + _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_len(0x5A, body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status is not None:
        body = _text(0x12, status.description or "")
        code = status.status_code.value
        if code:
            body += b"\x18" + bytes((code,))
        parts.append(_len(0x7A, body))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts.append(b"\x85\x01" + flags.to_bytes(4, "little"))
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest's bytes: the spans grouped by resource, then by scope, in
    first-seen order, as the SDK's `encode_spans` groups them."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    last_resource: object = None
    scopes: dict[Any, list[bytes]] = {}
    for span in spans:
        resource = span.resource
        if resource is not last_resource:  # equal resources share a group; hashing one is slow
            scopes = groups.setdefault(resource, {})
            last_resource = resource
        scope = span.instrumentation_scope or None
        scopes.setdefault(scope, []).append(_len(0x12, encode_span(span)))
    out = []
    for resource, by_scope in groups.items():
        body = [_len(0x0A, _encode_resource(resource).SerializeToString())]
        for scope, encoded in by_scope.items():
            scope_body = _len(0x0A, _encode_instrumentation_scope(scope).SerializeToString())
            scope_body += b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _text(0x1A, scope.schema_url)
            body.append(_len(0x12, scope_body))
        if resource.schema_url:
            body.append(_text(0x1A, resource.schema_url))
        out.append(_len(0x0A, b"".join(body)))
    return b"".join(out)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter (its settings, retries and transport) with the
    request encoded by `encode_request`."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(encode_request(data))
