"""Client for the signoff decision service: typed checks, a guard, approvals, and masking."""

from signoff.client.approvals import (
    Approval,
    ApprovalState,
    ApproverSet,
    RequestView,
    Requirement,
    Vote,
)
from signoff.client.client import SignoffClient
from signoff.client.coalesce import Coalescing
from signoff.client.errors import (
    InvalidInput,
    MaskingError,
    ProtocolError,
    SignoffClientError,
    SignoffRpcError,
)
from signoff.client.guard import (
    ApprovalCancelled,
    ApprovalExpired,
    ApprovalFailed,
    ApprovalRejected,
    ApprovalRequired,
    Denied,
    Guard,
    Permit,
    guard,
    guarded,
)
from signoff.client.masking import (
    REDACTED,
    CompiledMask,
    apply_mask,
    canonical_form,
    compile_mask,
    key_id,
)
from signoff.client.tls import TLS
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
    "TLS",
    "Approval",
    "ApprovalCancelled",
    "ApprovalExpired",
    "ApprovalFailed",
    "ApprovalRejected",
    "ApprovalRequired",
    "ApprovalState",
    "ApproverSet",
    "CheckItem",
    "Coalescing",
    "CompiledMask",
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
    "RequestView",
    "Requirement",
    "Resource",
    "SignoffClient",
    "SignoffClientError",
    "SignoffRpcError",
    "Verdict",
    "Vote",
    "apply_mask",
    "canonical_form",
    "compile_mask",
    "guard",
    "guarded",
    "key_id",
]
