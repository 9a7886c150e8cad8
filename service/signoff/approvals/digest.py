"""The digest that binds an approval to the exact action it was asked for."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from signoff.client.masking import canonical_form
from signoff.engine.model import ApprovalRequirement, Request
from signoff.keys import derive

DIGEST_VERSION = 3


def canonical_request(
    request: Request, requirement: ApprovalRequirement | None = None
) -> dict[str, Any]:
    """What an approval covers: principal, action, resource with its fields, payload, the
    environment, and the requirement it satisfies.

    The requirement is part of it so an approval granted under a weaker requirement (fewer
    approvers, other approver roles) never lifts a stricter one for the same request after a
    policy change. The environment is bound because reviewers see it; the rest of the context
    (time, source ip, attributes) is left out on purpose: it changes between asking and using.
    Lists whose order carries no meaning are sorted so equal requests digest equally.
    """
    p, r = request.principal, request.resource
    bound: dict[str, Any] = {}
    if requirement is not None:
        bound = {
            "approvers": sorted(
                [sorted(set(s.roles)), sorted(set(s.groups))] for s in requirement.approvers
            ),
            "quorum": requirement.quorum,
            "requester_ids": sorted(set(requirement.requester_ids)),
        }
    return {
        "v": DIGEST_VERSION,
        "requirement": bound,
        "principal": {
            "id": p.id,
            "kind": p.kind.value,
            "roles": sorted(set(p.roles)),
            "attributes": p.attributes,
        },
        "action": request.action,
        "resource": {
            "kind": r.kind,
            "id": r.id,
            "attributes": r.attributes,
            "fields": sorted(
                ({"path": f.path, "tags": sorted(set(f.tags))} for f in r.fields),
                key=lambda f: (f["path"], f["tags"]),
            ),
        },
        "payload": request.payload,
        # Reviewers are shown the environment: an approval given for staging is not one for
        # prod, even where both need the same sign-off.
        "environment": request.context.environment,
    }


def request_digest(
    request: Request, key: bytes, requirement: ApprovalRequirement | None = None
) -> str:
    """HMAC-SHA256 over the RFC 8785 canonical JSON of the request.

    Keyed, so a reader of the approval store cannot confirm guesses of masked values by
    hashing candidate requests.
    """
    canonical = canonical_form(canonical_request(request, requirement))
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def digest_key(root: bytes) -> bytes:
    """The digest key derived from the root secret (see signoff.keys); the masking key
    pipelines hold cannot reproduce a digest."""
    return derive(root, "digest")
