"""The client transport benchmark's quick mode runs end to end, so no change can silently break it."""

from __future__ import annotations

from bench import client_transport


def test_quick_client_transport_bench_gets_every_answer_right_in_every_mode() -> None:
    # Coalesced, unary and asyncio callers each repeat three checks whose answers unary Check
    # gave first; the bench raises on any error or different verdict.
    result = client_transport.section(quick=True)
    runs = result.data["runs"]
    assert set(runs) == set(client_transport.MODES)
    for mode_runs in runs.values():
        assert all(run["calls"] > 0 and not run["errors"] and not run["wrong"] for run in mode_runs)
    assert [t.name for t in result.targets] == [
        "client coalesced vs unary, server CPU per check (same client, same run)"
    ]
