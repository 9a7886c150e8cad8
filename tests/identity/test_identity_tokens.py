"""Authenticator.verify: what a valid token proves, and every way a token fails to prove it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.warnings import InsecureKeyLengthWarning

from signoff.approvals.model import Identity
from signoff.errors import Unauthenticated
from signoff.identity import Authenticator
from tests.identity.conftest import MakeAuth
from tests.identity.keys import (
    AUDIENCE,
    DROP,
    ISSUER,
    SUBJECT,
    SigningKey,
    b64url,
    claims,
    ec_key,
    ed_key,
    ed_signed_token,
    hmac_token,
    rsa_key,
    segment,
    sign,
    unsigned_token,
)


def rejected(auth: Authenticator, token: str) -> str:
    """The reason `auth` gives for refusing `token`."""
    with pytest.raises(Unauthenticated) as caught:
        auth.verify(token)
    return str(caught.value)


# --- what a valid token proves ---------------------------------------------------------------


def test_valid_token_yields_subject_kind_roles_groups_and_issuer(auth: Authenticator) -> None:
    identity = auth.verify(sign(ed_key(), claims()))

    assert identity == Identity(
        subject=SUBJECT,
        kind="human",
        roles=frozenset({"sre"}),
        groups=frozenset({"platform", "oncall"}),
        issuer=ISSUER,
    )
    assert identity.is_human


@pytest.mark.parametrize("make_key", [rsa_key, ec_key, ed_key], ids=["RS256", "ES256", "EdDSA"])
def test_each_default_algorithm_verifies_with_its_key(
    make_auth: MakeAuth, make_key: Callable[[], SigningKey]
) -> None:
    auth = make_auth(rsa_key(), ec_key(), ed_key())

    assert auth.verify(sign(make_key(), claims())).subject == SUBJECT


@pytest.mark.parametrize("kind", ["human", "agent", "service"])
def test_known_kinds_are_kept(auth: Authenticator, kind: str) -> None:
    assert auth.verify(sign(ed_key(), claims(principal_kind=kind))).kind == kind


@pytest.mark.parametrize(
    "kind", [DROP, "Human", "admin", "", None, 1, ["human"], {"kind": "human"}, "unknown"]
)
def test_missing_or_unrecognised_kind_becomes_unknown_so_it_cannot_approve(
    auth: Authenticator, kind: object
) -> None:
    identity = auth.verify(sign(ed_key(), claims(principal_kind=kind)))

    assert identity.kind == "unknown"
    assert not identity.is_human


def test_a_single_string_role_or_group_counts_as_one_item(auth: Authenticator) -> None:
    identity = auth.verify(sign(ed_key(), claims(roles="approver", groups="finance")))

    assert identity.roles == frozenset({"approver"})
    assert identity.groups == frozenset({"finance"})


def test_absent_roles_and_groups_are_empty(auth: Authenticator) -> None:
    identity = auth.verify(sign(ed_key(), claims(roles=DROP, groups=DROP)))

    assert identity.roles == frozenset()
    assert identity.groups == frozenset()


@pytest.mark.parametrize("claim", ["roles", "groups"])
@pytest.mark.parametrize("value", [5, None, True, {"a": "b"}, ["ok", 1], [["nested"]]])
def test_roles_or_groups_of_the_wrong_type_are_rejected(
    auth: Authenticator, claim: str, value: object
) -> None:
    reason = rejected(auth, sign(ed_key(), claims(**{claim: value})))

    assert claim in reason


def test_configured_claim_names_are_read_instead_of_the_defaults(make_auth: MakeAuth) -> None:
    auth = make_auth(
        roles_claim="https://acme.io/roles",
        groups_claim="https://acme.io/groups",
        kind_claim="https://acme.io/kind",
    )
    token = sign(
        ed_key(),
        claims(
            roles=["ignored"],
            principal_kind="human",
            **{
                "https://acme.io/roles": ["approver"],
                "https://acme.io/groups": ["finance"],
                "https://acme.io/kind": "agent",
            },
        ),
    )

    identity = auth.verify(token)

    assert (identity.roles, identity.groups, identity.kind) == (
        frozenset({"approver"}),
        frozenset({"finance"}),
        "agent",
    )


def test_an_audience_list_that_includes_ours_is_accepted(auth: Authenticator) -> None:
    token = sign(ed_key(), claims(aud=["another-service", AUDIENCE]))

    assert auth.verify(token).subject == SUBJECT


def test_expiry_within_the_leeway_is_still_accepted(auth: Authenticator) -> None:
    token = sign(ed_key(), claims(exp=int(time.time()) - 10))

    assert auth.verify(token).subject == SUBJECT


def test_a_token_without_kid_is_accepted_when_the_jwks_has_exactly_one_key(
    auth: Authenticator,
) -> None:
    assert auth.verify(sign(ed_key(), claims(), kid=None)).subject == SUBJECT


# --- signatures, keys and algorithms ---------------------------------------------------------


def test_token_signed_by_another_key_under_a_trusted_kid_is_rejected(auth: Authenticator) -> None:
    impostor = ed_key(seed="impostor")
    token = sign(impostor, claims(), kid=ed_key().kid)

    assert rejected(auth, token) == "token signature does not verify"


def test_a_payload_swapped_under_a_valid_signature_is_rejected(auth: Authenticator) -> None:
    header, _, signature = sign(ed_key(), claims()).split(".")
    payload = segment(claims(roles=["admin"]))

    assert rejected(auth, f"{header}.{payload}.{signature}") == "token signature does not verify"


def test_unknown_kid_is_rejected(auth: Authenticator) -> None:
    assert rejected(auth, sign(ed_key(), claims(), kid="not-in-jwks")) == "unknown signing key"


def test_a_token_without_kid_is_rejected_when_the_jwks_has_several_keys(
    make_auth: MakeAuth,
) -> None:
    auth = make_auth(ed_key(), ec_key())

    assert "no key id" in rejected(auth, sign(ed_key(), claims(), kid=None))


def test_alg_none_token_is_rejected(auth: Authenticator) -> None:
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": ed_key().kid}, claims())

    assert rejected(auth, token) == "token algorithm not allowed"


def test_alg_none_token_without_kid_is_rejected_even_with_a_single_key(
    auth: Authenticator,
) -> None:
    assert rejected(auth, unsigned_token({"alg": "none"}, claims())) == (
        "token algorithm not allowed"
    )


@pytest.mark.parametrize(
    "secret_of",
    [
        lambda: rsa_key().public_pem(),
        lambda: json.dumps(rsa_key().jwk()).encode(),
        lambda: rsa_key().jwk()["n"].encode(),
    ],
    ids=["pem", "jwk-json", "modulus"],
)
def test_hs256_token_keyed_with_the_public_key_is_rejected(
    make_auth: MakeAuth, secret_of: Callable[[], bytes]
) -> None:
    # Algorithm confusion: a verifier that lets the token pick HS256 would check this MAC with
    # the public key as the secret, and anyone could forge it.
    auth = make_auth(rsa_key())
    token = hmac_token(secret_of(), {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims())

    assert rejected(auth, token) == "token algorithm not allowed"


def test_an_allowed_algorithm_that_does_not_match_the_kid_key_is_rejected(
    make_auth: MakeAuth,
) -> None:
    auth = make_auth(ed_key(), ec_key())
    token = sign(ec_key(), claims(), kid=ed_key().kid)

    assert rejected(auth, token) == "token algorithm does not match its key"


def test_an_algorithm_outside_the_configured_list_is_rejected(make_auth: MakeAuth) -> None:
    auth = make_auth(ed_key(), rsa_key(), algorithms=("EdDSA",))

    assert rejected(auth, sign(rsa_key(), claims())) == "token algorithm not allowed"


def test_a_jwks_rsa_key_below_2048_bits_is_never_used(make_auth: MakeAuth) -> None:
    weak = rsa_key("weak", bits=1024)
    auth = make_auth(ed_key(), weak)
    with pytest.warns(InsecureKeyLengthWarning):
        token = sign(weak, claims())

    assert rejected(auth, token) == "unknown signing key"


# --- registered claims -----------------------------------------------------------------------


def test_wrong_audience_is_rejected(auth: Authenticator) -> None:
    assert rejected(auth, sign(ed_key(), claims(aud="other-service"))) == (
        "token is for another audience"
    )


def test_wrong_issuer_is_rejected(auth: Authenticator) -> None:
    assert rejected(auth, sign(ed_key(), claims(iss="https://evil.test"))) == (
        "token is from another issuer"
    )


def test_expired_token_is_rejected(auth: Authenticator) -> None:
    token = sign(ed_key(), claims(exp=int(time.time()) - 120))

    assert rejected(auth, token) == "token expired"


def test_token_not_yet_valid_is_rejected(auth: Authenticator) -> None:
    token = sign(ed_key(), claims(nbf=int(time.time()) + 600))

    assert rejected(auth, token) == "token not yet valid"


def test_token_issued_in_the_future_is_rejected(auth: Authenticator) -> None:
    token = sign(ed_key(), claims(iat=int(time.time()) + 600))

    assert rejected(auth, token) == "token not yet valid"


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
def test_missing_required_claim_is_rejected(auth: Authenticator, claim: str) -> None:
    reason = rejected(auth, sign(ed_key(), claims(**{claim: DROP})))

    assert reason == f"token lacks the {claim!r} claim"


@pytest.mark.parametrize(
    "sub", ["", "   ", "\u00a0", "\u200b", "\u2060\ufeff", "\u202e", "\u3164", "\n\t"], ids=ascii
)
def test_empty_or_invisible_subject_is_rejected(auth: Authenticator, sub: str) -> None:
    assert rejected(auth, sign(ed_key(), claims(sub=sub))) == "token subject is empty"


@pytest.mark.parametrize("sub", [42, ["alice"], {"id": "alice"}])
def test_non_string_subject_is_rejected(auth: Authenticator, sub: object) -> None:
    rejected(auth, sign(ed_key(), claims(sub=sub)))


@pytest.mark.parametrize("exp", ["soon", [1], {"at": 1}])
def test_non_numeric_expiry_is_rejected(auth: Authenticator, exp: object) -> None:
    rejected(auth, sign(ed_key(), claims(exp=exp)))


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "!!!.!!!.!!!",
        f"{b64url(b'not json')}.{segment({})}.",
        f"{segment(['a', 'list'])}.{segment({})}.",
        f"{segment({'alg': 'EdDSA', 'kid': 7})}.{segment({})}.",
        f"{segment({'alg': 'EdDSA', 'kid': ''})}.{segment({})}.",
        f"{segment({'alg': 7})}.{segment({})}.",
        f"{segment({'kid': 'ed-1'})}.{segment({})}.",
        "a.b.c.d.e",
        "ünïcode.tøken.here",
        "x" * 20_000,
    ],
    ids=[
        "empty",
        "one-segment",
        "two-segments",
        "junk-segments",
        "bad-base64",
        "header-not-json",
        "header-not-object",
        "kid-not-string",
        "kid-empty",
        "alg-not-string",
        "no-alg",
        "five-segments",
        "non-ascii",
        "huge",
    ],
)
def test_malformed_token_is_rejected(auth: Authenticator, token: str) -> None:
    rejected(auth, token)


def test_payload_that_is_not_json_is_rejected(auth: Authenticator) -> None:
    header, _, signature = sign(ed_key(), claims()).split(".")

    assert rejected(auth, f"{header}.{b64url(b'{oops')}.{signature}") in (
        "malformed token",
        "token signature does not verify",
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_unauthenticated(auth: Authenticator, token: str) -> None:
    with pytest.raises(Unauthenticated):
        auth.verify(token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64"]), json_values),
    payload=json_values,
)
def test_arbitrary_json_segments_only_ever_raise_unauthenticated(
    auth: Authenticator, header: dict[str, object], payload: object
) -> None:
    token = f"{segment(header)}.{segment(payload)}.{b64url(b'sig')}"

    with pytest.raises(Unauthenticated):
        auth.verify(token)


CLAIM_NAMES = ["sub", "exp", "nbf", "iat", "aud", "iss", "jti", "roles", "groups", "principal_kind"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(overrides=st.dictionaries(st.sampled_from(CLAIM_NAMES), json_values, max_size=3))
def test_trusted_tokens_with_arbitrary_claims_verify_or_raise_unauthenticated(
    auth: Authenticator, overrides: dict[str, object]
) -> None:
    # Signed by the trusted key, so only the claim checks stand between these and an Identity.
    token = ed_signed_token(ed_key(), {"alg": "EdDSA", "kid": ed_key().kid}, claims(**overrides))
    try:
        identity = auth.verify(token)
    except Unauthenticated:
        return  # anything else propagates and fails the test
    assert isinstance(identity.subject, str)
    assert identity.subject.strip()
    assert identity.kind in {"human", "agent", "service", "unknown"}
    assert identity.issuer == ISSUER
