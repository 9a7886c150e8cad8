"""The per-schema section converter gives exactly convert_section's results and refusals."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.engine.schema import TYPES, AttributeSchema, convert_section, section_converter
from signoff.errors import InvalidRequest

SCHEMA = AttributeSchema({"principal": {f"a_{t}": t for t in TYPES}})
NAMES = [*SCHEMA.attrs("principal"), "undeclared", "x" * 200]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    # What Struct makes of JSON integers: doubles, some beyond what a double holds exactly.
    | st.sampled_from([0.0, -0.0, 3.0, -7.0, 2.0**53, 2.0**53 + 2, 2.0**63, 1e300, 0.5])
    | st.text(alphabet=st.sampled_from(["a", "\0", "é", "Z", "1", ":"]), max_size=6)
    | st.sampled_from(["2026-03-02T14:00:00Z", "15m", "1h30m", "2026-03-02T14:00:00"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


def _outcome(run: Any) -> Any:
    try:
        return ("ok", run())
    except InvalidRequest as exc:
        return ("refused", exc.field, exc.message)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES), values, max_size=5))
def test_the_section_converter_answers_as_convert_section(attrs: dict[str, Any]) -> None:
    fast = section_converter(SCHEMA, "principal")
    where = "principal.attributes"
    assert _outcome(lambda: fast(attrs, where)) == _outcome(
        lambda: convert_section(SCHEMA, "principal", attrs, where)
    )
