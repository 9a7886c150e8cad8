"""Reviewer views keep a bounded payload: a flood of huge requests cannot bloat every list."""

from __future__ import annotations

from typing import Any

from signoff.engine.model import Decision, Principal, PrincipalKind, Request, Resource, Verdict
from signoff.views import MAX_REVIEW_PAYLOAD_BYTES, Views


def view_of(payload: dict[str, Any]) -> object:
    views = Views(hash_key=b"k" * 32, hash_key_id="kid")
    request = Request(
        Principal("bob", PrincipalKind.HUMAN), "export", Resource("t"), payload=payload
    )
    return views.reviewer_view(request, Decision(Verdict.REQUIRE_APPROVAL, "rev")).payload


def test_a_small_payload_is_kept_for_review() -> None:
    assert view_of({"target": "s3://x"}) == {"target": "s3://x"}


def test_an_oversized_payload_is_replaced_by_a_marker() -> None:
    big = {"blob": "x" * (MAX_REVIEW_PAYLOAD_BYTES + 1)}
    kept = view_of(big)
    assert isinstance(kept, dict)
    assert set(kept) == {"_truncated"}
    assert "xxxx" not in str(kept)
