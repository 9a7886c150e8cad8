"""Engine and approval values as the API's protobuf messages: the one place they are built."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import struct_pb2, timestamp_pb2

from signoff.approvals.model import ApprovalRecord, ReviewerView, State
from signoff.engine.model import ApprovalRequirement, FieldMask, MaskOp
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import signoff_pb2 as pb
from signoff.views import requirement_from_doc

_PB_OPS = {
    MaskOp.NULLIFY: pb.MASK_OPERATOR_NULLIFY,
    MaskOp.REDACT: pb.MASK_OPERATOR_REDACT,
    MaskOp.HASH: pb.MASK_OPERATOR_HASH,
    MaskOp.EMAIL: pb.MASK_OPERATOR_EMAIL,
    MaskOp.PARTIAL: pb.MASK_OPERATOR_PARTIAL,
}
_STATES = {
    State.PENDING: apb.APPROVAL_STATE_PENDING,
    State.APPROVED: apb.APPROVAL_STATE_APPROVED,
    State.REJECTED: apb.APPROVAL_STATE_REJECTED,
    State.CANCELLED: apb.APPROVAL_STATE_CANCELLED,
    State.EXPIRED: apb.APPROVAL_STATE_EXPIRED,
    State.CONSUMED: apb.APPROVAL_STATE_CONSUMED,
}
_KINDS = {
    "human": pb.PRINCIPAL_KIND_HUMAN,
    "agent": pb.PRINCIPAL_KIND_AGENT,
    "service": pb.PRINCIPAL_KIND_SERVICE,
}


def plan_proto(plan: Sequence[FieldMask], hash_key_id: str) -> pb.MaskingPlan:
    """The engine's plan as the API's MaskingPlan (HASH entries name the server's key)."""
    out = pb.MaskingPlan()
    for m in plan:
        out.fields.add(
            path=m.path,
            operator=_PB_OPS[m.op],
            keep_first=m.keep_first,
            keep_last=m.keep_last,
            key_id=hash_key_id if m.op is MaskOp.HASH else "",
            rule_ids=m.rule_ids,
        )
    return out


def mask_op_proto(name: str) -> pb.MaskOperator.ValueType:
    """The API operator for a plan entry stored by name ("redact", ...)."""
    op = MaskOp.__members__.get(name.upper())
    return _PB_OPS[op] if op is not None else pb.MASK_OPERATOR_UNSPECIFIED


def requirement_proto(req: ApprovalRequirement) -> pb.ApprovalRequirement:
    out = pb.ApprovalRequirement(
        quorum=req.quorum, rule_ids=req.rule_ids, requester_ids=req.requester_ids
    )
    out.pending_ttl.FromTimedelta(req.pending_ttl)
    out.grant_ttl.FromTimedelta(req.grant_ttl)
    for s in req.approvers:
        out.approvers.add(roles=s.roles, groups=s.groups)
    return out


def _ts(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def view_proto(v: ReviewerView) -> apb.ApprovalRequestView:
    payload = struct_pb2.Struct()
    payload.update(v.payload or {})
    view = apb.ApprovalRequestView(
        requester_id=v.requester_id,
        requester_kind=_KINDS.get(v.requester_kind, pb.PRINCIPAL_KIND_UNSPECIFIED),
        requester_roles=v.requester_roles,
        action=v.action,
        resource_kind=v.resource_kind,
        resource_id=v.resource_id,
        fields=[pb.Field(path=f.path, tags=f.tags) for f in v.fields],
        payload=payload,
        environment=v.environment,
        reasons=v.reasons,
        matched_rules=v.matched_rules,
    )
    for m in v.masking_plan:
        view.masking_plan.fields.add(
            path=m.path,
            operator=mask_op_proto(m.operator),
            keep_first=m.keep_first,
            keep_last=m.keep_last,
        )
    return view


def approval_proto(record: ApprovalRecord) -> apb.Approval:
    out = apb.Approval(
        id=record.id,
        state=_STATES[record.state],
        requirement=requirement_proto(
            requirement_from_doc(record.requirement, record.requester_ids)
        ),
        request=view_proto(record.view),
        final_reason=record.final_reason,
        policy_revision=record.policy_revision,
        decision_id=record.decision_id,
    )
    for vote in record.votes:
        decision = apb.VOTE_DECISION_APPROVE if vote.approve else apb.VOTE_DECISION_REJECT
        out.votes.add(
            approver_id=vote.approver_id, decision=decision, reason=vote.reason, at=_ts(vote.at_ms)
        )
    for name, ms in (
        ("created_at", record.created_ms),
        ("pending_expires_at", record.pending_expires_ms),
        ("approved_at", record.approved_ms),
        ("grant_expires_at", record.grant_expires_ms),
        ("final_at", record.final_ms),
    ):
        ts = _ts(ms)
        if ts is not None:
            getattr(out, name).CopyFrom(ts)
    return out
