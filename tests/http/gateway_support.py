"""A real HTTP gateway for tests: uvicorn on a free loopback port over real Redis and approvals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from signoff.approvals.digest import digest_key
from signoff.approvals.service import Approvals
from signoff.approvals.store import ApprovalStore
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.http.app import build_app
from signoff.http.core import HttpCore
from signoff.http.gateway_server import RunningHttp, start_http
from signoff.identity import CallerAuthenticator, NoAuthenticator
from signoff.observability import Telemetry
from signoff.policy.loader import load_bundle
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, bundled, drop_prefix


@dataclass
class Gateway:
    """One running gateway: its base URL, the core it adapts, and the store behind it."""

    url: str
    core: HttpCore
    store: ApprovalStore
    running: RunningHttp
    engine: Engine = field(repr=False)

    @property
    def redis(self) -> redis.Redis:
        return self.store.redis

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **options)

    def post(self, path: str, body: Any, **options: Any) -> httpx.Response:
        with self.client() as client:
            return client.post(path, json=body, **options)


@contextmanager
def running_gateway(
    rules: Path | None = None,
    *,
    now: str = DAY,
    authenticator: CallerAuthenticator | None = None,
    telemetry: Telemetry | None = None,
    settings: dict[str, Any] | None = None,
    ready: bool = True,
) -> Iterator[Gateway]:
    """Serve `rules` (default: the bundled rules, CEL `now` pinned at `now`) over HTTP, with
    approvals in the real Redis under a key prefix of its own, dropped afterwards."""
    bundle = bundled() if rules is None else load_bundle(rules, backend="cel-expr")
    engine = Engine(bundle, clock=fixed_clock(now))
    store = ApprovalStore(REDIS_URL, prefix=f"signoff:test:http:{uuid.uuid4().hex}:")
    views = Views(hash_key=KEY, hash_key_id=KEY_ID)
    telemetry = telemetry or Telemetry.disabled()
    approvals = Approvals(store, digest_key=digest_key(KEY), views=views, telemetry=telemetry)

    def is_ready() -> bool:
        if not ready:
            return False
        try:
            return bool(store.redis.ping())
        except redis.RedisError:
            return False

    core = HttpCore(
        decisions=Decisions(approvals=approvals, telemetry=telemetry),
        engine=lambda: engine,
        approvals=approvals,
        authenticator=authenticator or NoAuthenticator(),
        telemetry=telemetry,
        ready=is_ready,
        hash_key_id=KEY_ID,
        settings=dict(settings or {}),
    )
    running = start_http(build_app(core), "127.0.0.1:0")
    try:
        yield Gateway(f"http://127.0.0.1:{running.port}", core, store, running, engine)
    finally:
        running.stop(grace=1.0)
        drop_prefix(store.redis, store.prefix)
        store.redis.close()
