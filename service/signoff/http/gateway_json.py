"""Reading JSON bodies on the HTTP surface: bounded, strict, and refused by field when bad."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from signoff.errors import InvalidRequest
from signoff.http.errors import BodyTooLarge
from signoff.limits import MAX_STRUCT_DEPTH, Limits, step

# The bound gRPC requests have too: a request means the same over gRPC and HTTP.
MAX_DEPTH = MAX_STRUCT_DEPTH


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have: refused at the edge.
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: Request, limits: Limits) -> dict[str, Any]:
    """The request body as a JSON object; InvalidRequest (field "body") for anything else."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise InvalidRequest("content-type", "must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_message_bytes:
        raise BodyTooLarge("body", f"larger than {limits.max_message_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_message_bytes:
            raise BodyTooLarge("body", f"larger than {limits.max_message_bytes} bytes")
        chunks.append(chunk)
    try:
        value = json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidRequest("body", f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body", "is not valid JSON (UTF-8)") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return value


def checked(value: Any, field: str, limits: Limits, depth: int = 1) -> Any:
    """`value` (a parsed JSON object or list) after checking nesting and numbers; objects
    count from 1, as protobuf Structs do over gRPC."""
    if depth == 1 and len(json.dumps(value)) > limits.max_struct_bytes:
        raise InvalidRequest(field, f"larger than {limits.max_struct_bytes} bytes")
    if depth > MAX_DEPTH:
        raise InvalidRequest(field, f"nested deeper than {MAX_DEPTH} levels of objects and lists")
    if isinstance(value, dict):
        for key, item in value.items():
            checked(item, field + step(key), limits, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            checked(item, f"{field}[{i}]", limits, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        # 1e400 parses as infinity: JSON has no such number, nor do the digest and the audit.
        raise InvalidRequest(field, "not a finite number (NaN and Infinity are not JSON)")
    return value


def obj(parent: dict[str, Any], key: str, field: str, *, required: bool = False) -> dict[str, Any]:
    """`parent[key]` as an object ({} when absent and not required)."""
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidRequest(field, "is required")
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(field, "must be an object")
    return value


def text(
    parent: dict[str, Any], key: str, field: str, limits: Limits, *, required: bool = False
) -> str:
    """`parent[key]` as a string of at most max_id_length characters ("" when absent)."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise InvalidRequest(field, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(field, "must be a string")
    if len(value) > limits.max_id_length:
        raise InvalidRequest(field, f"longer than {limits.max_id_length} characters")
    if "\x00" in value:
        raise InvalidRequest(field, "contains a NUL character")
    return value
