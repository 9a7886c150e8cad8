"""What every HTTP route may use: the one decision core, the one approvals service, identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from signoff.approvals.service import Approvals
from signoff.decisions import Decisions
from signoff.engine.evaluator import Engine
from signoff.identity import CallerAuthenticator
from signoff.limits import Limits
from signoff.observability import Telemetry


@dataclass
class HttpCore:
    """The rooms an HTTP surface adapts; built once by `signoff serve` (or a test fixture)."""

    decisions: Decisions
    engine: Callable[[], Engine]  # the engine serving now: reloads swap it
    approvals: Approvals | None
    authenticator: CallerAuthenticator  # bearer JWTs, verified as gRPC verifies them
    telemetry: Telemetry
    ready: Callable[[], bool]  # the bundle is loaded and Redis answers
    hash_key_id: str
    # Per-surface settings (public base URL, dev login, OIDC, Slack, Teams), each module's own.
    settings: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)  # the same bounds gRPC requests get
