"""The one CEL scanner: literals, variable references, and the two directions it may err in."""

from __future__ import annotations

from signoff.engine import celscan

ROOTS = frozenset({"principal", "resource", "context", "payload"})


def _found(text: str, *, miss_nothing: bool) -> set[tuple[str, tuple[str, ...]]]:
    return {(s.root, s.names) for s in celscan.selections(text, ROOTS, miss_nothing=miss_nothing)}


def test_a_comprehension_variable_spelled_like_a_root_counts_only_when_nothing_may_be_missed() -> (
    None
):
    text = "resource.attr.tags.exists(principal, principal.size() > 2)"
    assert _found(text, miss_nothing=True) == {
        ("resource", ("attr", "tags")),
        ("principal", ()),
    }
    assert _found(text, miss_nothing=False) == {("resource", ("attr", "tags"))}


def test_text_the_grammar_refuses_is_still_scanned_when_nothing_may_be_missed() -> None:
    text = "principal.attr.owner == resource.attr.owner &&"  # cut off: no grammar takes it
    assert _found(text, miss_nothing=True) == {
        ("principal", ("attr", "owner")),
        ("resource", ("attr", "owner")),
    }
    assert _found(text, miss_nothing=False) == set()


def test_variable_references_inside_literals_and_comments_are_not_references() -> None:
    text = "V.a && 'V.b' == r\"V.c\" && b'''V.d''' != b'' // V.e\n|| V.f"
    assert [name for name, _ in celscan.variable_references(text)] == ["a", "f"]


def test_a_literal_never_closed_hides_the_rest_of_the_text() -> None:
    assert celscan.variable_references("V.a == 'open && V.b") == [("a", 0)]


def test_a_selection_knows_the_method_called_on_it_and_what_surrounds_it() -> None:
    (roles,) = celscan.selections("'x' in principal.roles", ROOTS, miss_nothing=True)
    assert (roles.before, roles.names, roles.after, roles.method) == ("in", ("roles",), "", "")
    (tags,) = celscan.selections("resource.attr.tags.exists(t, t == 'a')", ROOTS, miss_nothing=True)
    assert (tags.names, tags.after, tags.method) == (("attr", "tags"), ".", "exists")
