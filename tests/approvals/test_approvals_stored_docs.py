"""Stored approval documents: `to_doc` gives exactly what `dataclasses.asdict` gives."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from signoff.approvals.model import ApprovalRequest, ApprovalSummary, MaskedField, ReviewerView
from signoff.engine.model import FieldRef


class Colour(enum.Enum):
    RED = "red"


class Pair(NamedTuple):
    left: Any
    right: Any


text = st.text(max_size=8)
atoms = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
# JSON-shaped payloads, plus the odd values an in-process caller could put there.
values = st.recursive(
    atoms | st.just(Colour.RED),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(text, inner, max_size=4)
        | st.builds(Pair, inner, inner)
    ),
    max_leaves=20,
)
names = st.lists(text, max_size=3).map(tuple)
fields = st.lists(st.builds(FieldRef, text, names), max_size=3).map(tuple)
views = st.builds(
    ReviewerView,
    requester_id=text,
    requester_kind=text,
    action=text,
    resource_kind=text,
    requester_roles=names,
    resource_id=text,
    fields=fields,
    payload=values,
    environment=text,
    reasons=names,
    matched_rules=names,
    masking_plan=st.lists(
        st.builds(MaskedField, text, text, st.integers(0, 9), st.integers(0, 9)), max_size=2
    ).map(tuple),
)
requirements = st.dictionaries(text, values, max_size=4)
requests = st.builds(
    ApprovalRequest,
    requester_id=text,
    requester_kind=text,
    requester_ids=names,
    requirement=requirements,
    view=views,
    policy_revision=text,
    decision_id=text,
)
summaries = st.builds(
    ApprovalSummary,
    requester_id=text,
    requester_kind=text,
    action=text,
    resource_kind=text,
    resource_id=text,
    environment=text,
    fields=fields,
    reasons=names,
    matched_rules=names,
    requirement=requirements,
    pending_expires_at=text,
)


@given(st.one_of(views, requests, summaries))
def test_to_doc_is_exactly_asdict(stored: ReviewerView | ApprovalRequest | ApprovalSummary) -> None:
    doc = stored.to_doc()
    expected = dataclasses.asdict(stored)
    assert doc == expected
    # Same types all the way down (a tuple stays a tuple), so the JSON written is the same.
    assert repr(doc) == repr(expected)
    assert json.dumps(doc, default=repr, sort_keys=False) == json.dumps(
        expected, default=repr, sort_keys=False
    )


def test_to_doc_copies_mutable_members_as_asdict_does() -> None:
    payload = {"rows": [{"email": "a@b.c"}]}
    view = ReviewerView("ivan", "human", "export", "table", payload=payload)
    doc = view.to_doc()
    doc["payload"]["rows"][0]["email"] = "changed"
    assert payload == {"rows": [{"email": "a@b.c"}]}
