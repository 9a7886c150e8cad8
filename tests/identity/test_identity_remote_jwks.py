"""JWKS from a URL, served by a real HTTP server on 127.0.0.1: caching, rotation, outages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from signoff.errors import Unauthenticated
from signoff.identity import Authenticator, IdentityConfig
from tests.identity.keys import (
    AUDIENCE,
    ISSUER,
    SUBJECT,
    JwksServer,
    claims,
    ec_key,
    ed_key,
    jwks,
    jwks_server,
    sign,
)

UNAVAILABLE = "identity provider keys unavailable"


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(jwks(ed_key())) as running:
        yield running


def remote(server: JwksServer, **config: Any) -> Authenticator:
    return Authenticator(
        IdentityConfig(jwks=server.url, issuer=ISSUER, audience=AUDIENCE, **config)
    )


def test_a_token_verifies_against_keys_fetched_from_the_url(server: JwksServer) -> None:
    auth = remote(server)

    assert auth.verify(sign(ed_key(), claims())).subject == SUBJECT


def test_no_fetch_happens_until_the_first_token_arrives(server: JwksServer) -> None:
    remote(server)

    assert server.requests == 0


def test_fetched_keys_are_cached_across_calls(server: JwksServer) -> None:
    auth = remote(server)
    for _ in range(5):
        auth.verify(sign(ed_key(), claims()))

    assert server.requests == 1


def test_cached_keys_keep_working_while_the_server_is_briefly_gone(server: JwksServer) -> None:
    auth = remote(server)
    auth.verify(sign(ed_key(), claims()))
    server.stop()

    assert auth.verify(sign(ed_key(), claims())).subject == SUBJECT


def test_once_the_cache_expires_a_gone_server_means_unauthenticated(server: JwksServer) -> None:
    auth = remote(server, jwks_cache_seconds=0.2)
    auth.verify(sign(ed_key(), claims()))
    server.stop()
    time.sleep(0.3)

    with pytest.raises(Unauthenticated) as caught:
        auth.verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE


def test_a_server_that_was_never_reachable_means_unauthenticated(server: JwksServer) -> None:
    auth = remote(server)
    server.stop()

    with pytest.raises(Unauthenticated) as caught:
        auth.verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE


@pytest.mark.parametrize("status", [404, 500, 503])
def test_an_http_error_from_the_jwks_url_means_unauthenticated(
    server: JwksServer, status: int
) -> None:
    server.status = status

    with pytest.raises(Unauthenticated) as caught:
        remote(server).verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE


@pytest.mark.parametrize(
    "body",
    [b"<html>login</html>", b"[]", b'{"keys": []}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'],
    ids=["html", "list", "no-keys", "only-hmac"],
)
def test_a_jwks_url_serving_no_usable_keys_means_unauthenticated(
    server: JwksServer, body: bytes
) -> None:
    server.body = body

    with pytest.raises(Unauthenticated) as caught:
        remote(server).verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE


def test_a_hanging_jwks_server_times_out_into_unauthenticated(server: JwksServer) -> None:
    server.hang = True
    auth = remote(server, jwks_timeout_seconds=0.3)
    started = time.monotonic()

    with pytest.raises(Unauthenticated) as caught:
        auth.verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE
    assert time.monotonic() - started < 5


def test_a_rotated_in_key_is_fetched_when_a_token_names_its_kid(server: JwksServer) -> None:
    auth = remote(server)
    auth.verify(sign(ed_key(), claims()))
    server.serve(jwks(ed_key(), ec_key("rotated")))

    assert auth.verify(sign(ec_key("rotated"), claims())).subject == SUBJECT
    assert server.requests == 2


def test_unknown_kids_do_not_refetch_the_jwks_on_every_call(server: JwksServer) -> None:
    auth = remote(server)
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="unknown signing key"):
            auth.verify(sign(ed_key(), claims(), kid="nobody"))

    # The first fetch, then one forced refresh; later misses wait out the cooldown.
    assert server.requests == 2


def test_a_token_signed_by_a_key_the_server_does_not_publish_is_rejected(
    server: JwksServer,
) -> None:
    impostor = ed_key(seed="impostor")

    with pytest.raises(Unauthenticated, match="token signature does not verify"):
        remote(server).verify(sign(impostor, claims(), kid=ed_key().kid))


def test_a_failed_refresh_does_not_lock_out_tokens_whose_keys_are_cached(
    server: JwksServer,
) -> None:
    auth = remote(server)
    auth.verify(sign(ed_key(), claims()))
    server.stop()

    with pytest.raises(Unauthenticated) as caught:
        auth.verify(sign(ed_key(), claims(), kid="rotated-while-down"))
    assert str(caught.value) == UNAVAILABLE
    assert auth.verify(sign(ed_key(), claims())).subject == SUBJECT


def test_right_after_a_failed_fetch_calls_fail_fast_without_waiting_on_the_idp(
    server: JwksServer,
) -> None:
    server.hang = True
    auth = remote(server, jwks_timeout_seconds=0.5)
    with pytest.raises(Unauthenticated):
        auth.verify(sign(ed_key(), claims()))
    started = time.monotonic()

    with pytest.raises(Unauthenticated) as caught:
        auth.verify(sign(ed_key(), claims()))
    assert str(caught.value) == UNAVAILABLE
    assert time.monotonic() - started < 0.25
    assert server.requests == 1


def test_two_published_keys_with_the_token_kid_are_ambiguous(server: JwksServer) -> None:
    server.serve(jwks(ed_key("twin"), ed_key("twin", seed="b")))

    with pytest.raises(Unauthenticated, match="ambiguous signing key"):
        remote(server).verify(sign(ed_key("twin"), claims()))
