"""OpenID Connect login for the web inbox: authorization code with PKCE, through Authlib."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]
from starlette.concurrency import run_in_threadpool

from signoff.approvals.model import Identity
from signoff.errors import ConfigError, ProviderUnavailable, Unauthenticated

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` fork and warns when it falls back to httpx, which is
    # the HTTP client the gateway already depends on; the fallback is the same API.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
    )

from signoff.identity import (
    DEFAULT_GROUPS_CLAIM,
    DEFAULT_KIND_CLAIM,
    DEFAULT_ROLES_CLAIM,
    Authenticator,
    IdentityConfig,
)

DEFAULT_SCOPES = "openid email"
DISCOVERY = "/.well-known/openid-configuration"
TIMEOUT_SECONDS = 10.0
# Environment variables `signoff serve` reads into core.settings (see settings_from_env).
ENV = {
    "SIGNOFF_HTTP_PUBLIC_URL": "public_url",
    "SIGNOFF_SESSION_SECRET": "session_secret",
    "SIGNOFF_SESSION_SECONDS": "session_seconds",
    "SIGNOFF_OIDC_ISSUER": "oidc_issuer",
    "SIGNOFF_OIDC_CLIENT_ID": "oidc_client_id",
    "SIGNOFF_OIDC_CLIENT_SECRET": "oidc_client_secret",
    "SIGNOFF_OIDC_SCOPES": "oidc_scopes",
    "SIGNOFF_OIDC_ROLES_CLAIM": "oidc_roles_claim",
    "SIGNOFF_OIDC_GROUPS_CLAIM": "oidc_groups_claim",
    "SIGNOFF_OIDC_KIND_CLAIM": "oidc_kind_claim",
}


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The inbox's settings named by the environment, as core.settings keys."""
    return {key: env[name] for name, key in ENV.items() if env.get(name, "").strip()}


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: str = DEFAULT_SCOPES
    roles_claim: str = DEFAULT_ROLES_CLAIM
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    kind_claim: str = DEFAULT_KIND_CLAIM

    @staticmethod
    def from_settings(settings: Mapping[str, Any], redirect_uri: str) -> OidcConfig | None:
        """The login configured in `settings`, or None when no issuer is set."""
        issuer = str(settings.get("oidc_issuer", "")).rstrip("/")
        if not issuer:
            return None
        client_id = str(settings.get("oidc_client_id", ""))
        if not client_id:
            raise ConfigError("oidc: SIGNOFF_OIDC_CLIENT_ID is required with an issuer")
        return OidcConfig(
            issuer=issuer,
            client_id=client_id,
            client_secret=str(settings.get("oidc_client_secret", "")),
            redirect_uri=redirect_uri,
            scopes=str(settings.get("oidc_scopes", DEFAULT_SCOPES)),
            roles_claim=str(settings.get("oidc_roles_claim", DEFAULT_ROLES_CLAIM)),
            groups_claim=str(settings.get("oidc_groups_claim", DEFAULT_GROUPS_CLAIM)),
            kind_claim=str(settings.get("oidc_kind_claim", DEFAULT_KIND_CLAIM)),
        )


class OidcLogin:
    """One relying party: sends reviewers to the issuer and turns the code they bring back into
    an Identity. The ID token is verified by identity.Authenticator, the same verification as
    bearer JWTs (keys from the issuer's JWKS, issuer, audience = our client id, expiry)."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._metadata: dict[str, Any] | None = None
        self._verifier: Authenticator | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> dict[str, Any]:
        async with self._lock:
            if self._metadata is None:
                try:
                    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
                        reply = await http.get(self.config.issuer + DISCOVERY)
                    reply.raise_for_status()
                    doc = reply.json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise ProviderUnavailable("the identity provider cannot be reached") from exc
                # The discovery document must speak for the issuer we trust (OIDC Discovery 4.3).
                if not isinstance(doc, dict) or doc.get("issuer") != self.config.issuer:
                    raise ConfigError("oidc: the discovery document names another issuer")
                self._verifier = Authenticator(
                    IdentityConfig(
                        jwks=str(doc["jwks_uri"]),
                        issuer=self.config.issuer,
                        audience=self.config.client_id,
                        roles_claim=self.config.roles_claim,
                        groups_claim=self.config.groups_claim,
                        kind_claim=self.config.kind_claim,
                    )
                )
                self._metadata = doc
            return self._metadata

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret or None,
            scope=self.config.scopes,
            redirect_uri=self.config.redirect_uri,
            code_challenge_method="S256",
            timeout=TIMEOUT_SECONDS,
        )

    async def begin(self) -> tuple[str, dict[str, str]]:
        """The issuer's authorization URL, and what the callback needs back (state, verifier)."""
        meta = await self.metadata()
        verifier = generate_token(64)
        async with self._client() as client:
            url, state = client.create_authorization_url(
                meta["authorization_endpoint"], code_verifier=verifier
            )
        return url, {"state": state, "verifier": verifier}

    async def finish(self, code: str, verifier: str) -> Identity:
        """Redeem `code` (with the PKCE verifier) and verify the ID token it brings."""
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=verifier
                )
            except Exception as exc:  # Authlib's OAuthError and httpx errors alike
                raise Unauthenticated("the identity provider refused the login") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("the identity provider sent no ID token")
        assert self._verifier is not None
        # Blocking (it may fetch the JWKS): off the event loop.
        return await run_in_threadpool(self._verifier.verify, id_token)
