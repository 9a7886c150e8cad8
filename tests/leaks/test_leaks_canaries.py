"""No attribute or payload value a caller sends shows up anywhere signoff writes or answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.engine.cel import CelEvalError
from signoff.engine.evaluator import Engine
from signoff.policy.loader import load_bundle
from signoff.server.convert import Limits, to_request
from tests.conftest import fixed_clock
from tests.leaks.support import Canaries, Captured, evaluation_error
from tests.server.harness import DAY

# Everything that leaves signoff, as the `captured` fixture recorded it.
SURFACES = (
    "spans",
    "metrics",
    "logs",
    "audit records",
    "event streams",
    "notifications",
    "grpc errors",
    "responses",
)


def _report(captured: Captured, surface: str, leaks: dict[str, list[str]]) -> str:
    lines = [f"{len(leaks)} item(s) on {surface} carry request values:"]
    texts = dict(captured.surfaces[surface])
    for what, found in list(leaks.items())[:15]:
        text = texts[what]
        at = text.find(captured.canaries.marker)
        excerpt = text[max(0, at - 120) : at + 160].replace("\n", "\\n")
        lines.append(f"  {what}: {', '.join(found[:6])}\n      ...{excerpt}...")
    return "\n".join(lines)


@pytest.mark.parametrize("surface", SURFACES)
def test_no_canary_reaches(captured: Captured, surface: str) -> None:
    assert captured.surfaces.get(surface), f"the run recorded nothing on {surface}"

    leaks = captured.leaks(surface)

    assert not leaks, _report(captured, surface, leaks)


def test_reviewer_views_never_show_a_masked_value(captured: Captured) -> None:
    canaries = captured.canaries
    # Reviewers see the payload keys no plan masks: that is their job, and it shows the
    # canaries did reach the server, so their absence elsewhere means something.
    shown = {c for _what, text in captured.reviewer_payloads for c in canaries.found(text)}
    assert any("-open-a.customers.0.country" in c for c in shown), sorted(shown)

    masked = {
        what: found
        for what, text in captured.reviewer_payloads
        if (found := canaries.found(text, kind="masked"))
    }

    assert not masked, masked
    assert not {c for c in shown if "-attr-" in c}, "attribute values in a reviewer payload"


def test_the_only_value_left_out_of_the_response_checks_is_the_named_requester_identity(
    captured: Captured,
) -> None:
    # `requester_identities: [principal.attr.owner]` makes the owner an identity that may not
    # approve, and ApprovalRequirement.requester_ids carries it by design (signoff.proto). The
    # response checks leave that one field out; this shows it hides nothing else.
    canaries = captured.canaries
    sent = {c for _what, text in captured.raw_responses for c in canaries.found(text, kind="attr")}
    checked = {
        c
        for _what, text in captured.surfaces["responses"]
        for c in canaries.found(text, kind="attr")
    }

    assert sent - checked == {canaries.identity}


@pytest.mark.parametrize("backend", ["cel-expr", "cel-python"])
def test_an_evaluation_error_names_no_request_value(leak_rules: Path, backend: str) -> None:
    # CelEvalError promises a message that is "safe to log". Nothing logs it today (the
    # engine keeps only the rule id), so this guards the promise before anyone relies on it.
    canaries = Canaries()
    engine = Engine(load_bundle(leak_rules, backend=backend), clock=fixed_clock(DAY))
    request = to_request(evaluation_error(canaries), Limits())
    activation = engine.bundle.backend.activation(engine.activation_data(request))
    [rule] = [r for r in engine.candidates("ledger", "purge") if r.rule_id.endswith("labelled")]
    assert rule.program is not None

    with pytest.raises(CelEvalError) as failure:
        rule.program.evaluate(activation)

    assert canaries.found(str(failure.value)) == []
