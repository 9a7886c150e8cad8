"""Metric instruments read back through the SDK's InMemoryMetricReader and a real /metrics scrape."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from signoff.approvals.model import State
from signoff.engine.model import Verdict
from signoff.errors import ConfigError
from signoff.observability import Telemetry
from signoff.observability.telemetry import DURATION_BUCKETS
from tests.observability.harness import SECRET, Recorded, Served, by_label


def test_decisions_are_counted_by_verdict(recorded: Recorded) -> None:
    telemetry = recorded.telemetry
    telemetry.record_decision("allow", 0.001)
    telemetry.record_decision("ALLOW", 0.002)
    telemetry.record_decision(Verdict.REQUIRE_APPROVAL, 0.003)
    telemetry.record_decision("deny", 0.004)

    counts = {
        k: p.value for k, p in by_label(recorded.points("signoff.decisions"), "verdict").items()
    }
    assert counts == {"allow": 2, "require_approval": 1, "deny": 1}


def test_a_verdict_outside_the_known_set_is_counted_as_other(recorded: Recorded) -> None:
    recorded.telemetry.record_decision(SECRET, 0.001)

    points = recorded.points("signoff.decisions")
    assert [p.attributes for p in points] == [{"verdict": "other"}]
    assert SECRET not in recorded.everything()


def test_decision_durations_fill_a_histogram_from_50us_to_1s(recorded: Recorded) -> None:
    for seconds in (0.00004, 0.0003, 0.0003, 0.02, 3.0):
        recorded.telemetry.record_decision("mask", seconds)

    (point,) = recorded.points("signoff.decision.duration")
    assert point.attributes == {"verdict": "mask"}
    assert point.count == 5
    assert point.sum == pytest.approx(3.02064)
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert DURATION_BUCKETS[0] == 0.00005
    assert DURATION_BUCKETS[-1] == 1.0
    counts = dict(zip((*point.explicit_bounds, float("inf")), point.bucket_counts, strict=True))
    assert counts[0.00005] == 1
    assert counts[0.0005] == 2
    assert counts[0.025] == 1
    assert counts[float("inf")] == 1


def test_an_impossible_duration_counts_the_decision_but_not_its_time(recorded: Recorded) -> None:
    recorded.telemetry.record_decision("allow", -0.5)
    recorded.telemetry.record_decision("allow", float("nan"))

    assert [p.value for p in recorded.points("signoff.decisions")] == [2]
    assert recorded.points("signoff.decision.duration") == []


def test_decisions_made_over_rpc_are_counted(recorded: Recorded, served: Served) -> None:
    served.check()
    served.check()

    assert [p.value for p in recorded.points("signoff.decisions")] == [2]
    assert [p.count for p in recorded.points("signoff.decision.duration")] == [2]


def test_approval_outcomes_are_counted_by_outcome(recorded: Recorded) -> None:
    telemetry = recorded.telemetry
    for outcome in ("approved", "rejected", "approved", "expired", "consumed", "cancelled"):
        telemetry.record_approval_outcome(outcome)
    telemetry.record_approval_outcome(State.EXPIRED)
    telemetry.record_approval_outcome("pending")

    counts = {
        k: p.value
        for k, p in by_label(recorded.points("signoff.approvals.outcomes"), "outcome").items()
    }
    assert counts == {
        "approved": 2,
        "rejected": 1,
        "expired": 2,
        "consumed": 1,
        "cancelled": 1,
        "other": 1,
    }


def test_policy_loads_are_counted_by_result(recorded: Recorded) -> None:
    recorded.telemetry.record_policy_load("ok")
    recorded.telemetry.record_policy_load("failed")
    recorded.telemetry.record_policy_load("ok")

    points = by_label(recorded.points("signoff.policy.loads"), "result")
    assert {k: p.value for k, p in points.items()} == {"ok": 2, "failed": 1}


def test_the_pending_gauge_reads_its_callback_and_skips_none(recorded: Recorded) -> None:
    assert recorded.points("signoff.approvals.pending") == []  # nothing registered yet

    readings: list[int | None] = [7, None, 2]
    recorded.telemetry.observe_pending(lambda: readings.pop(0))

    assert [p.value for p in recorded.points("signoff.approvals.pending")] == [7]
    # The store could not say: no reading at all, rather than a false zero.
    assert recorded.points("signoff.approvals.pending") == []
    assert [p.value for p in recorded.points("signoff.approvals.pending")] == [2]


def test_prometheus_serves_every_metric_over_http() -> None:
    telemetry = Telemetry.from_env({}, prometheus_address="127.0.0.1:0")
    try:
        telemetry.record_decision("allow", 0.0002)
        telemetry.record_approval_outcome("approved")
        telemetry.record_policy_load("ok")
        telemetry.observe_pending(lambda: 3)
        assert telemetry.prometheus_port is not None
        url = f"http://127.0.0.1:{telemetry.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
            text = reply.read().decode()
    finally:
        telemetry.shutdown()

    assert "signoff_decisions_total{" in text
    assert 'verdict="allow"' in text
    assert "signoff_decision_duration_seconds_bucket{" in text
    assert 'le="5e-05"' in text
    assert "signoff_approvals_outcomes_total{" in text
    assert 'outcome="approved"' in text
    assert "signoff_policy_loads_total{" in text
    assert 'result="ok"' in text
    assert "signoff_approvals_pending{" in text
    assert 'service_name="signoff"' in text


def test_two_instances_serve_their_own_metrics_side_by_side() -> None:
    first = Telemetry.from_env({}, prometheus_address="127.0.0.1:0")
    second = Telemetry.from_env({}, prometheus_address="127.0.0.1:0")
    try:
        first.record_decision("deny", 0.001)
        second.record_decision("allow", 0.001)
        texts = []
        for t in (first, second):
            url = f"http://127.0.0.1:{t.prometheus_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                texts.append(reply.read().decode())
    finally:
        first.shutdown()
        second.shutdown()

    assert 'verdict="deny"' in texts[0]
    assert 'verdict="allow"' not in texts[0]
    assert 'verdict="allow"' in texts[1]
    assert 'verdict="deny"' not in texts[1]


def test_a_taken_prometheus_port_fails_at_startup() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="cannot serve Prometheus metrics"):
            Telemetry.from_env({}, prometheus_address=f"127.0.0.1:{port}")


@pytest.mark.parametrize("address", ["9464", "localhost:", "host:port", "[::1]:70000"])
def test_a_malformed_prometheus_address_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="Prometheus address"):
        Telemetry.from_env({}, prometheus_address=address)
