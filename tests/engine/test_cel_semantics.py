"""CEL semantics both backends share: JSON numbers, refused numbers, cel-spec agreement."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.engine import cel
from signoff.engine.evaluator import EVALUATION_ERROR, Engine
from signoff.engine.model import Context, Principal, PrincipalKind, Request, Resource, Verdict
from signoff.errors import InvalidRequest, PolicyError
from signoff.policy.loader import load_bundle
from tests.conftest import WriteRules

NOW = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)


def quota_engine(write_rules: WriteRules, backend: str, when: str) -> Engine:
    rules = write_rules(
        schema="""
        schema:
          resource: {info: dyn, score: double}
        """,
        p=f"""
        policies:
          - id: quota
            resources: [bucket]
            actions: [write]
            rules:
              - {{id: allow, effect: allow}}
              - {{id: over, effect: deny, reason: over quota, when: "{when}"}}
        """,
    )
    return Engine(load_bundle(rules, backend=backend))


def write(attrs: dict[str, Any]) -> Request:
    return Request(
        principal=Principal("u", PrincipalKind.HUMAN),
        action="write",
        resource=Resource("bucket", "b", attrs),
    )


def test_a_json_number_divides_as_a_double(write_rules: WriteRules, backend: str) -> None:
    # 150/100 is 1.5 in CEL's JSON mapping; as ints it was 1, and the deny never fired.
    engine = quota_engine(
        write_rules, backend, "resource.attr.info.used / resource.attr.info.quota > 1.0"
    )
    decision = engine.decide(write({"info": {"used": 150, "quota": 100}}))
    assert (decision.verdict, decision.reasons) == (Verdict.DENY, ("over quota",))
    assert engine.decide(write({"info": {"used": 50, "quota": 100}})).verdict is Verdict.ALLOW


def test_a_json_number_multiplies_with_a_double(write_rules: WriteRules, backend: str) -> None:
    engine = quota_engine(write_rules, backend, "resource.attr.info.used * 0.5 > 10.0")
    assert engine.decide(write({"info": {"used": 30}})).verdict is Verdict.DENY
    assert engine.decide(write({"info": {"used": 10}})).verdict is Verdict.ALLOW


def test_a_json_number_equals_an_int_literal(write_rules: WriteRules, backend: str) -> None:
    engine = quota_engine(write_rules, backend, "resource.attr.info.level == 3")
    assert engine.decide(write({"info": {"level": 3}})).verdict is Verdict.DENY
    assert engine.decide(write({"info": {"level": 3.0}})).verdict is Verdict.DENY
    assert engine.decide(write({"info": {"level": 3.5}})).verdict is Verdict.ALLOW


def test_a_json_number_modulo_an_int_fails_closed_on_both(
    write_rules: WriteRules, backend: str
) -> None:
    # cel-spec has no double % int: the documented way is int(n) % 2.
    engine = quota_engine(write_rules, backend, "resource.attr.info.n % 2 == 0")
    decision = engine.decide(write({"info": {"n": 4}}))
    assert (decision.verdict, decision.reasons) == (Verdict.DENY, (EVALUATION_ERROR,))
    engine = quota_engine(write_rules, backend, "int(resource.attr.info.n) % 2 == 0")
    assert engine.decide(write({"info": {"n": 4}})).verdict is Verdict.DENY
    assert engine.decide(write({"info": {"n": 5}})).verdict is Verdict.ALLOW


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("attrs", "where"),
    [
        (lambda v: {"score": v}, "resource.attributes.score"),
        (lambda v: {"info": {"deep": [1, v]}}, "resource.attributes.info"),
    ],
)
def test_nan_and_infinity_are_refused_naming_the_field(
    write_rules: WriteRules, backend: str, bad: float, attrs: Any, where: str
) -> None:
    engine = quota_engine(write_rules, backend, "resource.attr.score >= 0.8")
    with pytest.raises(InvalidRequest) as raised:
        engine.decide(write(attrs(bad)))
    assert raised.value.field == where


def test_an_int_beyond_64_bits_is_refused(write_rules: WriteRules) -> None:
    rules = write_rules(
        schema="schema:\n  resource: {n: int}\n",
        p="""
        policies:
          - id: p
            resources: [bucket]
            actions: [write]
            rules: [{id: allow, effect: allow, when: resource.attr.n > 0}]
        """,
    )
    engine = Engine(load_bundle(rules))
    with pytest.raises(InvalidRequest) as raised:
        engine.decide(write({"n": 2**63}))
    assert raised.value.field == "resource.attributes.n"


# --- any exception out of a program is that rule's evaluation error --------------------------

COLLIDING_KEYS = "{resource.attr.info.a: 1, resource.attr.info.b: 2}['x'] == 1"


def test_colliding_map_literal_keys_are_an_evaluation_error(
    write_rules: WriteRules, backend: str
) -> None:
    engine = quota_engine(write_rules, backend, COLLIDING_KEYS)
    decision = engine.decide(write({"info": {"a": "x", "b": "x"}}))
    assert (decision.verdict, decision.reasons) == (Verdict.DENY, (EVALUATION_ERROR,))
    assert decision.errored_rules == ("quota/over",)


def test_a_shadow_rule_that_raises_never_changes_the_enforced_answer(
    write_rules: WriteRules, backend: str
) -> None:
    rules = write_rules(
        schema="schema:\n  resource: {info: dyn}\n",
        p=f"""
        policies:
          - id: quota
            resources: [bucket]
            actions: [write]
            rules:
              - {{id: allow, effect: allow}}
              - {{id: trial, effect: deny, shadow: true, when: "{COLLIDING_KEYS}"}}
        """,
    )
    decision = Engine(load_bundle(rules, backend=backend)).decide(
        write({"info": {"a": "x", "b": "x"}})
    )
    assert decision.verdict is Verdict.ALLOW
    assert decision.shadow is not None
    assert decision.shadow.errored_rules == ("quota/trial",)


# --- the two backends agree with cel-spec ----------------------------------------------------


BACKENDS = {name: cel.backend(name) for name in cel.BACKENDS}
for _backend in BACKENDS.values():
    # cel-python's parser raises the recursion limit on first use; Hypothesis objects to
    # that happening inside a test.
    _backend.compile("1 == 1")


def both(expression: str, payload: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, backend in BACKENDS.items():
        data = {"payload": payload, "now": NOW}
        try:
            out[name] = backend.compile(expression).evaluate(backend.activation(data))
        except cel.CelEvalError:
            out[name] = "error"
    return out


@pytest.mark.parametrize(
    ("expression", "payload", "expected"),
    [
        # Heterogeneous equality: other kinds are never equal (false, not an error).
        ("payload.approved in [true]", {"approved": 1.0}, False),
        ("payload.blocked == 0", {"blocked": False}, False),
        ("payload.blocked != 0", {"blocked": False}, True),
        ("payload.n == 1", {"n": 1.0}, True),
        ("payload.n in [1, 2]", {"n": 2.0}, True),
        ("payload.n != null", {"n": 2.0}, True),
        ("payload.l == [1, 2]", {"l": [1.0, 2.0]}, True),
        ("payload.m == {'a': 1}", {"m": {"a": 1.0}}, True),
        # has() on a list is an error, not false.
        ("!has(payload.m.level)", {"m": [1.0]}, "error"),
        ("has(payload.m.level)", {"m": {"level": 1.0}}, True),
        ("has(payload.m.level)", {"m": {}}, False),
        ("has(payload.missing.level)", {}, "error"),
        # The int becomes a double, lossily, as cel-spec's conformance suite requires.
        ("payload.big > 9223372036854775807", {"big": 2.0**63}, False),
        ("payload.big >= 9223372036854775807", {"big": 2.0**63}, True),
        ("payload.big > 9223372036854775807", {"big": 2.0**64}, True),
        ("payload.n < -9223372036854775808", {"n": -(2.0**64)}, True),
        # No mixed arithmetic.
        ("payload.n + 1 == 3", {"n": 2.0}, "error"),
        ("payload.n + 1.0 == 3.0", {"n": 2.0}, True),
        ("payload.n / 0.0 > 1.0", {"n": 2.0}, True),
        ("payload.n / 0.0 < 0.0", {"n": -2.0}, True),
        ("payload.n * 0.5 > 10.0", {"n": 30.0}, True),
        # NaN is unordered and unequal, and a bad regex is an error.
        ("payload.n / 0.0 == payload.n / 0.0", {"n": 0.0}, False),
        ("payload.s.matches('[')", {"s": "x"}, "error"),
    ],
)
def test_both_backends_answer_as_cel_spec_does(
    expression: str, payload: dict[str, Any], expected: object
) -> None:
    assert both(expression, payload) == {"cel-expr": expected, "cel-python": expected}


def test_a_timestamp_literal_finer_than_a_microsecond_is_refused(write_rules: WriteRules) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [doc]
            actions: [read]
            rules:
              - {id: r, effect: allow, when: "context.time == timestamp('2026-01-01T00:00:00.123456789Z')"}
        """,
    )
    for name in cel.BACKENDS:
        with pytest.raises(PolicyError) as raised:
            load_bundle(rules, backend=name)
        (problem,) = raised.value.problems
        assert "finer than a microsecond" in problem.message
    fine = rules / "p.yaml"
    fine.write_text(fine.read_text().replace("123456789Z", "123456000Z"))
    for name in cel.BACKENDS:
        engine = Engine(load_bundle(rules, backend=name))
        sent = dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)
        request = Request(
            principal=Principal("u", PrincipalKind.HUMAN),
            action="read",
            resource=Resource("doc"),
            context=Context(time=sent),
        )
        assert engine.decide(request).verdict is Verdict.ALLOW, name


json_st = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.integers(-(2**60), 2**60).map(float)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=6,
)
PROBES = [
    "payload.a == payload.b",
    "payload.a != payload.b",
    "payload.a < payload.b",
    "payload.a >= payload.b",
    "payload.a in [payload.b]",
    "payload.a in payload.b",
    "payload.a == 1",
    "payload.a > 1",
    "payload.a + payload.b == payload.b + payload.a",
    "has(payload.a.x)",
    "size(payload.a) == 1",
]


@settings(max_examples=150, deadline=None)
@given(a=json_st, b=json_st, probe=st.sampled_from(PROBES))
def test_the_backends_agree_on_json_values(a: Any, b: Any, probe: str) -> None:
    answers = both(probe, {"a": a, "b": b})
    assert answers["cel-expr"] == answers["cel-python"], (probe, a, b, answers)
