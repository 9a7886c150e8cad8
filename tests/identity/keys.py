"""Test signing keys, JWKS files, hand-made tokens and a real local JWKS HTTP server."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.acme.test"
AUDIENCE = "signoff"
SUBJECT = "alice@acme.io"
DROP = object()  # a claims() override that removes the claim

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key, the algorithm it signs with, and the kid its JWKS entry carries."""

    private: PrivateKey
    alg: str
    kid: str | None

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        data.update({"alg": self.alg, "use": "sig"})
        if self.kid is not None:
            data["kid"] = self.kid
        return data

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@functools.cache
def _ed25519_private(seed: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@functools.cache
def _rsa_private(seed: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def _ec_private(seed: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ed_key(kid: str | None = "ed-1", *, seed: str = "a") -> SigningKey:
    """An Ed25519 key; the same seed gives the same key within a test run."""
    return SigningKey(_ed25519_private(seed), "EdDSA", kid)


def rsa_key(kid: str | None = "rsa-1", *, seed: str = "a", bits: int = 2048) -> SigningKey:
    return SigningKey(_rsa_private(seed, bits), "RS256", kid)


def ec_key(kid: str | None = "ec-1", *, seed: str = "a") -> SigningKey:
    return SigningKey(_ec_private(seed), "ES256", kid)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def write_jwks(path: Path, *keys: SigningKey) -> Path:
    path.write_text(json.dumps(jwks(*keys)), encoding="utf-8")
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for ISSUER/AUDIENCE, valid for ten minutes; DROP removes a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "principal_kind": "human",
        "roles": ["sre"],
        "groups": ["platform", "oncall"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def sign(
    key: SigningKey, payload: dict[str, Any], *, kid: str | object | None = DROP, **header: Any
) -> str:
    """`payload` signed by `key`; the header kid is the key's unless `kid` says otherwise."""
    headers = dict(header)
    chosen = key.kid if kid is DROP else kid
    if chosen is not None:
        headers["kid"] = chosen
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


def unsigned_token(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """An `alg: none` style token: two segments and an empty signature."""
    return f"{segment(header)}.{segment(payload)}."


def ed_signed_token(key: SigningKey, header: dict[str, Any], payload: object) -> str:
    """Any header and payload, Ed25519-signed by hand: no library vets the claims first."""
    assert isinstance(key.private, ed25519.Ed25519PrivateKey)
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64url(key.private.sign(signing_input.encode()))}"


def hmac_token(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token MACed with `secret`, built by hand so no library refuses to make it."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS that tests can change, break, or stop."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.body: bytes = json.dumps(document).encode()
        self.status = 200
        self.requests = 0
        self.release = threading.Event()  # set to let a hanging request finish
        self.hang = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.hang:
                    outer.release.wait(10)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval so stop() (shutdown) returns quickly.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.running = False
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"

    def serve(self, document: dict[str, Any]) -> None:
        self.body = json.dumps(document).encode()

    def start(self) -> None:
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        """Stop serving and close the socket, so later connections are refused; idempotent."""
        self.release.set()
        if self.running:
            self._httpd.shutdown()
            self._thread.join(5)
            self.running = False
        if not self._closed:
            self._httpd.server_close()
            self._closed = True


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[JwksServer]:
    server = JwksServer(document)
    server.start()
    try:
        yield server
    finally:
        server.stop()
