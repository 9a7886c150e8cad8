"""No rejection ever repeats the token: not in the message, not through a chained cause."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from signoff.errors import Unauthenticated
from signoff.identity import Authenticator
from tests.identity.keys import (
    DROP,
    claims,
    ec_key,
    ed_key,
    hmac_token,
    rsa_key,
    segment,
    sign,
    unsigned_token,
)

FAILING: dict[str, Callable[[], str]] = {
    "other-key": lambda: sign(ed_key(seed="impostor"), claims(), kid=ed_key().kid),
    "wrong-audience": lambda: sign(ed_key(), claims(aud="elsewhere")),
    "wrong-issuer": lambda: sign(ed_key(), claims(iss="https://evil.test")),
    "expired": lambda: sign(ed_key(), claims(exp=int(time.time()) - 3600)),
    "not-yet-valid": lambda: sign(ed_key(), claims(nbf=int(time.time()) + 3600)),
    "missing-sub": lambda: sign(ed_key(), claims(sub=DROP)),
    "missing-exp": lambda: sign(ed_key(), claims(exp=DROP)),
    "alg-none": lambda: unsigned_token({"alg": "none", "kid": "ed-1"}, claims()),
    "hs256-confusion": lambda: hmac_token(
        rsa_key().public_pem(), {"alg": "HS256", "kid": "ed-1"}, claims()
    ),
    "unknown-kid": lambda: sign(ed_key(), claims(), kid="secret-kid-value-123"),
    "alg-key-mismatch": lambda: sign(ec_key(), claims(), kid="ed-1"),
    "bad-roles": lambda: sign(ed_key(), claims(roles=42)),
    "bad-payload": lambda: (
        sign(ed_key(), claims()).rsplit(".", 2)[0] + "." + segment("x" * 40) + ".AAAA"
    ),
    "garbage": lambda: "eyJhbGciOiJFZERTQSJ9-this-is-not-a-real-token-but-it-is-long",
}


@pytest.mark.parametrize("make_token", FAILING.values(), ids=FAILING.keys())
def test_rejections_never_contain_the_token_or_any_part_of_it(
    auth: Authenticator, make_token: Callable[[], str]
) -> None:
    token = make_token()
    with pytest.raises(Unauthenticated) as caught:
        auth.from_metadata([("authorization", f"Bearer {token}")])

    exc = caught.value
    shown = f"{exc} {exc!r}"
    pieces = [p for p in token.split(".") if len(p) >= 8]
    assert token not in shown
    assert not [p for p in pieces if p in shown]
    assert len(str(exc)) < 120  # a short reason, not a dump
    # PyJWT's own exception (which may quote header values) is not chained on for logs to print.
    assert exc.__cause__ is None
    assert exc.__suppress_context__ or exc.__context__ is None
