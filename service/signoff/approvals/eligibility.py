"""The one rule for who may vote on an approval; every channel (API, chat, web) calls it."""

from __future__ import annotations

import functools

from signoff.approvals.model import ApprovalRecord, Identity
from signoff.errors import PermissionDenied
from signoff.identities import identity_key as _identity_key

# Approvers are a handful of people and requesters recur: each name's normal form (NFKC, case
# folding, a few passes) is worked out once, not on every vote and every view.
identity_key = functools.lru_cache(maxsize=4096)(_identity_key)


def is_requester(record: ApprovalRecord, who: Identity) -> bool:
    """True when `who` is the requester or an identity the policy counts as the requester's."""
    own = {identity_key(i) for i in (record.requester_id, *record.requester_ids)}
    return identity_key(who.subject) in own


def check_approver(record: ApprovalRecord, who: Identity) -> None:
    """Raise PermissionDenied unless `who` may approve or reject `record`.

    A voter must be a human, must not be the requester or any of the requester's own
    identities, and must satisfy every approver set of the requirement.
    """
    if not who.is_human:
        raise PermissionDenied(
            "not_human", f"only humans can approve; this credential is a {who.kind} principal"
        )
    if is_requester(record, who):
        raise PermissionDenied("self_approval", "the requester cannot approve its own request")
    for approver_set in record.approver_sets:
        roles = set(approver_set.get("roles", ()))
        groups = set(approver_set.get("groups", ()))
        if not (roles & who.roles or groups & who.groups):
            wanted = ", ".join(
                [*(f"role {r}" for r in sorted(roles)), *(f"group {g}" for g in sorted(groups))]
            )
            raise PermissionDenied("not_eligible", f"approving this needs one of: {wanted}")


def may_view(record: ApprovalRecord, who: Identity) -> bool:
    """The requester side and eligible approvers may see an approval (masked view only)."""
    if is_requester(record, who):
        return True
    try:
        check_approver(record, who)
    except PermissionDenied:
        return False
    return True


def voter_key(who: Identity) -> str:
    """The key one approver's vote is stored under: spellings of one identity count once."""
    return identity_key(who.subject)
