"""Assembles the gRPC server: decision service, health checking and reflection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from signoff.approvals.service import Approvals
from signoff.audit import AuditLog
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.identity import CallerAuthenticator
from signoff.observability import Telemetry
from signoff.server import convert
from signoff.server.admin import PolicyAdminService
from signoff.server.approvals import ApprovalService
from signoff.server.embedded import SERVICE_NAME as EMBEDDED_SERVICE_NAME
from signoff.server.embedded import Embedded, EmbeddedService
from signoff.server.parsing import ParsingServer, RequestParsing
from signoff.server.pool import StreamsOnPool, streams_pool
from signoff.server.reload import POLICY_HEALTH, LoadStatus, PolicyReloader
from signoff.server.service import DecisionService
from signoff.server.tls import ServerTLS
from signoff.v1 import admin_pb2 as adb
from signoff.v1 import admin_pb2_grpc as adb_grpc
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import embedded_pb2_grpc as epb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.views import Views

log = logging.getLogger("signoff.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
APPROVAL_SERVICE_NAME = apb.DESCRIPTOR.services_by_name["ApprovalService"].full_name
ADMIN_SERVICE_NAME = adb.DESCRIPTOR.services_by_name["PolicyAdminService"].full_name
# Responses are built here and bounded by pages and batch sizes; only requests need a tight cap.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def _uncounted(method: str) -> None:
    pass


@dataclass(frozen=True)
class Reloading:
    """Hot reload from `rules` (see reload.py); the admin RPC verifies callers with `auth`."""

    rules: Path
    backend: str
    auth: CallerAuthenticator
    make_engine: Callable[[Bundle], Engine] = Engine
    load: Callable[[], Bundle] | None = None  # default: load_bundle(rules, backend)


@dataclass
class Running:
    server: grpc.Server
    port: int
    decisions: DecisionService
    health: health.HealthServicer
    reloader: PolicyReloader | None = None
    streams: futures.ThreadPoolExecutor | None = None

    def stop(self, grace: float | None = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.streams is not None:
            self.streams.shutdown(wait=False)


def start(
    engine: Engine,
    address: str,
    *,
    hash_key_id: str,
    workers: int = 8,
    streams: int = 4,
    share_port: bool = False,
    decision_cache: int = 4096,
    limits: convert.Limits | None = None,
    approvals: Approvals | None = None,
    approval_service: ApprovalService | None = None,
    telemetry: Telemetry | None = None,
    audit: AuditLog | None = None,
    views: Views | None = None,
    reloading: Reloading | None = None,
    tls: ServerTLS | None = None,
    embedded: Embedded | None = None,
) -> Running:
    """Start serving on `address` ("host:port"; port 0 picks a free one), over TLS when `tls`
    is given. `share_port` lets the processes of `signoff serve --processes N` listen on one
    port. `workers` threads serve unary calls; response streams (approval watches, at most
    `streams` open at once, approvals.py) have threads of their own, so open watches never
    take a thread a check needs."""
    limits = limits or convert.Limits()
    options = [
        # Unless sharing is meant, a second server on the same port must fail loudly, not
        # silently take part of the traffic.
        ("grpc.so_reuseport", 1 if share_port else 0),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
        # Without BDP probing, HTTP/2 flow-control windows stay at their initial 64 KiB: a call
        # waiting for a worker holds at most that much of its request, instead of all of it.
        # Requests in flight are then bounded by workers x max_message_bytes, plus
        # max_concurrent_rpcs x 64 KiB for those waiting (4 MiB + 16 MiB by default).
        ("grpc.http2.bdp_probe", 0),
    ]
    on_malformed = telemetry.record_malformed_request if telemetry is not None else _uncounted
    stream_threads = streams_pool(streams)
    interceptors: list[grpc.ServerInterceptor] = []  # type: ignore[type-arg]
    if telemetry is not None and telemetry.exports_spans:
        interceptors.append(StreamsOnPool(telemetry.server_interceptor(), stream_threads))
    # When nothing exports spans no RPC gets one (nobody would see it): the server then has
    # no interceptor, and grpc runs no interceptor pipeline per call. Decisions' audit records
    # still get the trace id the span would have had (DecisionService.traced). Requests are
    # parsed by their handlers either way (ParsingServer), inside the span when there is one.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs or None,
    )
    registrar: Any = ParsingServer(server, RequestParsing(on_malformed), stream_threads)
    decisions = DecisionService(
        engine,
        hash_key_id=hash_key_id,
        limits=limits,
        approvals=approvals,
        telemetry=telemetry,
        audit=audit,
        views=views,
        cache_entries=decision_cache,
        caller_certificates=tls is not None and tls.mutual,
        on_malformed=on_malformed,
    )
    # Bytes in and out: the service parses (and encodes) only what its cache does not hold.
    registrar.add_registered_method_handlers(SERVICE_NAME, decisions.method_handlers())
    names = [SERVICE_NAME]
    if approval_service is not None:
        apb_grpc.add_ApprovalServiceServicer_to_server(approval_service, registrar)
        names.append(APPROVAL_SERVICE_NAME)
    if embedded is not None:
        service = EmbeddedService(embedded.bundle, audit, decisions.caller_name)
        epb_grpc.add_EmbeddedServiceServicer_to_server(service, registrar)
        names.append(EMBEDDED_SERVICE_NAME)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reloader = None
    if reloading is not None:

        def on_status(status: LoadStatus) -> None:
            # Decisions go on with the previous bundle; this entry shows the refused one.
            health_servicer.set(
                POLICY_HEALTH,
                health_pb2.HealthCheckResponse.NOT_SERVING
                if status.failed
                else health_pb2.HealthCheckResponse.SERVING,
            )

        reloader = PolicyReloader(
            decisions,
            reloading.rules,
            backend=reloading.backend,
            make_engine=reloading.make_engine,
            load=reloading.load,
            telemetry=telemetry,
            on_status=on_status,
        )
        adb_grpc.add_PolicyAdminServiceServicer_to_server(
            PolicyAdminService(reloader, reloading.auth), registrar
        )
        names.append(ADMIN_SERVICE_NAME)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((*names, health_name, reflection.SERVICE_NAME), registrar)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.credentials())
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    server.start()
    for name in ("", *names, *([POLICY_HEALTH] if reloader else [])):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s on port %d over %s (revision %s, %d rules, backend %s)",
        SERVICE_NAME,
        port,
        "plaintext" if tls is None else tls.mode,
        engine.bundle.revision[:12],
        engine.bundle.rule_count,
        engine.bundle.backend.name,
    )
    return Running(server, port, decisions, health_servicer, reloader, stream_threads)
