"""The digest binds what reviewers are shown: an approval for staging is not one for prod."""

from __future__ import annotations

import dataclasses
import datetime as dt

from signoff.approvals.digest import request_digest
from signoff.engine.model import Context, Principal, PrincipalKind, Request, Resource

KEY = b"k" * 32


def test_the_environment_is_bound_and_the_callers_clock_is_not() -> None:
    base = Request(
        Principal("bob", PrincipalKind.HUMAN),
        "deploy",
        Resource("svc"),
        Context(environment="staging", time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    )
    prod = dataclasses.replace(base, context=dataclasses.replace(base.context, environment="prod"))
    later = dataclasses.replace(
        base, context=dataclasses.replace(base.context, time=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    )
    assert request_digest(base, KEY) != request_digest(prod, KEY)
    assert request_digest(base, KEY) == request_digest(later, KEY)
