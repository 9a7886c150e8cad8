"""Fixtures for the identity tests: authenticators over JWKS files written per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signoff.identity import Authenticator, IdentityConfig
from tests.identity.keys import AUDIENCE, ISSUER, SigningKey, ed_key, write_jwks

MakeAuth = Callable[..., Authenticator]


@pytest.fixture
def make_auth(tmp_path: Path) -> MakeAuth:
    """Build an Authenticator trusting `keys` (default: ed_key()) via a JWKS file."""
    counter = iter(range(1_000_000))

    def make(*keys: SigningKey, **config: Any) -> Authenticator:
        path = write_jwks(tmp_path / f"jwks{next(counter)}.json", *(keys or (ed_key(),)))
        settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, **config}
        return Authenticator(IdentityConfig(jwks=str(path), **settings))

    return make


@pytest.fixture
def auth(make_auth: MakeAuth) -> Authenticator:
    """An Authenticator trusting only ed_key()."""
    return make_auth()
