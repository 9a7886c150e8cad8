"""The `signoff` command: serve, check, test, lint, replay, approvals, policy, audit, notify,
bundle."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from signoff import config as config_mod
from signoff import logsetup
from signoff.errors import ConfigError, PolicyError, StoreUnavailable
from signoff.observability import Telemetry

if TYPE_CHECKING:
    from signoff.approvals.store import ApprovalStore
    from signoff.identity import CallerAuthenticator, IdentityConfig


def _serve(args: argparse.Namespace) -> int:
    from signoff.identity import authenticator_for, from_env

    try:
        config_mod.validate_plain(args)
    except ConfigError as exc:
        print(f"signoff: bad configuration: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(args.log_level)
    try:
        cfg = config_mod.from_args(args)
        if cfg.processes > 1:
            from signoff.supervisor import supervise

            return supervise(args, cfg.processes)
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
        return _serve_with(cfg, identity, telemetry)
    finally:
        telemetry.shutdown()


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
) -> int:
    from signoff.approvals.flow import ApprovalFlow
    from signoff.approvals.service import Approvals
    from signoff.approvals.store import ApprovalStore
    from signoff.audit import ApprovalEventAuditor, AuditConfig, AuditLog
    from signoff.client.masking import key_id
    from signoff.engine.compiled import Bundle
    from signoff.engine.evaluator import Engine
    from signoff.policy.loader import load_bundle
    from signoff.policy.signed import SignedBundleSource
    from signoff.server import app, convert
    from signoff.server.approvals import ApprovalService
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
    flow = ApprovalFlow(store, digest_key=keys.digest, views=views)
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
            share_port=cfg.share_port,
            decision_cache=cfg.decision_cache,
            limits=convert.Limits(
                max_batch_items=cfg.max_batch_items,
                max_message_bytes=cfg.max_message_bytes,
                max_concurrent_rpcs=cfg.max_concurrent_rpcs,
            ),
            approvals=flow,
            approval_service=ApprovalService(
                Approvals(
                    store,
                    digest_key=keys.digest,
                    views=views,
                    telemetry=telemetry,
                    max_watchers=cfg.workers // 2,
                ),
                identity,
            ),
            telemetry=telemetry,
            audit=audit,
            views=views,
            reloading=app.Reloading(cfg.rules, cfg.backend, identity, load=load),
            tls=tls,
        )
    except OSError as exc:
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
    print(
        f"signoff listening on {cfg.address.rsplit(':', 1)[0]}:{running.port} "
        f"revision {bundle.revision[:12]} ({bundle.rule_count} rules)"
        + ("" if tls is None else f" over {tls.mode}"),
        flush=True,
    )
    if auditor is not None:
        auditor.start()
    stop.wait()
    running.stop()
    if auditor is not None:
        auditor.stop()
    if audit is not None:
        audit.close(timeout=5.0)
    return 0


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


def _check(args: argparse.Namespace) -> int:
    from signoff.client.cli import run_check

    return run_check(args)


def _test(args: argparse.Namespace) -> int:
    from signoff.policytest import run_test

    return run_test(args)


def build_parser() -> argparse.ArgumentParser:
    from signoff.approvals.notifier import add_notify_arguments, run_notify
    from signoff.audit.cli import add_audit_arguments
    from signoff.client.approvals_cli import add_approvals_arguments
    from signoff.client.cli import add_check_arguments
    from signoff.client.policy_cli import add_policy_arguments
    from signoff.devcerts import add_dev_certs_arguments
    from signoff.devtokens import add_dev_arguments
    from signoff.keys import add_keys_arguments
    from signoff.policy.lint import add_lint_arguments
    from signoff.policy.signed import add_bundle_arguments
    from signoff.policytest import add_test_arguments
    from signoff.replay import add_replay_arguments

    parser = argparse.ArgumentParser(prog="signoff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve decisions over gRPC on the bundle in --rules")
    config_mod.add_serve_arguments(serve)
    serve.set_defaults(run=_serve)
    check = sub.add_parser("check", help="ask a running signoff for a verdict")
    add_check_arguments(check)
    check.set_defaults(run=_check)
    test = sub.add_parser("test", help="run the policy suites (*_test.yaml) beside the policies")
    add_test_arguments(test)
    test.set_defaults(run=_test)
    add_lint_arguments(sub)
    add_approvals_arguments(sub)
    add_policy_arguments(sub)
    add_audit_arguments(sub)
    add_replay_arguments(sub)
    add_bundle_arguments(sub)
    notify = sub.add_parser("notify", help="post new approval requests to Slack and Teams")
    add_notify_arguments(notify)
    notify.set_defaults(run=run_notify)
    add_dev_arguments(sub)
    add_dev_certs_arguments(sub)
    add_keys_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from signoff.client.pipes import quiet_on_closed_stdout

    args = build_parser().parse_args(argv)
    code: int = quiet_on_closed_stdout(lambda: int(args.run(args)))
    return code


if __name__ == "__main__":
    sys.exit(main())
