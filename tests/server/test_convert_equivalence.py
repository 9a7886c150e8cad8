"""The lean CheckRequest conversion gives exactly the former one's requests and refusals."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.engine import model
from signoff.errors import InvalidRequest
from signoff.server.convert import _KINDS, Limits, Principals, _bounded_struct, to_request
from signoff.v1 import signoff_pb2 as pb

# The conversion as it was before it was made lean, kept verbatim as the reference.


def _old_text(value: str, field: str, limits: Limits, *, required: bool = False) -> str:
    if required and not value:
        raise InvalidRequest(field, "is required")
    if len(value) > limits.max_id_length:
        raise InvalidRequest(field, f"longer than {limits.max_id_length} characters")
    return value


def old_to_request(msg: pb.CheckRequest, limits: Limits) -> model.Request:
    """Validate a CheckRequest; raises InvalidRequest naming the first offending field."""
    if not msg.HasField("principal"):
        raise InvalidRequest("principal", "is required")
    p = msg.principal
    kind = _KINDS.get(p.kind)
    if kind is None:
        if p.kind == pb.PRINCIPAL_KIND_UNSPECIFIED:
            raise InvalidRequest("principal.kind", "is required (human, agent or service)")
        raise InvalidRequest("principal.kind", f"unknown value {p.kind}")
    if len(p.roles) > limits.max_roles:
        raise InvalidRequest("principal.roles", f"more than {limits.max_roles} roles")
    for i, role in enumerate(p.roles):
        _old_text(role, f"principal.roles[{i}]", limits, required=True)
    principal = model.Principal(
        id=_old_text(p.id, "principal.id", limits, required=True),
        kind=kind,
        roles=tuple(p.roles),
        attributes=_bounded_struct(p.attributes, "principal.attributes", limits),
    )
    action = _old_text(msg.action, "action", limits, required=True)
    if not msg.HasField("resource"):
        raise InvalidRequest("resource", "is required")
    r = msg.resource
    if len(r.fields) > limits.max_fields:
        raise InvalidRequest("resource.fields", f"more than {limits.max_fields} fields")
    fields = []
    for i, f in enumerate(r.fields):
        where = f"resource.fields[{i}]"
        if len(f.tags) > limits.max_tags_per_field:
            raise InvalidRequest(f"{where}.tags", f"more than {limits.max_tags_per_field} tags")
        path = _old_text(f.path, f"{where}.path", limits, required=True)
        # A tagged path can come back in the masking plan, which callers and the reviewers'
        # view must be able to apply: the plan's paths have no empty segment (docs/masking.md).
        if "" in path.split("."):
            raise InvalidRequest(f"{where}.path", "has an empty segment ('a..b', '.a', 'a.')")
        fields.append(
            model.FieldRef(
                path=path,
                tags=tuple(_old_text(t, f"{where}.tags", limits, required=True) for t in f.tags),
            )
        )
    resource = model.Resource(
        kind=_old_text(r.kind, "resource.kind", limits, required=True),
        id=_old_text(r.id, "resource.id", limits),
        attributes=_bounded_struct(r.attributes, "resource.attributes", limits),
        fields=tuple(fields),
    )
    c = msg.context
    when = None
    if c.HasField("time"):
        try:
            when = c.time.ToDatetime(tzinfo=dt.UTC)
        except (ValueError, OverflowError):
            raise InvalidRequest("context.time", "not a valid timestamp") from None
    context = model.Context(
        environment=_old_text(c.environment, "context.environment", limits),
        time=when,
        source_ip=_old_text(c.source_ip, "context.source_ip", limits),
        attributes=_bounded_struct(c.attributes, "context.attributes", limits),
    )
    return model.Request(
        principal=principal,
        action=action,
        resource=resource,
        context=context,
        payload=_bounded_struct(msg.payload, "payload", limits),
        approval_id=_old_text(msg.approval_id, "approval_id", limits),
        explain=msg.explain,
    )


# Small limits, so generated requests reach every bound.
LIMITS = Limits(
    max_id_length=4, max_roles=2, max_fields=2, max_tags_per_field=2, max_struct_bytes=60
)

texts = st.text(alphabet="ab.é", max_size=6)
paths = st.text(alphabet="a.", max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(alphabet="xy", max_size=3),
    st.floats(allow_nan=True, allow_infinity=True),
)
values: Any = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(st.text(alphabet="k.", max_size=2), inner, max_size=2),
    ),
    max_leaves=6,
)


@st.composite
def structs(draw: st.DrawFn) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(draw(st.dictionaries(st.text(alphabet="k. ", max_size=2), values, max_size=3)))
    return out


@st.composite
def requests(draw: st.DrawFn) -> pb.CheckRequest:
    msg = pb.CheckRequest(action=draw(texts), approval_id=draw(texts), explain=draw(st.booleans()))
    if draw(st.integers(0, 9)):
        msg.principal.CopyFrom(
            pb.Principal(
                id=draw(texts),
                kind=draw(st.sampled_from([0, 1, 2, 3, 7])),  # type: ignore[arg-type]
                roles=draw(st.lists(texts, max_size=3)),
                attributes=draw(structs()),
            )
        )
    if draw(st.integers(0, 9)):
        resource = pb.Resource(kind=draw(texts), id=draw(texts), attributes=draw(structs()))
        for _ in range(draw(st.integers(0, 3))):
            resource.fields.add(path=draw(paths), tags=draw(st.lists(texts, max_size=3)))
        msg.resource.CopyFrom(resource)
    if draw(st.booleans()):
        msg.context.CopyFrom(
            pb.Context(environment=draw(texts), source_ip=draw(texts), attributes=draw(structs()))
        )
        if draw(st.booleans()):
            seconds = draw(st.sampled_from([0, 1_700_000_000, 10**12, -(10**12)]))
            msg.context.time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds))
    if draw(st.booleans()):
        msg.payload.CopyFrom(draw(structs()))
    return msg


def _outcome(convert: Any, msg: pb.CheckRequest) -> Any:
    try:
        return convert(msg)
    except InvalidRequest as refused:
        return ("refused", refused.field, refused.message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4))
def test_lean_conversion_gives_the_former_requests_and_refusals(
    msgs: list[pb.CheckRequest],
) -> None:
    principals = Principals(LIMITS, entries=2)  # small: its bound is crossed too
    for msg in msgs * 2:  # each principal a second time, from the cache
        want = _outcome(lambda m: old_to_request(m, LIMITS), msg)
        assert _outcome(lambda m: to_request(m, LIMITS), msg) == want
        assert _outcome(lambda m: to_request(m, LIMITS, principals), msg) == want


def test_a_refused_principal_is_refused_again_from_a_cache_that_saw_it() -> None:
    principals = Principals(LIMITS)
    msg = pb.CheckRequest(
        principal=pb.Principal(id="toolong", kind=pb.PRINCIPAL_KIND_HUMAN),
        action="read",
        resource=pb.Resource(kind="t"),
    )
    for _ in range(2):
        assert _outcome(lambda m: to_request(m, LIMITS, principals), msg) == (
            "refused",
            "principal.id",
            "longer than 4 characters",
        )
