"""`signoff serve`: serve decisions over gRPC on the bundle in --rules."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from signoff import config as config_mod
from signoff import heap, logsetup
from signoff.approvals.store import DEFAULT_MAX_PENDING_PER_REQUESTER
from signoff.client.cmd.settings import Setting, add_settings
from signoff.client.tls import is_loopback
from signoff.cmd import options
from signoff.config import MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from signoff.engine.cel import BACKENDS, DEFAULT_BACKEND
from signoff.errors import ConfigError, PolicyError, StoreUnavailable
from signoff.keys import load
from signoff.observability import Telemetry
from signoff.server.convert import Limits
from signoff.server.tls import TLSFiles

if TYPE_CHECKING:
    from signoff.approvals.service import Approvals
    from signoff.approvals.store import ApprovalStore
    from signoff.audit import AuditLog
    from signoff.http.gateway_server import RunningHttp
    from signoff.identity import CallerAuthenticator, IdentityConfig
    from signoff.server.app import Running
    from signoff.views import Views

LOG_LEVELS = options.LOG_LEVELS
# Measured (docs/performance.md): more busy threads per process contend for its GIL; fewer
# leave a core idle while a call waits on Redis.
DEFAULT_WORKERS = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1  # no affinity API (macOS)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the `signoff` command line."""
    serve = commands.add_parser("serve", help="serve decisions over gRPC on the bundle in --rules")
    add_serve_arguments(serve)
    serve.set_defaults(run=_serve)


def _serve_settings() -> tuple[Setting, ...]:
    settings: list[Setting] = []

    def option(flag: str, *, env: str, default: str, **kwargs: Any) -> None:
        settings.append(Setting(flag, env, default, **kwargs))

    option(
        "--address",
        env="SIGNOFF_ADDRESS",
        default="127.0.0.1:50051",
        help="host:port to listen on (SIGNOFF_ADDRESS; default 127.0.0.1:50051)",
    )
    option(
        "--http-address",
        env="SIGNOFF_HTTP_ADDRESS",
        default="127.0.0.1:8080",
        help="host:port of the HTTP gateway (AuthZEN, health; docs/http.md), served beside "
        "gRPC with the same TLS files; off: no HTTP (SIGNOFF_HTTP_ADDRESS; default "
        "127.0.0.1:8080)",
    )
    option(
        "--authzen-token-file",
        env="SIGNOFF_AUTHZEN_TOKEN_FILE",
        default="",
        help="file holding the bearer token AuthZEN callers (PEPs) must present; unset: the "
        "AuthZEN endpoints answer any caller that can reach them (SIGNOFF_AUTHZEN_TOKEN_FILE)",
    )
    option(
        "--dev-login",
        choices=("on", "off"),
        env="SIGNOFF_DEV_LOGIN",
        default="off",
        help="offer the web inbox's development login, where anyone names any identity and "
        "roles: demos on loopback only, never in production (SIGNOFF_DEV_LOGIN; default off)",
    )
    option(
        "--tls-cert",
        env="SIGNOFF_TLS_CERT",
        default="",
        help="PEM certificate chain to serve over TLS (SIGNOFF_TLS_CERT); re-read when it "
        "changes, so a rotated certificate needs no restart",
    )
    option(
        "--tls-key",
        env="SIGNOFF_TLS_KEY",
        default="",
        help="PEM private key of --tls-cert (SIGNOFF_TLS_KEY)",
    )
    option(
        "--tls-client-ca",
        env="SIGNOFF_TLS_CLIENT_CA",
        default="",
        help="PEM roots that callers' certificates must chain to; when set, every caller "
        "must present one (mutual TLS) (SIGNOFF_TLS_CLIENT_CA)",
    )
    option(
        "--allow-plaintext",
        choices=("on", "off"),
        env="SIGNOFF_ALLOW_PLAINTEXT",
        default="off",
        help="serve without TLS on an address beyond loopback, e.g. behind a TLS-terminating "
        "proxy (SIGNOFF_ALLOW_PLAINTEXT; default off: refused, as bearer tokens would "
        "cross the network in clear)",
    )
    option(
        "--rules",
        env="SIGNOFF_RULES",
        default="rules",
        help="policy bundle directory (SIGNOFF_RULES; default ./rules)",
    )
    option(
        "--bundle-public-key",
        env="SIGNOFF_BUNDLE_PUBLIC_KEY",
        default="",
        help="Ed25519 public key (PEM) for signed bundles (SIGNOFF_BUNDLE_PUBLIC_KEY); when "
        "set, --rules must be a bundle made by `signoff bundle sign`, and nothing unsigned is "
        "served",
    )
    option(
        "--cel-backend",
        choices=BACKENDS,
        env="SIGNOFF_CEL_BACKEND",
        default=DEFAULT_BACKEND,
        help="CEL evaluator (SIGNOFF_CEL_BACKEND; default cel-expr)",
    )
    option(
        "--workers",
        type=int,
        env="SIGNOFF_WORKERS",
        default=str(DEFAULT_WORKERS),
        help="gRPC worker threads per process for unary calls; approval watches have threads "
        f"of their own (SIGNOFF_WORKERS; default {DEFAULT_WORKERS})",
    )
    option(
        "--processes",
        type=int,
        env="SIGNOFF_PROCESSES",
        default="0",
        help="serving processes sharing the address (SIGNOFF_PROCESSES; default 0: one per "
        "usable core). Each runs --workers threads; more than one uses every core, as Python "
        "threads cannot.",
    )
    option(
        "--max-watchers",
        type=int,
        env="SIGNOFF_MAX_WATCHERS",
        default="16",
        help="WatchApproval streams open at once per process, each on a thread of its own "
        "beside the --workers; more are refused with RESOURCE_EXHAUSTED "
        "(SIGNOFF_MAX_WATCHERS; default 16)",
    )
    option(
        "--decision-cache",
        type=int,
        env="SIGNOFF_DECISION_CACHE",
        default="4096",
        help="decisions kept per process for repeated identical requests; 0 turns the cache "
        "off (SIGNOFF_DECISION_CACHE; default 4096)",
    )
    option(
        "--max-batch-items",
        type=int,
        env="SIGNOFF_MAX_BATCH_ITEMS",
        default="1000",
        help="largest CheckBatch accepted (SIGNOFF_MAX_BATCH_ITEMS; default 1000)",
    )
    option(
        "--max-message-bytes",
        type=int,
        env="SIGNOFF_MAX_MESSAGE_BYTES",
        default=str(Limits.max_message_bytes),
        help="largest request message read, in bytes; a larger one is refused with "
        "RESOURCE_EXHAUSTED before its body is read (SIGNOFF_MAX_MESSAGE_BYTES; default "
        "1048576, 1 MiB)",
    )
    option(
        "--max-concurrent-rpcs",
        type=int,
        env="SIGNOFF_MAX_CONCURRENT_RPCS",
        default=str(Limits.max_concurrent_rpcs),
        help="calls admitted at once per process, running or waiting for a worker; more are "
        "refused with RESOURCE_EXHAUSTED; 0: no limit (SIGNOFF_MAX_CONCURRENT_RPCS; default 256)",
    )
    option(
        "--max-pending-approvals",
        type=int,
        env="SIGNOFF_MAX_PENDING_APPROVALS",
        default=str(DEFAULT_MAX_PENDING_PER_REQUESTER),
        help="approvals one principal may have waiting at once; past it, a check needing "
        "another is denied (approval_pending_limit); 0: no limit "
        "(SIGNOFF_MAX_PENDING_APPROVALS; default 20)",
    )
    # The masking key is the one pipelines get, with `signoff keys masking`; the audit and
    # digest keys never leave the service.
    settings += [options.HASH_KEY_FILE, *map(options.key_file, ("masking", "audit", "digest"))]
    settings += options.REDIS
    option(
        "--metrics-address",
        env="SIGNOFF_METRICS_ADDRESS",
        default="",
        help="host:port serving Prometheus metrics (SIGNOFF_METRICS_ADDRESS; default off). "
        "With several --processes, process i serves on port+i (scrape them all; port 0: each "
        "its own free port). Traces and OTLP metrics follow the standard OTEL_* variables.",
    )
    option(
        "--audit",
        choices=("on", "off"),
        env="SIGNOFF_AUDIT",
        default="on",
        help="tamper-evident audit trail in Redis (SIGNOFF_AUDIT; default on)",
    )
    option(
        "--audit-max-records",
        env="SIGNOFF_AUDIT_MAX_RECORDS",
        default="1000000",
        type=int,
        help="records kept per audit stream (SIGNOFF_AUDIT_MAX_RECORDS; default 1000000)",
    )
    option(
        "--audit-attributes",
        env="SIGNOFF_AUDIT_ATTRIBUTES",
        default="",
        help="comma-separated attributes audit records keep, e.g. principal.tenant,"
        "resource.tenant (SIGNOFF_AUDIT_ATTRIBUTES; default none)",
    )
    option(
        "--audit-payload-keys",
        env="SIGNOFF_AUDIT_PAYLOAD_KEYS",
        default="",
        help="comma-separated payload keys audit records keep, after masking "
        "(SIGNOFF_AUDIT_PAYLOAD_KEYS; default none)",
    )
    settings.append(options.LOG_LEVEL)

    return tuple(settings)


# Every serve option, with the variable it falls back to; `--processes N` hands each child
# exactly what the parent resolved through these variables.
SERVE_SETTINGS = _serve_settings()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SERVE_SETTINGS)


def validate_plain(args: argparse.Namespace) -> None:
    """Check values argparse cannot: `choices` are not applied to defaults from the env."""
    if args.cel_backend not in BACKENDS:
        raise ConfigError(f"unknown CEL backend {args.cel_backend!r}; choose {', '.join(BACKENDS)}")
    if getattr(args, "audit", "on") not in ("on", "off"):
        raise ConfigError(f"SIGNOFF_AUDIT must be on or off, not {args.audit!r}")
    if getattr(args, "allow_plaintext", "off") not in ("on", "off"):
        raise ConfigError(
            f"SIGNOFF_ALLOW_PLAINTEXT must be on or off, not {args.allow_plaintext!r}"
        )
    if args.log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {args.log_level!r}; choose {', '.join(LOG_LEVELS)}")


def from_args(args: argparse.Namespace) -> config_mod.Config:
    validate_plain(args)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.audit_max_records < 1:
        raise ConfigError("--audit-max-records must be at least 1")
    if args.max_batch_items < 1:
        raise ConfigError("--max-batch-items must be at least 1")
    if args.processes < 0:
        raise ConfigError("--processes must not be negative (0: one per usable core)")
    if args.max_watchers < 1:
        raise ConfigError("--max-watchers must be at least 1")
    if args.decision_cache < 0:
        raise ConfigError("--decision-cache must not be negative")
    if args.max_pending_approvals < 0:
        raise ConfigError("--max-pending-approvals must not be negative")
    if not MIN_MESSAGE_BYTES <= args.max_message_bytes <= MAX_MESSAGE_BYTES:
        raise ConfigError(
            f"--max-message-bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"
        )
    if args.max_concurrent_rpcs < 0:
        raise ConfigError("--max-concurrent-rpcs must not be negative")
    if not args.bundle_public_key and Path(args.rules).is_file():
        raise ConfigError("--rules is a file; a signed bundle needs --bundle-public-key")
    processes = args.processes or usable_cores()
    if args.metrics_address:
        metrics_addresses(args.metrics_address, processes)  # refused here, not in a child
    tls = _tls(args)
    if tls is None and args.allow_plaintext != "on" and not is_loopback(args.address):
        raise ConfigError(
            f"refusing to serve {args.address} without TLS: approvers' bearer tokens would "
            "cross the network in clear; give --tls-cert and --tls-key, or --allow-plaintext "
            "on behind a proxy that terminates TLS"
        )
    return config_mod.Config(
        address=args.address,
        rules=Path(args.rules),
        backend=args.cel_backend,
        workers=args.workers,
        max_batch_items=args.max_batch_items,
        keys=load(
            args.hash_key_file,
            {p: getattr(args, f"{p}_key_file", "") for p in ("masking", "audit", "digest")},
        ),
        log_level=args.log_level,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        metrics_address=args.metrics_address,
        audit=args.audit == "on",
        audit_max_records=args.audit_max_records,
        audit_attributes=tuple(a for a in args.audit_attributes.split(",") if a.strip()),
        audit_payload_keys=tuple(k for k in args.audit_payload_keys.split(",") if k.strip()),
        processes=processes,
        decision_cache=args.decision_cache,
        bundle_public_key=Path(args.bundle_public_key) if args.bundle_public_key else None,
        share_port=os.environ.get(SHARE_PORT_ENV) == "1",
        tls=tls,
        max_pending_approvals=args.max_pending_approvals,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_watchers=args.max_watchers,
    )


def metrics_addresses(address: str, processes: int) -> list[str]:
    """The Prometheus address of each of `processes` serving processes: port, port+1, ...

    Each process counts only its own calls; one endpoint per process keeps every count exact
    (a scrape sums them by target), where one shared endpoint would show whichever process the
    scrape reached. Port 0 gives each process a free port of its own.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--metrics-address must be host:port, not {address!r}")
    first = int(port)
    if first == 0:
        return [address] * processes
    if first + processes - 1 > 65535:
        raise ConfigError(
            f"--metrics-address {address}: {processes} processes need ports {first} to "
            f"{first + processes - 1}, past 65535"
        )
    return [f"{host}:{first + i}" for i in range(processes)]


def _tls(args: argparse.Namespace) -> TLSFiles | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if not args.tls_cert:
        if args.tls_client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    return TLSFiles(
        cert=Path(args.tls_cert),
        key=Path(args.tls_key),
        client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
    )


# How `--processes N` hands its configuration to the processes it starts: every serve option
# has an environment variable, so the children read exactly what the parent resolved.
SHARE_PORT_ENV = "SIGNOFF_SHARE_PORT"


def child_environment(args: argparse.Namespace, address: str) -> dict[str, str]:
    """The environment of one of the `--processes` children: these options, on `address`."""
    env = dict(os.environ)
    for setting in SERVE_SETTINGS:
        env[setting.env] = str(getattr(args, setting.dest))
    env.update({"SIGNOFF_ADDRESS": address, "SIGNOFF_PROCESSES": "1", SHARE_PORT_ENV: "1"})
    return env


@dataclass(frozen=True)
class HttpOptions:
    """The HTTP gateway's share of the serve options (docs/http.md)."""

    address: str  # "" = no HTTP
    authzen_token: str = ""
    dev_login: bool = False


def http_options(args: argparse.Namespace, tls: TLSFiles | None) -> HttpOptions:
    """--http-address and --authzen-token-file, checked like their gRPC counterparts."""
    address = args.http_address.strip()
    if address.lower() == "off":
        return HttpOptions("")
    _, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http-address must be host:port or off, not {address!r}")
    if tls is None and args.allow_plaintext != "on" and not is_loopback(address):
        raise ConfigError(
            f"refusing to serve HTTP on {address} without TLS: bearer tokens would cross the "
            "network in clear; give --tls-cert and --tls-key, or --allow-plaintext on behind "
            "a proxy that terminates TLS"
        )
    dev_login = args.dev_login == "on"
    if dev_login and not is_loopback(address):
        raise ConfigError(
            "--dev-login on lets anyone sign in as anyone: it is refused beyond loopback"
        )
    token = ""
    if args.authzen_token_file:
        try:
            token = Path(args.authzen_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --authzen-token-file: {exc.strerror}") from None
        if len(token) < 16:
            raise ConfigError("--authzen-token-file must hold a token of 16 characters or more")
    return HttpOptions(address, token, dev_login)


def _serve(args: argparse.Namespace) -> int:
    from signoff.identity import authenticator_for, from_env

    try:
        validate_plain(args)
    except ConfigError as exc:
        print(f"signoff: bad configuration: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(args.log_level)
    try:
        cfg = from_args(args)
        http = http_options(args, cfg.tls)
        if cfg.processes > 1:
            return _supervise(args, cfg.processes, http, cfg.metrics_address)
        if cfg.share_port:
            _stop_with_parent()
        identity_config = from_env(os.environ)
        identity = authenticator_for(identity_config)
        telemetry = Telemetry.from_env(os.environ, prometheus_address=cfg.metrics_address or None)
    except ConfigError as exc:
        print(f"signoff: bad configuration: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"signoff: cannot serve metrics on {cfg.metrics_address}: {exc}", file=sys.stderr)
        return 1
    telemetry.install_global()
    logging.getLogger("signoff.server").info(
        "approver authentication: %s", approver_authentication(identity_config)
    )
    try:
        return _serve_with(cfg, identity, telemetry, http)
    finally:
        telemetry.shutdown()


def _stop_with_parent() -> None:
    """A `--processes` child stops (SIGTERM, a clean stop) when its supervisor dies, even by
    SIGKILL: else it would go on serving the shared port with nothing left to stop it."""
    if not sys.platform.startswith("linux"):
        return  # prctl is Linux's; elsewhere a killed supervisor leaves its children serving
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the supervisor died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(
    args: argparse.Namespace, processes: int, http: HttpOptions, metrics: str = ""
) -> int:
    """`--processes N`: the children share the gRPC address and, with SO_REUSEPORT, the
    HTTP one; an HTTP port 0 is resolved here and held until they listen, so all take one.
    Each serves its own metrics (metrics_addresses)."""
    from signoff.supervisor import supervise

    env = child_environment(args, args.address)
    own = (
        [{"SIGNOFF_METRICS_ADDRESS": a} for a in metrics_addresses(metrics, processes)]
        if (metrics)
        else []
    )
    if not http.address:
        return supervise(args.address, env, processes, own)
    from signoff.http.gateway_server import listen_socket

    try:
        reservation = listen_socket(http.address, share_port=True)
    except OSError as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return 1
    if not env.get("SIGNOFF_SESSION_SECRET", "").strip():
        # Each process would otherwise sign inbox sessions with a secret of its own, and a
        # reviewer's next request, landing on another process, would find them signed out.
        env["SIGNOFF_SESSION_SECRET"] = secrets.token_urlsafe(48)
    try:
        host = http.address.rpartition(":")[0]
        env["SIGNOFF_HTTP_ADDRESS"] = f"{host}:{reservation.getsockname()[1]}"
        return supervise(args.address, env, processes, own)
    finally:
        reservation.close()


def approver_authentication(config: IdentityConfig | None) -> str:
    """Whether approvers' (and administrators') JWTs are verified, and against what: the
    start-up log says so, since without it every approval call answers UNAUTHENTICATED."""
    if config is None:
        return (
            "off (SIGNOFF_JWKS is unset): approval and policy admin calls answer "
            "UNAUTHENTICATED; REQUIRE_APPROVAL decisions cannot be signed off"
        )
    keys = config.jwks
    if config.is_remote:
        # The URL without any credentials or query it may carry.
        url = urllib.parse.urlsplit(keys)
        keys = f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"
    # repr escapes what the environment might hold, so it cannot forge log lines.
    return (
        f"JWT verification on: keys from {keys!r}, issuer {config.issuer!r}, "
        f"audience {config.audience!r}"
    )


def _serve_with(
    cfg: config_mod.Config,
    identity: CallerAuthenticator,
    telemetry: Telemetry,
    http: HttpOptions | None = None,
) -> int:
    from signoff.approvals.service import Approvals
    from signoff.approvals.store import ApprovalStore
    from signoff.audit import ApprovalEventAuditor, AuditConfig, AuditLog
    from signoff.bundles.source import SignedBundleSource
    from signoff.client.masking import key_id
    from signoff.engine.compiled import Bundle
    from signoff.engine.evaluator import Engine
    from signoff.policy.loader import load_bundle
    from signoff.server import app, convert
    from signoff.server.approvals import ApprovalService
    from signoff.server.embedded import Embedded
    from signoff.server.tls import ServerTLS
    from signoff.views import AuditSelection, Views

    def load_plain() -> Bundle:
        return load_bundle(cfg.rules, backend=cfg.backend)

    # One source for the first load and every reload: it remembers the newest signed bundle
    # served, so an older one put back in its place is refused.
    load: Callable[[], Bundle] = (
        load_plain
        if cfg.bundle_public_key is None
        else SignedBundleSource(cfg.rules, cfg.bundle_public_key, backend=cfg.backend)
    )

    try:
        tls = ServerTLS(cfg.tls) if cfg.tls is not None else None
        bundle = load()
    except ConfigError as exc:
        print(f"signoff: bad configuration: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        telemetry.record_policy_load("failed")
        print(f"signoff: refusing to start: {exc}", file=sys.stderr)
        return 2
    telemetry.record_policy_load("ok")
    store = ApprovalStore(
        cfg.redis_url, prefix=cfg.redis_prefix, max_pending_per_requester=cfg.max_pending_approvals
    )
    root = cfg.keys.root
    if root is None and cfg.keys.needs_root():
        root = _dev_secret(store)
        if root is None:
            print(
                "signoff: no SIGNOFF_HASH_KEY and Redis is unreachable, so there is no secret "
                "shared with other processes; set SIGNOFF_HASH_KEY or start Redis",
                file=sys.stderr,
            )
            return 1
    # Each purpose its own key: the masking key goes into pipelines, the others never leave.
    keys = cfg.keys.resolve(root)
    views = Views(
        hash_key=keys.masking,
        hash_key_id=key_id(keys.masking),
        audit=AuditSelection.parse(cfg.audit_attributes, cfg.audit_payload_keys),
    )
    audit = auditor = None
    if cfg.audit:
        audit = AuditLog(
            cfg.redis_url,
            keys.audit,
            prefix=cfg.redis_prefix,
            config=AuditConfig(max_records=cfg.audit_max_records),
        )
        auditor = ApprovalEventAuditor(audit, redis_url=cfg.redis_url, prefix=cfg.redis_prefix)
    # One lifecycle object: decisions hold and consume through it, reviewers vote through it.
    approvals = Approvals(
        store,
        digest_key=keys.digest,
        views=views,
        telemetry=telemetry,
        max_watchers=cfg.max_watchers,
    )
    # Handlers go in before the ready line: a supervisor may stop us the moment it sees it.
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reloader can take it
    try:
        running = app.start(
            Engine(bundle),
            cfg.address,
            hash_key_id=views.hash_key_id,
            workers=cfg.workers,
            streams=cfg.max_watchers,
            share_port=cfg.share_port,
            decision_cache=cfg.decision_cache,
            limits=convert.Limits(
                max_batch_items=cfg.max_batch_items,
                max_message_bytes=cfg.max_message_bytes,
                max_concurrent_rpcs=cfg.max_concurrent_rpcs,
            ),
            approvals=approvals,
            approval_service=ApprovalService(approvals, identity),
            telemetry=telemetry,
            audit=audit,
            views=views,
            reloading=app.Reloading(cfg.rules, cfg.backend, identity, load=load),
            tls=tls,
            embedded=Embedded(cfg.rules if cfg.bundle_public_key is not None else None),
        )
    except OSError as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return 1
    gateway = None
    if http is not None and http.address:
        try:
            gateway = _start_http(cfg, http, running, approvals, identity, telemetry, audit, views)
        except OSError as exc:
            running.stop(grace=None)
            print(f"signoff: {exc}", file=sys.stderr)
            return 1
    telemetry.observe_pending(store.pending_count)
    logging.getLogger("signoff.server").info("telemetry: %s", telemetry.description)
    sweeper = threading.Thread(
        target=_sweep, args=(store, stop, telemetry), name="expiry", daemon=True
    )
    sweeper.start()
    reloader = running.reloader
    assert reloader is not None
    # SIGHUP reloads the bundle now; the watcher also reloads once changed files settle.
    signal.signal(signal.SIGHUP, lambda signum, frame: reloader.request())
    threading.Thread(target=reloader.watch, args=(stop,), name="policy-watch", daemon=True).start()
    heap.settle()
    print(
        f"signoff listening on {cfg.address.rsplit(':', 1)[0]}:{running.port} "
        f"revision {bundle.revision[:12]} ({bundle.rule_count} rules)"
        + ("" if tls is None else f" over {tls.mode}")
        + ("" if gateway is None else f"; HTTP on {_host(http)}:{gateway.port}"),
        flush=True,
    )
    if auditor is not None:
        auditor.start()
    stop.wait()
    if gateway is not None:  # first, so no HTTP request lands on a stopped gRPC core
        gateway.stop()
    running.stop()
    if auditor is not None:
        auditor.stop()
    if audit is not None:
        audit.close(timeout=5.0)
    return 0


def _host(http: HttpOptions | None) -> str:
    return "" if http is None else http.address.rpartition(":")[0]


def _start_http(
    cfg: config_mod.Config,
    http: HttpOptions,
    running: Running,
    approvals: Approvals,
    identity: CallerAuthenticator,
    telemetry: Telemetry,
    audit: AuditLog | None,
    views: Views,
) -> RunningHttp:
    """The HTTP gateway beside gRPC: the same engine (reloads included), approvals, audit."""
    import redis

    from signoff.decisions import Decisions
    from signoff.http.app import build_app
    from signoff.http.core import HttpCore
    from signoff.http.gateway_server import start_http
    from signoff.http.oidc import settings_from_env

    def ready() -> bool:
        try:
            return bool(approvals.store.redis.ping())
        except (redis.RedisError, OSError):
            return False

    core = HttpCore(
        decisions=Decisions(approvals=approvals, telemetry=telemetry, audit=audit, views=views),
        engine=lambda: running.decisions.engine,
        approvals=approvals,
        authenticator=identity,
        telemetry=telemetry,
        ready=ready,
        hash_key_id=views.hash_key_id,
        settings={
            # The inbox's login and sessions (SIGNOFF_OIDC_*, SIGNOFF_SESSION_*, public URL).
            **settings_from_env(os.environ),
            "authzen_token": http.authzen_token,
            "dev_login": http.dev_login,
        },
        limits=Limits(max_batch_items=cfg.max_batch_items, max_message_bytes=cfg.max_message_bytes),
    )
    return start_http(build_app(core), http.address, tls=cfg.tls, share_port=cfg.share_port)


def _dev_secret(store: ApprovalStore, wait_seconds: float = 30.0) -> bytes | None:
    """The development secret shared through Redis, or None if Redis stays unreachable.

    Never a private per-process secret: processes on one Redis must digest and pseudonymise
    alike, or approvals made on one would be refused on another for as long as it runs.
    """
    log = logging.getLogger("signoff.config")
    log.warning(
        "no SIGNOFF_HASH_KEY configured: using a development secret kept in Redis; "
        "set SIGNOFF_HASH_KEY (32+ bytes) in production"
    )
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return store.shared_dev_secret()
        except StoreUnavailable:
            if time.monotonic() >= deadline:
                return None
            log.warning("waiting for Redis to agree on the development secret")
            time.sleep(1.0)


def _sweep(
    store: ApprovalStore, stop: threading.Event, telemetry: Telemetry, every: float = 1.0
) -> None:
    """Turns ended windows into 'expired' transitions, so watchers and notifiers hear of it."""
    log = logging.getLogger("signoff.approvals")
    down = False
    while not stop.wait(every):
        try:
            for _ in range(store.expire_due()):
                telemetry.record_approval_outcome("expired")
            if down:
                log.info("approval store reachable again")
            down = False
        except StoreUnavailable:
            if not down:
                log.warning("approval store unreachable; expiry sweeps paused")
            down = True
