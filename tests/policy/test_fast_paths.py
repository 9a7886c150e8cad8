"""The loader's fast paths (libyaml, fastjsonschema) answer exactly as the reference ones."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.policy import model, source
from tests.conftest import RULES

BUNDLED = {p.name: p.read_text(encoding="utf-8") for p in model.policy_files(RULES)}
# Fragments that libyaml and PyYAML's pure-Python parser are known to treat differently, or
# that are simply easy to get wrong: tabs, odd scalars, flow and block indicators, tags.
JUNK = [
    "\t", " \t", "\t\n", "a:b", "{a:b}", "[a:b]", "? a\n: b\n", "'\\x'", '"\\/"', '"\\x41"',
    '"\\q"', "!foo ", "!<tag:x> ", "\u2028", "\x85", "\r", "\r\n", "---", "...", "&x ", "*x",
    "<<", "!!", "|-", "|+", ">2", "|1", ">#-", "'a\n b'", "#c", " #c", "- - ", ": ", "?", ",",
    "{", "[", "}", "]", "\ufeff", "2026-01-01", "0x1F", "1_000", ".inf", "~", "yes", "\n  ",
]  # fmt: skip


def outcome(parse: Any, text: str) -> tuple[Any, ...]:
    try:
        return ("ok", _typed(parse(text)))
    except source.YamlSyntaxError as exc:
        return ("error", exc.position, str(exc))


def _typed(x: Any) -> Any:
    # Compare types too: 1, 1.0 and True are equal in Python but not in a policy.
    if isinstance(x, dict):
        return ("map", tuple((_typed(k), _typed(v)) for k, v in x.items()))
    if isinstance(x, list):
        return ("seq", tuple(_typed(v) for v in x))
    return (type(x).__name__, repr(x))


def fast(text: str) -> Any:
    return source.parse("f.yaml", text).data


def reference(text: str) -> Any:
    return source._slow_data(text, {})


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(sorted(BUNDLED.values())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(JUNK)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 12)) :]
    return text


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_files_parse_the_same_on_both_paths(name: str) -> None:
    assert outcome(fast, BUNDLED[name]) == outcome(reference, BUNDLED[name])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_damaged_files_parse_or_fail_the_same_on_both_paths(text: str) -> None:
    assert outcome(fast, text) == outcome(reference, text)


def test_positions_are_those_of_the_reference_parser() -> None:
    text = BUNDLED["customer_data.yaml"]
    quick = source.parse("f.yaml", text)
    nodes: dict[source.Path_, yaml.Node] = {}
    source._slow_data(text, nodes)
    path = ("policies", 0, "rules", 1, "when")
    assert quick.position(path) == source.SourceFile("f.yaml", text, None, _nodes=nodes).position(
        path
    )


def _quick_valid(data: Any) -> bool:
    import fastjsonschema

    try:
        model._quick_check()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "allow", "1h"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "effect", "when", "roles", "x"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


@st.composite
def damaged_documents(draw: st.DrawFn) -> Any:
    doc = yaml.safe_load(draw(st.sampled_from(sorted(BUNDLED.values()))))
    for _ in range(draw(st.integers(1, 3))):
        node, key = doc, None
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            parent, node = node, node[key]
        if key is None:
            continue
        if draw(st.booleans()):
            parent[key] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[key]
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_documents())
def test_the_quick_schema_check_agrees_with_jsonschema(doc: Any) -> None:
    reference_valid = jsonschema.Draft202012Validator(model.file_schema()).is_valid(doc)
    assert _quick_valid(doc) == reference_valid


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_files_pass_the_quick_schema_check(name: str) -> None:
    assert _quick_valid(yaml.safe_load(BUNDLED[name]))


@pytest.mark.parametrize("text", ['a: !!bool ""', "a: !!int x", "a: !!float y"])
def test_a_tag_on_a_value_it_cannot_take_is_a_positioned_error(text: str) -> None:
    assert outcome(fast, text) == outcome(reference, text)
    result = outcome(fast, text)
    assert result[0] == "error"
    assert result[1] == source.Position(1, 4)
