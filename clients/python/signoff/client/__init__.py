"""Client for the signoff decision service: typed checks, a guard, and masking."""

from signoff.client.client import SignoffClient
from signoff.client.errors import (
    InvalidInput,
    MaskingError,
    ProtocolError,
    SignoffClientError,
    SignoffRpcError,
)
from signoff.client.guard import ApprovalRequired, Denied, Guard, Permit, guard, guarded
from signoff.client.masking import REDACTED, apply_mask, canonical_form, key_id
from signoff.client.types import (
    CheckItem,
    Context,
    Decision,
    Field,
    ItemFailure,
    Principal,
    PrincipalKindName,
    Resource,
    Verdict,
)

__all__ = [
    "REDACTED",
    "ApprovalRequired",
    "CheckItem",
    "Context",
    "Decision",
    "Denied",
    "Field",
    "Guard",
    "InvalidInput",
    "ItemFailure",
    "MaskingError",
    "Permit",
    "Principal",
    "PrincipalKindName",
    "ProtocolError",
    "Resource",
    "SignoffClient",
    "SignoffClientError",
    "SignoffRpcError",
    "Verdict",
    "apply_mask",
    "canonical_form",
    "guard",
    "guarded",
    "key_id",
]
