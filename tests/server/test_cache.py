from __future__ import annotations

import datetime as dt

import pytest

from signoff.engine.celscan import CLOCK_FREE, clock_steady_for
from signoff.engine.evaluator import Engine
from signoff.engine.model import Request, Verdict
from signoff.errors import InvalidRequest
from signoff.policy.loader import load_bundle
from signoff.server.cache import DecisionCache
from tests.conftest import WriteRules
from tests.engine.test_evaluator import SCHEMA, one_policy, req


class Clock:
    def __init__(self, iso: str) -> None:
        self.now = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def engine_with(write_rules: WriteRules, when: str, clock: Clock) -> Engine:
    rule = f'      - {{id: r, effect: allow, when: "{when}"}}'
    root = write_rules(schema=SCHEMA, policies=one_policy(rule))
    return Engine(load_bundle(root), clock=clock)


class Parser:
    """Counts how often the cache had to decode (and so decide) a request."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.calls = 0

    def __call__(self) -> Request:
        self.calls += 1
        return self.request


@pytest.mark.parametrize(
    ("source", "steady"),
    [
        ("principal.attr.tenant == 'a'", CLOCK_FREE),
        ("now.getHours('UTC') >= 8", 900),
        ("now.getDayOfWeek('Europe/Berlin') < 5 && now.getHours() < 18", 900),
        ("now.getMinutes() == 0", 60),
        ("now.getSeconds() < 30 && now.getHours() > 1", 1),
        ("now - timestamp('2026-01-01T00:00:00Z') > duration('1h')", 0),
        ("now > context.time", 0),
        ("[1].exists(now, now > 0)", 0),  # errs towards never caching
        ("principal.attr.now == 'x'", 0),  # a field, but counting it only costs caching
        (".now < timestamp('2030-01-01T12:00:00Z')", 0),  # the leading dot: the same `now`
        ("now.getHours('+05:30') > 1", 900),
        ("now.getHours('+00:07') > 1", 60),  # an odd offset turns the hour at :07
        ("now.getHours(principal.attr.zone) > 1", 60),
        ('now.getHours("UTC") > 1', 900),
    ],
)
def test_clock_steadiness_of_expressions(source: str, steady: float) -> None:
    assert clock_steady_for(source) == steady


def test_identical_bytes_reuse_the_decision(write_rules: WriteRules) -> None:
    clock = Clock("2026-03-02T14:00:00Z")
    cache = DecisionCache(engine_with(write_rules, "principal.attr.mfa", clock))
    parse = Parser(req(pattr={"mfa": True}))
    first = cache.decide(b"request-1", parse)
    clock.advance(days=30)  # time cannot matter to this rule
    again = cache.decide(b"request-1", parse)
    assert again is first
    assert parse.calls == 1
    assert first.decision.verdict is Verdict.ALLOW
    other = Parser(req(pattr={"mfa": False}))
    assert cache.decide(b"request-2", other).decision.verdict is Verdict.DENY


def test_hour_rules_reuse_a_decision_only_within_its_quarter_hour(
    write_rules: WriteRules,
) -> None:
    clock = Clock("2026-03-02T13:29:00Z")  # 18:59 in Kolkata (UTC+5:30)
    cache = DecisionCache(engine_with(write_rules, "now.getHours('Asia/Kolkata') < 19", clock))
    parse = Parser(req())
    assert cache.decide(b"k", parse).decision.verdict is Verdict.ALLOW
    clock.advance(seconds=30)
    cache.decide(b"k", parse)
    assert parse.calls == 1
    clock.advance(seconds=31)  # 13:30:01 UTC is 19:00:01 in Kolkata: a new quarter hour
    decided = cache.decide(b"k", parse)
    assert parse.calls == 2
    assert decided.decision.verdict is Verdict.DENY


def test_rules_comparing_now_are_never_reused(write_rules: WriteRules) -> None:
    clock = Clock("2026-03-02T14:00:00Z")
    when = "now < timestamp('2026-03-02T14:00:01Z')"
    cache = DecisionCache(engine_with(write_rules, when, clock))
    parse = Parser(req())
    assert cache.decide(b"k", parse).decision.verdict is Verdict.ALLOW
    clock.advance(seconds=2)
    assert cache.decide(b"k", parse).decision.verdict is Verdict.DENY
    assert parse.calls == 2
    assert len(cache) == 0


def test_evaluation_errors_are_not_kept(write_rules: WriteRules) -> None:
    clock = Clock("2026-03-02T14:00:00Z")
    cache = DecisionCache(engine_with(write_rules, "principal.attr.level / 0 > 1", clock))
    parse = Parser(req(pattr={"level": 1}))
    assert cache.decide(b"k", parse).decision.errored_rules
    cache.decide(b"k", parse)
    assert parse.calls == 2
    assert len(cache) == 0


def test_invalid_requests_are_not_kept(write_rules: WriteRules) -> None:
    cache = DecisionCache(engine_with(write_rules, "true", Clock("2026-03-02T14:00:00Z")))

    def bad() -> Request:
        raise InvalidRequest("principal.id", "is required")

    for _ in range(2):
        with pytest.raises(InvalidRequest):
            cache.decide(b"k", bad)
    assert len(cache) == 0


def test_the_cache_is_bounded_and_drops_its_oldest_entry(write_rules: WriteRules) -> None:
    cache = DecisionCache(
        engine_with(write_rules, "true", Clock("2026-03-02T14:00:00Z")),
        max_entries=3,
        max_key_bytes=8,
    )
    parse = Parser(req())
    for key in (b"a", b"b", b"c", b"d"):
        cache.decide(key, parse)
    assert len(cache) == 3
    cache.decide(b"a", parse)  # was dropped: decided again
    assert parse.calls == 5
    cache.decide(b"too-long-key", parse)
    cache.decide(b"too-long-key", parse)
    assert parse.calls == 7


def test_a_zero_sized_cache_keeps_nothing(write_rules: WriteRules) -> None:
    cache = DecisionCache(
        engine_with(write_rules, "true", Clock("2026-03-02T14:00:00Z")), max_entries=0
    )
    parse = Parser(req())
    cache.decide(b"k", parse)
    cache.decide(b"k", parse)
    assert parse.calls == 2
