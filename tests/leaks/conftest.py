"""Fixtures for the leak tests: a dev IdP, the canary bundle, and one recorded canary run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from signoff.identity import Authenticator
from tests.approvals.support import DevIdP
from tests.leaks import scenario
from tests.leaks.support import (
    Canaries,
    Captured,
    Stack,
    assemble,
    capture_logs,
    no_proxies,
    notifier_for,
    write_bundle,
)
from tests.notifier.support import Webhooks
from tests.observability.harness import Recorded
from tests.server.harness import closed_port

MakeStack = Callable[..., Stack]


@pytest.fixture(scope="session")
def leak_idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("leak-idp"))


@pytest.fixture(scope="session")
def leak_authn(leak_idp: DevIdP) -> Authenticator:
    return leak_idp.authenticator()


@pytest.fixture(scope="session")
def leak_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("leak-rules"))


@pytest.fixture(scope="module", params=["cel-expr", "cel-python"])
def captured(
    request: pytest.FixtureRequest, leak_idp: DevIdP, leak_authn: Authenticator, leak_rules: Path
) -> Captured:
    """One full canary run per CEL backend, with everything that left signoff recorded."""
    canaries = Canaries()
    out = Captured(canaries)
    recorded = Recorded()
    with capture_logs() as logs, no_proxies(), Webhooks() as hooks:
        try:
            with (
                assemble(
                    leak_rules,
                    authenticator=leak_authn,
                    recorded=recorded,
                    backend=request.param,
                ) as stack,
                assemble(
                    leak_rules,
                    authenticator=leak_authn,
                    recorded=recorded,
                    backend=request.param,
                    redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                ) as down,
                notifier_for(stack, hooks) as notifier,
            ):
                scenario.run(stack, down, notifier, hooks, leak_idp, canaries, out)
            # Collected once both servers have stopped, so every span (the watch's too) ended
            # and shutdown's own log lines are in.
            for span in recorded.spans():
                out.add("spans", span.name, span.to_json())
            data = recorded.reader.get_metrics_data()
            assert data is not None
            out.add("metrics", "all metrics", data.to_json())
        finally:
            recorded.telemetry.shutdown()
    for index, line in enumerate(logs.text()):
        out.add("logs", f"log record {index}", line)
    return out


@pytest.fixture
def make_stack(leak_authn: Authenticator, leak_rules: Path) -> Iterator[MakeStack]:
    """Stacks (see `assemble`) on the canary bundle that stop, keys dropped, when the test ends."""
    with ExitStack() as stack:

        def make(recorded: Recorded, **options: Any) -> Stack:
            options.setdefault("authenticator", leak_authn)
            made: Stack = stack.enter_context(assemble(leak_rules, recorded=recorded, **options))
            return made

        yield make


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = Recorded()
    try:
        yield rec
    finally:
        rec.telemetry.shutdown()
