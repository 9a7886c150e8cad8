"""The decision audit record: its one shape, written by the decision core, read back by replay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from signoff.audit.chain import Canonical
from signoff.engine import model
from signoff.engine.model import FieldMask, Labels, MaskOp, Verdict
from signoff.errors import SignoffError

DECISION = "decision"
SECTIONS = ("principal", "resource", "context")


class MalformedRecord(SignoffError):
    """A decision record lacks a field or has one of the wrong shape; `index` is 1-based."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        self.message = message
        super().__init__(f"decision record {index}: {message}")


# --- the request as a record keeps it --------------------------------------------------------


def request_doc(
    request: model.Request, pick: Callable[[str, Mapping[str, Any]], dict[str, Any]], payload: Any
) -> dict[str, Any]:
    """The request's audit view: `pick(section, attributes)` keeps the allowlisted attribute
    values, `payload` is the kept payload already masked; everything else by name only."""
    return {
        "principal": {
            "id": request.principal.id,
            "kind": request.principal.kind.value,
            "roles": sorted(set(request.principal.roles)),
            "attributes": pick("principal", request.principal.attributes),
        },
        "action": request.action,
        "resource": {
            "kind": request.resource.kind,
            "id": request.resource.id,
            "attributes": pick("resource", request.resource.attributes),
            "fields": [{"path": f.path, "tags": list(f.tags)} for f in request.resource.fields],
        },
        "context": {
            "environment": request.context.environment,
            "attributes": pick("context", request.context.attributes),
        },
        "payload": payload,
        "payload_keys": sorted(request.payload),
        # Which attributes the request carried, by name: with the kept values this tells a
        # replay an absent attribute from one the record does not keep.
        "attribute_names": {
            "principal": sorted(request.principal.attributes),
            "resource": sorted(request.resource.attributes),
            "context": sorted(request.context.attributes),
        },
    }


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request read back from its audit view: only what the record kept."""

    principal: model.Principal  # with the kept attribute values only
    action: str
    resource: model.Resource
    context: model.Context
    payload: dict[str, Any]  # the kept payload values, masking applied
    payload_keys: frozenset[str] | None  # None: a record from before payload_keys
    names: dict[str, frozenset[str]] | None  # attribute names the request carried

    @staticmethod
    def parse(doc: Any, index: int) -> RecordedRequest:
        request = _obj(doc, index, "request")
        p = _obj(request.get("principal"), index, "request.principal")
        r = _obj(request.get("resource"), index, "request.resource")
        c = _obj(request.get("context", {}), index, "request.context")
        kind = _str(p.get("kind"), index, "request.principal.kind")
        _need(
            kind in {k.value for k in model.PrincipalKind},
            index,
            "request.principal.kind is unknown",
        )
        fields = []
        for n, item in enumerate(r.get("fields", [])):
            where = f"request.resource.fields[{n}]"
            f = _obj(item, index, where)
            path = _str(f.get("path"), index, f"{where}.path")
            fields.append(model.FieldRef(path, _strs(f.get("tags", []), index, f"{where}.tags")))
        names: dict[str, frozenset[str]] | None = None
        if "attribute_names" in request:
            carried = _obj(request["attribute_names"], index, "request.attribute_names")
            names = {
                s: frozenset(_strs(carried.get(s, []), index, f"request.attribute_names.{s}"))
                for s in SECTIONS
            }
        keys = request.get("payload_keys")
        return RecordedRequest(
            principal=model.Principal(
                id=_str(p.get("id"), index, "request.principal.id"),
                kind=model.PrincipalKind(kind),
                roles=_strs(p.get("roles", []), index, "request.principal.roles"),
                attributes=dict(_obj(p.get("attributes", {}), index, "principal.attributes")),
            ),
            action=_str(request.get("action"), index, "request.action"),
            resource=model.Resource(
                kind=_str(r.get("kind"), index, "request.resource.kind"),
                id=_str(r.get("id", ""), index, "request.resource.id"),
                attributes=dict(_obj(r.get("attributes", {}), index, "resource.attributes")),
                fields=tuple(fields),
            ),
            context=model.Context(
                environment=_str(c.get("environment", ""), index, "request.context.environment"),
                attributes=dict(_obj(c.get("attributes", {}), index, "context.attributes")),
            ),
            payload=dict(_obj(request.get("payload", {}), index, "request.payload")),
            payload_keys=None if keys is None else frozenset(_strs(keys, index, "payload_keys")),
            names=names,
        )


# --- the decision record ---------------------------------------------------------------------


def masking_doc(plan: Sequence[FieldMask]) -> list[dict[str, Any]]:
    """A masking plan as records keep it: each path with its operator and options, so a later
    replay can tell `redact` from `partial` on the same path."""
    return [
        {
            "path": m.path,
            "operator": m.op.name.lower(),
            "keep_first": m.keep_first,
            "keep_last": m.keep_last,
        }
        for m in plan
    ]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision as the audit trail keeps it.

    Made on the decision path from values the decision already holds (no copies there); the
    writer thread turns it into JSON with `doc()`. `parse` reads a stored record back, also
    the older shapes that lack `policy_verdict`, `masking`, `attribute_names` or
    `payload_keys`.
    """

    decision_id: str
    verdict: Verdict  # enforced: differs from the policy's when an approval was consumed
    policy_verdict: Verdict
    policy_revision: str
    matched_rules: tuple[str, ...]
    errored_rules: tuple[str, ...]
    reasons: tuple[str, ...]
    approval_id: str
    # None: a record from before `masking`, which keeps the masked paths only.
    masking: tuple[FieldMask, ...] | None
    trace_id: str
    # As written: the audit view (encoded once when the request repeats); as read: parsed.
    request: RecordedRequest | Mapping[str, Any] | Canonical
    caller: str = ""  # the mTLS caller's certificate name, when callers present one
    # What audit-only rules would have decided; written, not read back (replay re-decides).
    shadow: model.ShadowOutcome | None = None
    masked_fields: tuple[str, ...] | None = None  # as read; written from `masking`
    at: dt.datetime | None = None  # set by the log when written
    # The labels of the rules that asked for approval (e.g. compliance: soc2), for auditors;
    # written only when there are some, so records without them keep their old shape.
    labels: Labels = ()

    @staticmethod
    def of(
        decision_id: str,
        decision: model.Decision,
        policy: model.Decision,
        approval_id: str,
        trace_id: str,
        caller: str,
        request: Mapping[str, Any] | Canonical,
    ) -> DecisionRecord:
        """The record of `decision`, which the approval step made of the policy's `policy`."""
        return DecisionRecord(
            decision_id,
            decision.verdict,
            policy.verdict,
            decision.policy_revision,
            decision.matched_rules,
            decision.errored_rules,
            decision.reasons,
            approval_id,
            decision.masking_plan,
            trace_id,
            request,
            caller,
            policy.shadow,
            labels=policy.approval.labels if policy.approval is not None else (),
        )

    @property
    def masked(self) -> frozenset[str]:
        if self.masked_fields is not None:
            return frozenset(self.masked_fields)
        return frozenset(m.path for m in self.masking or ())

    @property
    def kept(self) -> RecordedRequest:
        """The request as read back (only on a parsed record)."""
        if not isinstance(self.request, RecordedRequest):
            raise TypeError("only a parsed record has its request read back")
        return self.request

    def doc(self) -> dict[str, Any]:
        """The record as stored (the log adds `at` and the chain fields)."""
        if isinstance(self.request, RecordedRequest):
            raise TypeError("a record read back is not written again")
        masking = self.masking or ()
        out: dict[str, Any] = {
            "type": DECISION,
            "decision_id": self.decision_id,
            "verdict": self.verdict.name,
            "policy_verdict": self.policy_verdict.name,
            "policy_revision": self.policy_revision,
            "matched_rules": list(self.matched_rules),
            "errored_rules": list(self.errored_rules),
            "reasons": list(self.reasons),
            "approval_id": self.approval_id,
            "masked_fields": [m.path for m in masking],
            "masking": masking_doc(masking),
            "trace_id": self.trace_id,
        }
        if self.caller:
            out["caller"] = self.caller
        if self.labels:
            out["labels"] = {name: list(values) for name, values in self.labels}
        out["request"] = self.request
        if self.shadow is not None:
            out["shadow"] = {
                "verdict": self.shadow.verdict.name,
                "matched_rules": list(self.shadow.matched_rules),
                "errored_rules": list(self.shadow.errored_rules),
                "reasons": list(self.shadow.reasons),
                "changes_verdict": self.shadow.verdict is not self.policy_verdict,
            }
        if self.at is not None:
            out["at"] = self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return out

    @staticmethod
    def parse(doc: Mapping[str, Any], index: int) -> DecisionRecord:
        """A stored decision record (`index` names it in errors); raises MalformedRecord."""
        _need(doc.get("type") == DECISION, index, "not a decision record")
        return DecisionRecord(
            decision_id=_str(doc.get("decision_id"), index, "decision_id"),
            verdict=_verdict(doc.get("verdict"), index, "verdict"),
            policy_verdict=_policy_verdict(doc, index),
            policy_revision=_str(doc.get("policy_revision", ""), index, "policy_revision"),
            matched_rules=_strs(doc.get("matched_rules", []), index, "matched_rules"),
            errored_rules=_strs(doc.get("errored_rules", []), index, "errored_rules"),
            reasons=_strs(doc.get("reasons", []), index, "reasons"),
            approval_id=_str(doc.get("approval_id", ""), index, "approval_id"),
            masking=_masking(doc["masking"], index) if "masking" in doc else None,
            trace_id=_str(doc.get("trace_id", ""), index, "trace_id"),
            request=RecordedRequest.parse(doc.get("request"), index),
            caller=_str(doc.get("caller", ""), index, "caller"),
            masked_fields=_strs(doc.get("masked_fields", []), index, "masked_fields"),
            at=_time(doc.get("at"), index),
            labels=_labels(doc.get("labels", {}), index),
        )


# --- reading helpers: each names the field it refuses ---------------------------------------


def _need(cond: bool, index: int, message: str) -> None:
    if not cond:
        raise MalformedRecord(index, message)


def _obj(value: Any, index: int, where: str) -> Mapping[str, Any]:
    _need(isinstance(value, dict), index, f"{where} is not an object")
    out: Mapping[str, Any] = value
    return out


def _str(value: Any, index: int, where: str) -> str:
    _need(isinstance(value, str), index, f"{where} is not a string")
    out: str = value
    return out


def _strs(value: Any, index: int, where: str) -> tuple[str, ...]:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    _need(ok, index, f"{where} is not a list of strings")
    return tuple(value)


def _labels(value: Any, index: int) -> Labels:
    labels = _obj(value, index, "labels")
    return tuple((name, _strs(labels[name], index, f"labels.{name}")) for name in sorted(labels))


def _verdict(value: Any, index: int, where: str) -> Verdict:
    name = _str(value, index, where)
    _need(name in Verdict.__members__, index, f"{where} is not a verdict")
    return Verdict[name]


def _time(value: Any, index: int) -> dt.datetime:
    text = _str(value, index, "at")
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRecord(index, "at is not an RFC 3339 time") from None
    _need(when.tzinfo is not None, index, "at has no time zone")
    return when.astimezone(dt.UTC)


def _masking(value: Any, index: int) -> tuple[FieldMask, ...]:
    _need(isinstance(value, list), index, "masking is not a list")
    out = []
    for n, item in enumerate(value):
        where = f"masking[{n}]"
        m = _obj(item, index, where)
        first, last = m.get("keep_first", 0), m.get("keep_last", 0)
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last))
        _need(ok, index, f"{where} keep_first and keep_last are not whole numbers")
        path = _str(m.get("path"), index, f"{where}.path")
        name = _str(m.get("operator"), index, f"{where}.operator")
        op = MaskOp.__members__.get(name.upper()) if name.islower() else None
        _need(op is not None, index, f"{where}.operator is not a masking operator")
        assert op is not None
        out.append(FieldMask(path, op, first, last))
    return tuple(out)


def _policy_verdict(record: Mapping[str, Any], index: int) -> Verdict:
    if "policy_verdict" in record:
        return _verdict(record["policy_verdict"], index, "policy_verdict")
    enforced = _verdict(record.get("verdict"), index, "verdict")
    # Records from before policy_verdict: the approval flow is the only thing that makes the
    # enforced verdict differ from the policy's, and only a REQUIRE_APPROVAL decision ever gets
    # an approval id (created or pending; consumed, then ALLOW or MASK with "approved: ..."; or
    # refused, then DENY). So an approval id means the policy asked for approval.
    if record.get("approval_id"):
        return Verdict.REQUIRE_APPROVAL
    return enforced
