"""One requester may have only so many approvals waiting; past that, a check is denied."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from signoff.approvals.store import PendingLimit
from signoff.v1 import signoff_pb2 as pb
from tests.approvals.conftest import MakeServer
from tests.approvals.support import DevIdP, ManualClock, Server, fullwidth, lab_request, staff

PENDING_SECONDS = 3600  # the lab bundle: pending_ttl 1h
LIMIT = 3


def export(n: int, who: str = "sam@acme.io") -> pb.CheckRequest:
    """A distinct action (its own approval) for each `n`."""
    return lab_request(
        who=staff(who), payload={"target": f"s3://acme-exports/{n}.parquet", "rows": n}
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def lab(make_server: MakeServer, lab_rules: Path, clock: ManualClock) -> Server:
    return make_server(lab_rules, clock=clock, max_pending=LIMIT)


def pending_of(server: Server) -> int:
    return int(server.r.zcard(f"{server.prefix}pending"))


def assert_limited(response: pb.CheckResponse) -> None:
    assert response.verdict == pb.VERDICT_DENY
    assert list(response.reasons) == ["approval_pending_limit"]
    assert response.approval_id == ""


def test_past_the_limit_a_check_is_denied_and_nothing_is_stored(lab: Server) -> None:
    asked = [lab.ask(export(n)) for n in range(LIMIT)]
    assert_limited(lab.check(export(LIMIT)))
    assert pending_of(lab) == LIMIT
    # Asking again for an action already waiting is no new request: its approval comes back.
    again = lab.check(export(0))
    assert again.verdict == pb.VERDICT_REQUIRE_APPROVAL
    assert again.approval_id == asked[0]


def test_the_limit_is_per_requester(lab: Server) -> None:
    for n in range(LIMIT):
        lab.ask(export(n))
    assert_limited(lab.check(export(LIMIT)))
    lab.ask(export(LIMIT, who="kim@acme.io"))


def test_a_cancelled_or_approved_request_frees_its_place(lab: Server, idp: DevIdP) -> None:
    asked = [lab.ask(export(n)) for n in range(LIMIT)]
    lab.cancel(asked[0], idp.token("sam@acme.io"))
    lab.ask(export(10))
    assert_limited(lab.check(export(11)))
    lab.approve(asked[1], idp.token("rita@acme.io", "reviewer"))
    lab.ask(export(11))
    assert_limited(lab.check(export(12)))


# One requester written as the issue found it, and in other spellings that are the same id.
CAPBOT = [
    "agent:capbot",
    "AGENT:capbot",
    "Agent:Capbot",
    fullwidth("agent:capbot"),
    "agent:cap\u200bbot",
    " agent:capbot\u00a0",
]


def test_spellings_of_one_requester_share_one_limit(lab: Server) -> None:
    for n, who in enumerate(CAPBOT[:LIMIT]):
        lab.ask(export(n, who=who))

    for n, who in enumerate(CAPBOT):
        assert_limited(lab.check(export(LIMIT + n, who=who)))
    assert pending_of(lab) == LIMIT


def test_a_place_taken_under_one_spelling_is_freed_for_every_spelling(
    lab: Server, idp: DevIdP, clock: ManualClock
) -> None:
    asked = [lab.ask(export(n, who=who)) for n, who in enumerate(CAPBOT[:LIMIT])]
    assert_limited(lab.check(export(10, who=CAPBOT[3])))

    lab.cancel(asked[1], idp.token(CAPBOT[0]))
    asked.append(lab.ask(export(10, who=CAPBOT[3])))
    assert_limited(lab.check(export(11, who=CAPBOT[0])))

    lab.reject(asked[0], idp.token("rita@acme.io", "reviewer"))
    asked.append(lab.ask(export(11, who=CAPBOT[4])))
    assert_limited(lab.check(export(12, who=CAPBOT[1])))

    lab.approve(asked[2], idp.token("rita@acme.io", "reviewer"))
    lab.ask(export(12, who=CAPBOT[5]))
    assert_limited(lab.check(export(13, who=CAPBOT[2])))

    clock.advance(PENDING_SECONDS)
    for n, who in enumerate(CAPBOT[:LIMIT]):
        lab.ask(export(20 + n, who=who))
    assert_limited(lab.check(export(30, who=CAPBOT[0])))


def test_an_ended_window_frees_its_place_before_any_sweep(lab: Server, clock: ManualClock) -> None:
    for n in range(LIMIT):
        lab.ask(export(n))
    assert_limited(lab.check(export(LIMIT)))
    clock.advance(PENDING_SECONDS)
    lab.ask(export(LIMIT))


def test_concurrent_requests_never_exceed_the_limit(lab: Server) -> None:
    results: list[pb.CheckResponse] = []
    lock = threading.Lock()

    def ask(n: int) -> None:
        response = lab.check(export(n))
        with lock:
            results.append(response)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verdicts = sorted(r.verdict for r in results)
    assert verdicts.count(pb.VERDICT_REQUIRE_APPROVAL) == LIMIT
    assert verdicts.count(pb.VERDICT_DENY) == 12 - LIMIT
    assert pending_of(lab) == LIMIT


def test_zero_means_no_limit(make_server: MakeServer, lab_rules: Path) -> None:
    server = make_server(lab_rules, max_pending=0)
    for n in range(25):
        server.ask(export(n))
    assert pending_of(server) == 25


def test_the_store_names_no_principal_in_its_refusal(lab: Server) -> None:
    for n in range(LIMIT):
        lab.ask(export(n))
    with pytest.raises(PendingLimit) as raised:
        lab.store.create(
            digest="d" * 64,
            requester="sam@acme.io",
            pending_ttl_ms=1000,
            grant_ttl_ms=1000,
            doc={},
            summary={},
        )
    assert (raised.value.held, raised.value.limit) == (LIMIT, LIMIT)
    assert "sam@acme.io" not in str(raised.value)
    assert not any("sam@acme.io" in key for key in lab.r.scan_iter(f"{lab.prefix}*"))
