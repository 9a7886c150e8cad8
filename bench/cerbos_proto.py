"""The few Cerbos protobuf messages the benchmarks use, built from descriptors (no Cerbos SDK)."""

from __future__ import annotations

from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)
from google.protobuf.message import Message

# Field numbers and names as in Cerbos's public protos (cerbos/engine/v1/engine.proto,
# cerbos/request/v1/request.proto, cerbos/response/v1/response.proto, cerbos/effect/v1).
# Only the fields the benchmarks set or read are declared; the wire format ignores the rest.
CHECK_RESOURCES = "/cerbos.svc.v1.CerbosService/CheckResources"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BOOL, _MESSAGE, _ENUM = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_MESSAGE, _F.TYPE_ENUM
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    type_name: str = "",
    repeated: bool = False,
) -> None:
    f = msg.field.add(name=name, number=number, type=kind)
    f.label = _REPEATED if repeated else _OPTIONAL
    if type_name:
        f.type_name = type_name


def _map_entry(
    msg: descriptor_pb2.DescriptorProto, entry: str, value: int, value_type: str
) -> None:
    nested = msg.nested_type.add(name=entry)
    nested.options.map_entry = True
    _field(nested, "key", 1, _STRING)
    _field(nested, "value", 2, value, value_type)


def _attr_map(msg: descriptor_pb2.DescriptorProto, number: int, scope: str) -> None:
    _map_entry(msg, "AttrEntry", _MESSAGE, ".google.protobuf.Value")
    _field(msg, "attr", number, _MESSAGE, f".{scope}.AttrEntry", repeated=True)


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    struct = "google/protobuf/struct.proto"

    effect = descriptor_pb2.FileDescriptorProto(
        name="cerbos/effect/v1/effect.proto", package="cerbos.effect.v1", syntax="proto3"
    )
    enum = effect.enum_type.add(name="Effect")
    for name, number in (
        ("EFFECT_UNSPECIFIED", 0),
        ("EFFECT_ALLOW", 1),
        ("EFFECT_DENY", 2),
        ("EFFECT_NO_MATCH", 3),
    ):
        enum.value.add(name=name, number=number)

    engine = descriptor_pb2.FileDescriptorProto(
        name="cerbos/engine/v1/engine.proto",
        package="cerbos.engine.v1",
        syntax="proto3",
        dependency=[struct],
    )
    principal = engine.message_type.add(name="Principal")
    _field(principal, "id", 1, _STRING)
    _field(principal, "policy_version", 2, _STRING)
    _field(principal, "roles", 3, _STRING, repeated=True)
    _attr_map(principal, 4, "cerbos.engine.v1.Principal")
    _field(principal, "scope", 5, _STRING)
    resource = engine.message_type.add(name="Resource")
    _field(resource, "kind", 1, _STRING)
    _field(resource, "policy_version", 2, _STRING)
    _field(resource, "id", 3, _STRING)
    _attr_map(resource, 4, "cerbos.engine.v1.Resource")
    _field(resource, "scope", 5, _STRING)

    request = descriptor_pb2.FileDescriptorProto(
        name="cerbos/request/v1/request.proto",
        package="cerbos.request.v1",
        syntax="proto3",
        dependency=[engine.name],
    )
    check = request.message_type.add(name="CheckResourcesRequest")
    entry = check.nested_type.add(name="ResourceEntry")
    _field(entry, "actions", 1, _STRING, repeated=True)
    _field(entry, "resource", 2, _MESSAGE, ".cerbos.engine.v1.Resource")
    _field(check, "request_id", 1, _STRING)
    _field(check, "include_meta", 2, _BOOL)
    _field(check, "principal", 3, _MESSAGE, ".cerbos.engine.v1.Principal")
    _field(
        check,
        "resources",
        4,
        _MESSAGE,
        ".cerbos.request.v1.CheckResourcesRequest.ResourceEntry",
        repeated=True,
    )

    response = descriptor_pb2.FileDescriptorProto(
        name="cerbos/response/v1/response.proto",
        package="cerbos.response.v1",
        syntax="proto3",
        dependency=[effect.name],
    )
    resp = response.message_type.add(name="CheckResourcesResponse")
    result = resp.nested_type.add(name="ResultEntry")
    res = result.nested_type.add(name="Resource")
    for i, name in enumerate(("id", "kind", "policy_version", "scope"), start=1):
        _field(res, name, i, _STRING)
    scope = "cerbos.response.v1.CheckResourcesResponse.ResultEntry"
    _map_entry(result, "ActionsEntry", _ENUM, ".cerbos.effect.v1.Effect")
    _field(result, "resource", 1, _MESSAGE, f".{scope}.Resource")
    _field(result, "actions", 2, _MESSAGE, f".{scope}.ActionsEntry", repeated=True)
    _field(resp, "request_id", 1, _STRING)
    _field(resp, "results", 2, _MESSAGE, f".{scope}", repeated=True)
    _field(resp, "cerbos_call_id", 3, _STRING)
    return [effect, engine, request, response]


def _classes() -> tuple[type[Message], type[Message]]:
    # A private pool, so these never collide with a Cerbos SDK loaded in the same process.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(struct_pb2.DESCRIPTOR.serialized_pb))
    for f in _files():
        pool.Add(f)
    request = pool.FindMessageTypeByName("cerbos.request.v1.CheckResourcesRequest")
    response = pool.FindMessageTypeByName("cerbos.response.v1.CheckResourcesResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


CheckResourcesRequest, CheckResourcesResponse = _classes()


def check_resources_request(body: dict[str, Any]) -> Message:
    """A CheckResourcesRequest from its JSON form (camelCase or proto field names)."""
    return json_format.ParseDict(body, CheckResourcesRequest())


def effects(response: bytes) -> list[tuple[str, dict[str, str]]]:
    """(resource id, action -> effect name such as EFFECT_ALLOW), in response order."""
    msg = CheckResourcesResponse.FromString(response)
    body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return [(r["resource"]["id"], dict(r.get("actions", {}))) for r in body.get("results", [])]
