"""YAML reading: errors point at the mistake, and keys are always names."""

from __future__ import annotations

import pytest

from signoff.engine.evaluator import Engine
from signoff.engine.model import Context, Principal, PrincipalKind, Request, Resource, Verdict
from signoff.errors import PolicyError
from signoff.policy.loader import load_bundle
from signoff.policy.source import YamlSyntaxError, _slow_data, parse
from tests.conftest import WriteRules

POLICY_HEAD = "policies:\n  - id: p\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        (
            POLICY_HEAD + "    resources: [db\n    actions: [read]\n",
            3,
            16,
            "'[' is never closed (expected ',' or ']', but got ':' at line 4, column 12)",
        ),
        (
            POLICY_HEAD + "    resources: [db]\n    variables: {a: b\n    actions: [read]\n",
            4,
            16,
            "'{' is never closed",
        ),
        (
            POLICY_HEAD + '    resources: ["db]\n    actions: [read]\n',
            3,
            17,
            "the quoted string is never closed",
        ),
    ],
)
def test_an_unclosed_opening_is_reported_where_it_opens(
    write_rules: WriteRules, text: str, line: int, column: int, fragment: str
) -> None:
    root = write_rules(p=text)

    with pytest.raises(PolicyError) as info:
        load_bundle(root)

    [problem] = info.value.problems
    assert (problem.line, problem.column) == (line, column)
    assert fragment in problem.message


def test_a_mistake_on_the_line_of_its_bracket_is_reported_where_parsing_stopped() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse("f.yaml", "a: [x, y: z: w]\n")

    assert (info.value.position.line, info.value.position.column) == (1, 12)
    assert str(info.value) == "invalid YAML: expected ',' or ']', but got ':'"


SWITCHES = """
schema:
  principal: {on: bool, off: bool, yes: bool, no: bool, y: int, n: int}
policies:
  - id: p
    resources: [db]
    actions: [read]
    rules:
      - id: r
        effect: allow
        when: principal.attr.off && principal.attr.y == 1
"""


def test_yaml_1_1_boolean_words_as_keys_are_names(write_rules: WriteRules) -> None:
    bundle = load_bundle(write_rules(p=SWITCHES))
    who = Principal("al@acme.io", PrincipalKind.HUMAN, (), {"off": True, "y": 1})

    decision = Engine(bundle).decide(Request(who, "read", Resource("db"), Context(), {}))

    assert decision.verdict is Verdict.ALLOW
    assert set(bundle.schema.attrs("principal")) == {"on", "off", "yes", "no", "y", "n"}


def test_boolean_words_as_keys_read_alike_on_both_parsers() -> None:
    text = "off: 1\nYes: {n: [on, off]}\n"

    assert (
        parse("f.yaml", text).data
        == _slow_data(text, {})
        == {"off": 1, "Yes": {"n": [True, False]}}
    )


@pytest.mark.parametrize(("key", "kind"), [("1", "int"), ("null", "null"), ("1.5", "float")])
def test_a_key_that_is_not_a_name_is_named_with_a_hint_to_quote_it(key: str, kind: str) -> None:
    with pytest.raises(YamlSyntaxError) as info:
        parse("f.yaml", f"schema:\n  principal:\n    {key}: string\n")

    assert (info.value.position.line, info.value.position.column) == (3, 5)
    assert str(info.value) == (
        f"mapping key '{key}' reads as a YAML {kind}, not a name: quote it (\"{key}\":) to use "
        "it as one"
    )
