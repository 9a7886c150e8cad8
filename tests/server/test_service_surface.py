"""The server's surface: every declared RPC implemented, standard health checking, reflection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from signoff.v1 import signoff_pb2 as pb
from tests.server.harness import TIMEOUT

SERVICE = pb.DESCRIPTOR.services_by_name["DecisionService"]
METHODS = list(SERVICE.methods)


def _status_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


def test_the_service_declares_check_and_check_batch() -> None:
    # Guards the parametrization below against silently testing nothing.
    assert {method.name for method in METHODS} >= {"Check", "CheckBatch"}


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_every_declared_rpc_is_implemented(channel: grpc.Channel, method: Any) -> None:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{SERVICE.full_name}/{method.name}"
    assert not method.client_streaming
    assert not method.server_streaming
    call = channel.unary_unary(
        path,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )

    code = _status_of(lambda: call(request_class(), timeout=TIMEOUT))

    assert code not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN)


def test_an_undeclared_method_is_unimplemented(channel: grpc.Channel) -> None:
    # The counterpart of the test above: the server does report UNIMPLEMENTED when it applies.
    call = channel.unary_unary(
        f"/{SERVICE.full_name}/NoSuchMethod",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=pb.CheckResponse.FromString,
    )

    with pytest.raises(grpc.RpcError) as info:
        call(pb.CheckRequest(), timeout=TIMEOUT)

    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("service", ["", "signoff.v1.DecisionService"])
def test_health_check_reports_serving(channel: grpc.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)

    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel: grpc.Channel, request: Any) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    assert len(responses) == 1
    return responses[0]


def test_reflection_lists_the_decision_health_and_reflection_services(
    channel: grpc.Channel,
) -> None:
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in response.list_services_response.service}
    assert names >= {
        "signoff.v1.DecisionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_reflection_returns_the_file_declaring_the_decision_service(
    channel: grpc.Channel,
) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="signoff.v1.DecisionService"
    )

    response = _reflect(channel, request)

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    assert "signoff/v1/signoff.proto" in by_name
    declared = by_name["signoff/v1/signoff.proto"]
    assert declared.package == "signoff.v1"
    services = {s.name: [m.name for m in s.method] for s in declared.service}
    assert services == {"DecisionService": [m.name for m in METHODS]}


def test_reflection_of_an_unknown_symbol_is_an_error_response(channel: grpc.Channel) -> None:
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")

    response = _reflect(channel, request)

    assert response.WhichOneof("message_response") == "error_response"
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
