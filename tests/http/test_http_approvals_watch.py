"""The SSE watch: keep-alives while quiet, an end event, bounded slots freed when clients leave."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from signoff.approvals.service import WATCHES_PER_CALLER
from signoff.identity import Authenticator
from tests.approvals.support import DevIdP, lab_files
from tests.http.approvals_support import Gateway, error_of, gateway, prod_export, sse_events


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def lab_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def make_gateway(lab_rules: Path, idp: DevIdP) -> Iterator[Any]:
    auth: Authenticator = idp.authenticator()
    with ExitStack() as stack:

        def make(**options: Any) -> Gateway:
            return stack.enter_context(gateway(lab_rules, auth=auth, **options))

        yield make


def open_watch(stack: ExitStack, http: httpx.Client, approval_id: str) -> httpx.Response:
    return stack.enter_context(http.stream("GET", f"/v1/approvals/{approval_id}/watch"))


def test_a_quiet_watch_sends_keep_alives_and_ends_when_the_approval_is_rejected(
    make_gateway: Any, idp: DevIdP
) -> None:
    gw: Gateway = make_gateway(heartbeat_seconds=0.1)
    approval_id = gw.ask(prod_export())
    with ExitStack() as stack:
        http = stack.enter_context(gw.client(idp.token("sam@acme.io", "staff")))
        events = sse_events(open_watch(stack, http, approval_id))
        assert next(events).kind == "approval"
        assert next(events).kind == "comment"
        with gw.client(idp.token("alice@acme.io", "security")) as reviewer:
            assert reviewer.post(
                f"/v1/approvals/{approval_id}/reject", json={"reason": "no"}
            ).is_success
        rest = [e for e in events if e.kind != "comment"]
    assert [e.kind for e in rest] == ["approval", "end"]
    assert json.loads(rest[0].data)["state"] == "rejected"
    assert json.loads(rest[1].data) == {"id": approval_id, "state": "rejected"}


def test_a_watch_ends_when_the_watch_time_is_up(make_gateway: Any, idp: DevIdP) -> None:
    gw: Gateway = make_gateway(watch_max_seconds=0.5)
    approval_id = gw.ask(prod_export())
    started = time.monotonic()
    path = f"/v1/approvals/{approval_id}/watch"
    with gw.client(idp.token("sam@acme.io", "staff")) as http, http.stream("GET", path) as response:
        kinds = [e.kind for e in sse_events(response) if e.kind != "comment"]
    assert kinds == ["approval", "end"]
    assert time.monotonic() - started < 5


def test_watches_are_bounded_per_caller_and_a_closed_stream_frees_its_slot(
    make_gateway: Any, idp: DevIdP
) -> None:
    gw: Gateway = make_gateway(heartbeat_seconds=0.1)
    approval_id = gw.ask(prod_export())
    token = idp.token("sam@acme.io", "staff")
    with ExitStack() as outer, gw.client(token) as http:
        first = ExitStack()
        outer.enter_context(first)
        assert open_watch(first, http, approval_id).status_code == 200
        for _ in range(WATCHES_PER_CALLER - 1):
            assert open_watch(outer, http, approval_id).status_code == 200
        with gw.client(token) as other:
            refused = other.get(f"/v1/approvals/{approval_id}/watch")
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "resource_exhausted"

        first.close()  # the client goes away: the server notices and frees the slot
        deadline = time.monotonic() + 5
        while True:
            with (
                gw.client(token) as other,
                other.stream("GET", f"/v1/approvals/{approval_id}/watch") as again,
            ):
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed watch still holds its slot"
            time.sleep(0.1)
