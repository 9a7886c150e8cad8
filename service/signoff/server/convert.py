"""Protobuf requests to engine requests (validated) and engine decisions to protobuf responses."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, NoReturn

from google.protobuf import struct_pb2

from signoff.engine import model
from signoff.errors import InvalidRequest
from signoff.limits import MAX_STRUCT_DEPTH as MAX_STRUCT_DEPTH
from signoff.limits import Limits as Limits
from signoff.limits import step
from signoff.server.protos import plan_proto, requirement_proto
from signoff.v1 import signoff_pb2 as pb

_TOO_DEEP = f"nested deeper than {MAX_STRUCT_DEPTH} levels of objects and lists"

_KINDS = {
    pb.PRINCIPAL_KIND_HUMAN: model.PrincipalKind.HUMAN,
    pb.PRINCIPAL_KIND_AGENT: model.PrincipalKind.AGENT,
    pb.PRINCIPAL_KIND_SERVICE: model.PrincipalKind.SERVICE,
}
_VERDICTS = {
    model.Verdict.ALLOW: pb.VERDICT_ALLOW,
    model.Verdict.DENY: pb.VERDICT_DENY,
    model.Verdict.MASK: pb.VERDICT_MASK,
    model.Verdict.REQUIRE_APPROVAL: pb.VERDICT_REQUIRE_APPROVAL,
}


class _BadValue(Exception):
    """Unwinds from a refused value to its struct's root, collecting the path on the way."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str] = []


def _value(v: struct_pb2.Value, depth: int) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        number = v.number_value
        if not math.isfinite(number):
            # JSON has no NaN or Infinity: the approval digest, the audit record and every
            # JSON consumer downstream would fail on it, so the edge refuses it here.
            raise _BadValue("not a finite number (NaN and Infinity are not JSON)")
        return number
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _struct(v.struct_value, depth + 1)
    if kind == "list_value":
        if depth >= MAX_STRUCT_DEPTH:
            raise _BadValue(_TOO_DEEP)
        out = []
        for i, item in enumerate(v.list_value.values):
            try:
                out.append(_value(item, depth + 1))
            except _BadValue as bad:
                bad.steps.append(f"[{i}]")
                raise
        return out
    return None


def _struct(s: struct_pb2.Struct, depth: int) -> dict[str, Any]:
    if depth > MAX_STRUCT_DEPTH:
        raise _BadValue(_TOO_DEEP)
    out = {}
    for key, v in s.fields.items():
        try:
            out[key] = _value(v, depth)
        except _BadValue as bad:
            bad.steps.append(step(key))
            raise
    return out


def _bounded_struct(s: struct_pb2.Struct, field: str, limits: Limits) -> dict[str, Any]:
    if not s.fields:
        return {}
    if s.ByteSize() > limits.max_struct_bytes:
        raise InvalidRequest(field, f"larger than {limits.max_struct_bytes} bytes")
    try:
        return _struct(s, 1)
    except _BadValue as bad:
        raise InvalidRequest(field + "".join(reversed(bad.steps)), bad.message) from None


def _refuse_text(value: str, field: str, limits: Limits) -> NoReturn:
    if not value:
        raise InvalidRequest(field, "is required")
    raise InvalidRequest(field, f"longer than {limits.max_id_length} characters")


def _text(value: str, field: str, limits: Limits) -> str:
    """An optional text field, at most max_id_length long."""
    if len(value) > limits.max_id_length:
        _refuse_text(value, field, limits)
    return value


# Field names below are made only for a refusal: formatting them for every field of every
# valid request was a good part of the conversion's cost.


def _principal(p: pb.Principal, limits: Limits) -> model.Principal:
    kind = _KINDS.get(p.kind)
    if kind is None:
        if p.kind == pb.PRINCIPAL_KIND_UNSPECIFIED:
            raise InvalidRequest("principal.kind", "is required (human, agent or service)")
        raise InvalidRequest("principal.kind", f"unknown value {p.kind}")
    roles = tuple(p.roles)
    if len(roles) > limits.max_roles:
        raise InvalidRequest("principal.roles", f"more than {limits.max_roles} roles")
    longest = limits.max_id_length
    for i, role in enumerate(roles):
        if not role or len(role) > longest:
            _refuse_text(role, f"principal.roles[{i}]", limits)
    principal_id = p.id
    if not principal_id or len(principal_id) > longest:
        _refuse_text(principal_id, "principal.id", limits)
    return model.Principal(
        id=principal_id,
        kind=kind,
        roles=roles,
        attributes=_bounded_struct(p.attributes, "principal.attributes", limits),
    )


class Principals:
    """Converted principals by their encoded bytes, for `limits`: the items of a batch, and a
    caller's successive checks, mostly name one principal, converted (roles, attributes) once.
    Only valid ones are kept, so a refusal is made, and worded, as without the cache. Equal
    bytes are an equal message, so a kept principal is what converting it again would give."""

    def __init__(self, limits: Limits, entries: int = 1024) -> None:
        self.limits = limits
        self._entries = entries
        self._kept: dict[bytes, model.Principal] = {}

    def get(self, p: pb.Principal) -> model.Principal:
        key = p.SerializeToString()
        found = self._kept.get(key)
        if found is None:
            found = _principal(p, self.limits)
            if len(self._kept) >= self._entries:
                self._kept.clear()  # a crude bound: principals change rarely
            self._kept[key] = found
        return found


def to_request(
    msg: pb.CheckRequest, limits: Limits, principals: Principals | None = None
) -> model.Request:
    """Validate a CheckRequest; raises InvalidRequest naming the first offending field.
    `principals` (made for the same `limits`) reuses the conversion of a principal seen
    before."""
    if not msg.HasField("principal"):
        raise InvalidRequest("principal", "is required")
    principal = (
        _principal(msg.principal, limits) if principals is None else principals.get(msg.principal)
    )
    longest = limits.max_id_length
    action = msg.action
    if not action or len(action) > longest:
        _refuse_text(action, "action", limits)
    if not msg.HasField("resource"):
        raise InvalidRequest("resource", "is required")
    r = msg.resource
    if len(r.fields) > limits.max_fields:
        raise InvalidRequest("resource.fields", f"more than {limits.max_fields} fields")
    fields = []
    most_tags = limits.max_tags_per_field
    for i, f in enumerate(r.fields):
        tags = tuple(f.tags)
        if len(tags) > most_tags:
            raise InvalidRequest(f"resource.fields[{i}].tags", f"more than {most_tags} tags")
        path = f.path
        if not path or len(path) > longest:
            _refuse_text(path, f"resource.fields[{i}].path", limits)
        # A tagged path can come back in the masking plan, which callers and the reviewers'
        # view must be able to apply: the plan's paths have no empty segment (docs/masking.md).
        if path[0] == "." or path[-1] == "." or ".." in path:
            raise InvalidRequest(
                f"resource.fields[{i}].path", "has an empty segment ('a..b', '.a', 'a.')"
            )
        for tag in tags:
            if not tag or len(tag) > longest:
                _refuse_text(tag, f"resource.fields[{i}].tags", limits)
        fields.append(model.FieldRef(path=path, tags=tags))
    kind = r.kind
    if not kind or len(kind) > longest:
        _refuse_text(kind, "resource.kind", limits)
    resource = model.Resource(
        kind=kind,
        id=_text(r.id, "resource.id", limits),
        attributes=_bounded_struct(r.attributes, "resource.attributes", limits),
        fields=tuple(fields),
    )
    if msg.HasField("context"):
        c = msg.context
        when = None
        if c.HasField("time"):
            try:
                when = c.time.ToDatetime(tzinfo=dt.UTC)
            except (ValueError, OverflowError):
                raise InvalidRequest("context.time", "not a valid timestamp") from None
        context = model.Context(
            environment=_text(c.environment, "context.environment", limits),
            time=when,
            source_ip=_text(c.source_ip, "context.source_ip", limits),
            attributes=_bounded_struct(c.attributes, "context.attributes", limits),
        )
    else:
        context = model.Context()  # an unset context reads as all defaults
    return model.Request(
        principal=principal,
        action=action,
        resource=resource,
        context=context,
        payload=_bounded_struct(msg.payload, "payload", limits),
        approval_id=_text(msg.approval_id, "approval_id", limits),
        explain=msg.explain,
    )


def to_response(
    decision: model.Decision, decision_id: str, hash_key_id: str, approval_id: str = ""
) -> pb.CheckResponse:
    out = pb.CheckResponse(
        verdict=_VERDICTS[decision.verdict],
        decision_id=decision_id,
        approval_id=approval_id,
        policy_revision=decision.policy_revision,
        matched_rules=decision.matched_rules,
        reasons=decision.reasons,
        errored_rules=decision.errored_rules,
    )
    if decision.masking_plan:
        out.masking_plan.CopyFrom(plan_proto(decision.masking_plan, hash_key_id))
    if decision.approval is not None:
        out.approval.CopyFrom(requirement_proto(decision.approval))
    if decision.explanation is not None:
        out.explanation.CopyFrom(explanation_proto(decision.explanation))
    return out


_OUTCOMES = {
    model.RuleOutcome.MATCHED: pb.RULE_OUTCOME_MATCHED,
    model.RuleOutcome.NOT_MATCHED: pb.RULE_OUTCOME_NOT_MATCHED,
    model.RuleOutcome.ROLE_NOT_HELD: pb.RULE_OUTCOME_ROLE_NOT_HELD,
    model.RuleOutcome.ERROR: pb.RULE_OUTCOME_ERROR,
}


def explanation_proto(explanation: model.Explanation) -> pb.Explanation:
    return pb.Explanation(
        rules=[
            pb.RuleExplanation(
                rule_id=t.rule_id,
                effect=_VERDICTS[t.effect],
                outcome=_OUTCOMES[t.outcome],
                condition=t.condition,
                roles=t.roles,
                error=t.error,
                counted=t.counted,
                shadow=t.shadow,
            )
            for t in explanation.rules
        ],
        decided_by=explanation.decided_by,
    )
