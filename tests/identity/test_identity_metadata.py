"""from_metadata: exactly one `authorization: Bearer <token>` entry, or Unauthenticated."""

from __future__ import annotations

import pytest

from signoff.errors import Unauthenticated
from signoff.identity import Authenticator, NoAuthenticator, authenticator_for, bearer_token
from tests.identity.keys import SUBJECT, claims, ed_key, sign

Metadata = list[tuple[str, str | bytes]]


def test_a_bearer_header_yields_the_verified_identity(auth: Authenticator) -> None:
    token = sign(ed_key(), claims())
    metadata: Metadata = [("user-agent", "grpc-python"), ("authorization", f"Bearer {token}")]

    assert auth.from_metadata(metadata).subject == SUBJECT


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(auth: Authenticator, scheme: str) -> None:
    token = sign(ed_key(), claims())

    assert auth.from_metadata([("authorization", f"{scheme} {token}")]).subject == SUBJECT


def test_a_bytes_header_value_is_accepted(auth: Authenticator) -> None:
    token = sign(ed_key(), claims())

    assert auth.from_metadata([("authorization", f"Bearer {token}".encode())]).subject == SUBJECT


def test_missing_authorization_is_rejected(auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="missing bearer token"):
        auth.from_metadata([("user-agent", "grpc-python")])


def test_two_authorization_headers_are_rejected_even_if_both_are_valid(
    auth: Authenticator,
) -> None:
    token = sign(ed_key(), claims())
    metadata: Metadata = [("authorization", f"Bearer {token}")] * 2

    with pytest.raises(Unauthenticated, match="more than one authorization header"):
        auth.from_metadata(metadata)


@pytest.mark.parametrize(
    "value",
    ["Basic YWxpY2U6c2VjcmV0", "Token abc", "abc.def.ghi", "", "   "],
    ids=["basic", "other-scheme", "bare-token", "empty", "blank"],
)
def test_non_bearer_authorization_is_rejected(value: str) -> None:
    with pytest.raises(Unauthenticated, match="authorization must be a bearer token"):
        bearer_token([("authorization", value)])


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b", b"Bearer \xff\xfe"])
def test_malformed_bearer_header_is_rejected(value: str | bytes) -> None:
    with pytest.raises(Unauthenticated, match="malformed authorization header"):
        bearer_token([("authorization", value)])


def test_an_invalid_token_in_a_well_formed_header_is_rejected(auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="malformed token"):
        auth.from_metadata([("authorization", "Bearer not-a-jwt")])


def test_without_an_identity_provider_every_call_is_refused_with_how_to_configure_one() -> None:
    token = sign(ed_key(), claims())
    no_auth = authenticator_for(None)

    assert isinstance(no_auth, NoAuthenticator)
    with pytest.raises(Unauthenticated) as caught:
        no_auth.from_metadata([("authorization", f"Bearer {token}")])
    assert str(caught.value) == (
        "approvals need an identity provider: set SIGNOFF_JWKS, SIGNOFF_JWT_ISSUER and "
        "SIGNOFF_JWT_AUDIENCE"
    )
    with pytest.raises(Unauthenticated, match="approvals need an identity provider"):
        no_auth.verify(token)
