"""Repeated decision records are encoded from a kept template: byte for byte the plain encoding."""

from __future__ import annotations

import io
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.audit.chain import ENCODER, Canonical, canonical_json, rfc3339_ms
from signoff.audit.log import AuditLog, DecisionArgs, _encode_scalar, _Templates
from signoff.audit.record import DecisionRecord
from signoff.engine.model import Decision, FieldMask, MaskOp, ShadowOutcome, Verdict
from tests.audit.conftest import MakeLog

# Any text a caller or a policy may put in a record, NUL and quotes included.
text = st.text(max_size=12)
texts = st.lists(text, max_size=3).map(tuple)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def shared_parts(draw: st.DrawFn) -> tuple[Decision, Decision, Canonical]:
    """A policy decision, the enforced one, and a request view: what repeats share."""
    masking = tuple(
        FieldMask(path, op, keep_first=first)
        for path, op, first in draw(
            st.lists(st.tuples(text, st.sampled_from(MaskOp), st.integers(0, 3)), max_size=2)
        )
    )
    shadow = draw(st.none() | st.builds(ShadowOutcome, st.sampled_from(Verdict), texts, texts))
    policy = Decision(
        draw(st.sampled_from(Verdict)),
        draw(text),
        matched_rules=draw(texts),
        reasons=draw(texts),
        masking_plan=masking,
        errored_rules=draw(texts),
        shadow=shadow,
    )
    enforced = policy if draw(st.booleans()) else Decision(Verdict.ALLOW, policy.policy_revision)
    view = Canonical.of(draw(st.dictionaries(text, json_values, max_size=4)))
    return policy, enforced, view


def _plain(args: DecisionArgs, ns: int, seq: int, prev: str) -> str:
    """What the writer encodes without templates: the whole document of the record."""
    body = AuditLog._body(("decisions", ns, DecisionRecord.of(*args)))
    body["seq"], body["prev"] = seq, prev
    return canonical_json(body)


@settings(max_examples=200, deadline=None)
@given(
    shared_parts(),
    st.lists(
        st.tuples(text, text, st.sampled_from(["", "spiffe://x/y"]), st.integers(1, 10**12)),
        min_size=1,
        max_size=4,
    ),
)
def test_templated_records_are_byte_for_byte_their_canonical_json(
    parts: tuple[Decision, Decision, Canonical], calls: list[tuple[str, str, str, int]]
) -> None:
    policy, enforced, view = parts
    templates = _Templates()
    prev = "0" * 64
    for index, (approval_id, trace_id, caller, seq) in enumerate(calls * 3):
        args: DecisionArgs = (
            str(uuid.uuid4()),
            enforced,
            policy,
            approval_id,
            trace_id,
            caller,
            view,
        )
        ns = 1_700_000_000_000_000_000 + index * 1_000_001
        got = templates.encode(args, rfc3339_ms(ns), seq, prev)
        if got is not None:
            assert got == _plain(args, ns, seq, prev)
            json.loads(got)  # and still one JSON document
        prev = f"{index:064x}"


def test_a_repeated_record_is_templated_from_its_second_sighting() -> None:
    decision = Decision(Verdict.DENY, "rev", matched_rules=("r1",), reasons=("no",))
    view = Canonical.of({"action": "export"})
    templates = _Templates()
    seen = []
    for n in range(3):
        args: DecisionArgs = (f"id-{n}", decision, decision, "", "ab" * 16, "", view)
        seen.append(templates.encode(args, "2026-01-01T00:00:00.000Z", n + 1, "0" * 64))
    assert seen[0] is None
    assert seen[1] is not None
    assert '"decision_id":"id-1"' in seen[1]
    assert seen[2] is not None
    assert '"seq":3' in seen[2]


def test_records_written_through_templates_verify(make_log: MakeLog) -> None:
    log = make_log()
    decision = Decision(Verdict.ALLOW, "rev", matched_rules=("r1",))
    view = Canonical.of({"action": "read"})
    for n in range(20):
        log.submit_decision(f"id-{n}", decision, decision, "", "", "", view)
    assert log.flush()
    result = log.verify("decisions")
    assert result.ok
    assert result.checked == 20


def test_a_submitted_decision_is_recorded_as_its_decision_record(make_log: MakeLog) -> None:
    log = make_log()
    policy = Decision(Verdict.REQUIRE_APPROVAL, "rev", matched_rules=("r1",))
    enforced = Decision(Verdict.ALLOW, "rev", matched_rules=("r1",))
    view = {"action": "grant"}
    log.submit_decision("id-1", enforced, policy, "apr_1", "ab" * 16, "spiffe://a", view)
    assert log.flush()
    out = io.StringIO()
    log.export("decisions", None, None, out)
    (stored,) = [json.loads(line) for line in out.getvalue().splitlines()]
    want = DecisionRecord.of("id-1", enforced, policy, "apr_1", "ab" * 16, "spiffe://a", view)
    for name, value in want.doc().items():
        assert stored[name] == value


@given(st.text() | st.integers(min_value=0))
def test_spliced_values_are_encoded_as_the_canonical_encoder_does(value: str | int) -> None:
    assert _encode_scalar(value) == ENCODER.encode(value)
