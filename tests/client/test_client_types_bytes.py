"""CheckItem.to_bytes: the request to_proto() makes, with reused encodings kept exact."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.client import CheckItem, Context, Decision, Field, InvalidInput, Principal, Resource
from signoff.v1 import signoff_pb2 as pb

leaves: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 0, 1, 1.0, True, False]),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
attributes = st.dictionaries(st.text(max_size=6), json_values, max_size=4)


def parsed(item: CheckItem) -> pb.CheckRequest:
    return pb.CheckRequest.FromString(item.to_bytes())


def same(item: CheckItem) -> bool:
    """Whether to_bytes() is to_proto(), to the bit (message == would take -0.0 for 0.0)."""
    ours = parsed(item).SerializeToString(deterministic=True)
    return ours == item.to_proto().SerializeToString(deterministic=True)


def item_of(
    principal_attrs: dict[str, Any],
    resource_attrs: dict[str, Any],
    context_attrs: dict[str, Any] | None,
    payload: dict[str, Any] | None,
) -> CheckItem:
    context = None if context_attrs is None else Context("prod", attributes=context_attrs)
    return CheckItem(
        Principal("p", roles=("a",), attributes=principal_attrs),
        "read",
        Resource("doc", id="d", attributes=resource_attrs, fields=(Field("x", ("t",)),)),
        context,
        payload,
    )


@settings(max_examples=150, deadline=None)
@given(
    attributes,
    attributes,
    st.none() | attributes,
    st.none() | attributes,
    st.lists(st.tuples(st.sampled_from("prcy"), st.text(max_size=2), json_values), max_size=6),
)
def test_to_bytes_parses_to_to_proto_after_any_change_to_the_attributes(
    p: dict[str, Any],
    r: dict[str, Any],
    c: dict[str, Any] | None,
    y: dict[str, Any] | None,
    changes: list[tuple[str, str, Any]],
) -> None:
    item = item_of(p, r, c, y)
    owners = {"p": p, "r": r, "c": c, "y": y}
    for _ in range(3):  # the second conversion keeps a snapshot, the third reuses it
        assert same(item)
    for owner, key, value in changes:
        target = owners[owner]
        if target is None:
            continue
        target[key] = value
        assert same(item)
        assert same(item)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (0.0, -0.0),
        (-0.0, 0),
        ([1, 2], (1, 2)),
        ({"a": 1}, {"a": True}),
        ([{"a": [0.0]}], [{"a": [-0.0]}]),
    ],
)
def test_reused_bytes_are_not_reused_for_values_python_calls_equal(before: Any, after: Any) -> None:
    attrs: dict[str, Any] = {"k": before}
    item = CheckItem(Principal("p", attributes=attrs), "read", Resource("doc"))
    assert same(item)
    assert same(item)
    attrs["k"] = after
    assert same(item)


def test_nested_mutation_is_seen() -> None:
    inner: dict[str, Any] = {"tags": ["pii"]}
    resource = Resource("doc", attributes={"meta": inner})
    item = CheckItem(Principal("p"), "read", resource)
    for _ in range(3):
        item.to_bytes()
    inner["tags"].append("secret")
    meta = parsed(item).resource.attributes.fields["meta"].struct_value
    assert list(meta.fields["tags"].list_value) == ["pii", "secret"]


def test_every_field_is_carried_and_optional_ones_stay_absent() -> None:
    full = CheckItem(
        Principal("agent:x", kind="agent", roles=("r",), attributes={"team": "data"}),
        "export",
        Resource("table", id="t", attributes={"rows": 3}, fields=(Field("a.b", ("pii",)),)),
        Context("prod", dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "10.0.0.1", {"t": "OPS-1"}),
        {},
        "apr-1",
        explain=True,
    )
    for _ in range(3):
        assert same(full)
    assert parsed(full).HasField("payload")  # an explicit empty payload is sent as such
    bare = CheckItem(Principal(""), "", Resource(""))
    assert same(bare)
    assert not parsed(bare).HasField("context")
    assert not parsed(bare).HasField("payload")


def test_to_bytes_raises_what_to_proto_raises() -> None:
    bad = CheckItem(Principal("p", attributes={"when": dt.date(2025, 1, 1)}), "read", Resource("d"))
    with pytest.raises(InvalidInput, match=r"Principal\.attributes"):
        bad.to_bytes()
    odd_action = CheckItem(Principal("p"), 7, Resource("d"))  # type: ignore[arg-type]
    with pytest.raises(type(_raised(odd_action.to_proto))):
        odd_action.to_bytes()
    surrogate = CheckItem(Principal("p"), "\ud800", Resource("d"))
    with pytest.raises(type(_raised(surrogate.to_proto))):
        surrogate.to_bytes()


def test_attributes_that_become_invalid_after_reuse_raise() -> None:
    attrs: dict[str, Any] = {"a": 1}
    principal = Principal("p", attributes=attrs)
    for _ in range(3):
        principal.to_bytes()
    attrs["a"] = dt.date(2025, 1, 1)
    with pytest.raises(InvalidInput, match=r"Principal\.attributes"):
        principal.to_bytes()


def _raised(call: Any) -> BaseException:
    try:
        call()
    except BaseException as err:  # the test compares whatever it is
        return err
    raise AssertionError("expected an error")


def test_decision_from_proto_is_a_plain_frozen_decision() -> None:
    response = pb.CheckResponse(
        verdict=pb.VERDICT_MASK,
        decision_id="d",
        policy_revision="rev",
        matched_rules=["r"],
        masking_plan=pb.MaskingPlan(
            fields=[pb.FieldMask(path="a", operator=pb.MASK_OPERATOR_REDACT)]
        ),
    )
    decision = Decision.from_proto(response)
    assert decision == Decision(
        Decision.from_proto(response).verdict,
        "d",
        "rev",
        ("r",),
        masking_plan=pb.MaskingPlan(
            fields=[pb.FieldMask(path="a", operator=pb.MASK_OPERATOR_REDACT)]
        ),
    )
    response.masking_plan.fields[0].path = "b"  # the decision holds a copy
    assert decision.masking_plan.fields[0].path == "a"
    assert dataclasses.replace(decision, decision_id="e").decision_id == "e"
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.decision_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("uses", [0, 1, 2, 3])
def test_copied_and_pickled_values_keep_converting_right(uses: int) -> None:
    item = CheckItem(Principal("p", attributes={"a": 1}), "read", Resource("doc"))
    for _ in range(uses):
        item.to_bytes()
    for each in (copy.copy(item), copy.deepcopy(item), pickle.loads(pickle.dumps(item))):
        wire = each.principal.to_bytes()  # no to_proto() to fall back on here
        assert pb.Principal.FromString(wire) == each.principal.to_proto()
        assert same(each)
        each.principal.attributes["a"] = True  # type: ignore[index]
        assert same(each)
