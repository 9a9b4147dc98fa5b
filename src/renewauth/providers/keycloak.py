"""Keycloak: a developer portal's technical user, client credentials, or a password.

Seed 002 (a portal's "Technical User" page) and PROVIDERS.md §1. The token endpoint is
`{server_url}/realms/{realm}/protocol/openid-connect/token`, form bodies, RFC 6749 grants
(§4.3, §4.4, §6). Since Keycloak 17 the `/auth` prefix is gone by default; servers that keep
it take it as part of `server_url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack
from urllib.parse import quote, unquote

from .._arguments import client_for, require_text, require_tls_certificate, scope_text
from ..auth import AuthOptions, TokenAuth
from ..errors import ConfigurationError
from ..flows import Grant
from ..oauth2 import (
    Client,
    ClientAuth,
    ClientCredentialsGrant,
    PasswordGrant,
    RefreshTokenGrant,
)

__all__ = ["Keycloak"]

_TECHNICAL_USER_FIX = (
    "the technical user's refresh token is no longer active (spent, revoked, or idle past the "
    "offline session timeout): re-issue the technical user in the portal and pass its new "
    "refresh_token= (keep rotated tokens between runs with a FileStore or RedisStore)"
)


class Keycloak(TokenAuth):
    """Tokens from a Keycloak realm; the grant follows from the credentials given.

    - `refresh_token=`: a portal's technical user (seed 002), renewed with its refresh token,
      its only credential: every rotated one is stored before use and passed to `on_token`.
    - `username=` and `password=`: the password grant, renewed by refresh token, logging in
      again when that is refused.
    - `client_secret=` alone, or a client that authenticates without a secret (a signed JWT
      with `private_key=`, or a TLS client certificate with `cert=`): client credentials,
      renewed by repeating the grant.

    Example::

        session.auth = Keycloak("https://idp.example.com", "wallis",
                                client_id="2ce2…", client_secret="…", refresh_token="eyJ…")

    Args:
        server_url: the server, with `/auth` when it still uses the legacy prefix.
        realm: the realm name.
        client_id: the client.
        client_secret: the client's secret (omitted for a public client).
        refresh_token: a technical user's refresh token (see above).
        username: a user, for the password grant (see above).
        password: that user's password.
        scope: scopes to ask for (a refresh can only narrow them).
        client_auth: how the client authenticates at the token endpoint: `"body"` (default)
            or `"basic"` with the client secret; `"private_key_jwt"` (Keycloak's "Signed
            JWT", with `private_key=`) or `"client_secret_jwt"` ("Signed JWT with client
            secret"); `"tls_client_auth"` ("X509 certificate", with `cert=`).
        private_key: the client's RSA or EC private key for `private_key_jwt`, PEM or JWK.
        key_id: the `kid` of that key, when the client's keys hold several.
        **options: the options of `TokenAuth`.

    Raises:
        ConfigurationError: no usable combination of credentials.
    """

    def __init__(
        self,
        server_url: str,
        realm: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        server = require_text("server_url", server_url).rstrip("/")
        realm_path = quote(require_text("realm", realm), safe="")
        token_url = f"{server}/realms/{realm_path}/protocol/openid-connect/token"
        client = _client(client_id, client_secret, client_auth, private_key, key_id, options)
        grant = _grant(
            token_url,
            client,
            refresh_token=refresh_token,
            username=username,
            password=password,
            scope=scope,
        )
        super().__init__(grant, **options)
        self._public = f"realm={realm!r} client_id={client_id!r}"

    @classmethod
    def from_token_url(
        cls,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> Keycloak:
        """Build from the full token URL a portal shows (`…/realms/NAME/protocol/…/token`)."""
        marker = "/realms/"
        url = require_text("token_url", token_url)
        if marker not in url or not url.rstrip("/").endswith("/token"):
            raise ConfigurationError(
                "token_url= must be a Keycloak token URL such as "
                "'https://idp.example.com/realms/NAME/protocol/openid-connect/token'"
            )
        realm = url.rpartition(marker)[2].split("/", 1)[0]
        auth = cls.__new__(cls)
        client = _client(client_id, client_secret, client_auth, private_key, key_id, options)
        grant = _grant(
            url,
            client,
            refresh_token=refresh_token,
            username=username,
            password=password,
            scope=scope,
        )
        TokenAuth.__init__(auth, grant, **options)
        auth._public = f"realm={realm!r} client_id={client_id!r}"
        return auth

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> Keycloak:
        """Build from the realm's issuer (`https://idp.example.com/realms/NAME`); its token
        endpoint is read from the realm's discovery document on the first token call."""
        url = require_text("issuer", issuer).rstrip("/")
        server, marker, realm = url.rpartition("/realms/")
        if not marker or not server or not realm or "/" in realm:
            raise ConfigurationError(
                "issuer= must be a Keycloak realm's issuer such as "
                "'https://idp.example.com/realms/NAME'"
            )
        auth = cls.__new__(cls)
        auth._discover_from = url
        auth.__init__(  # type: ignore[misc]
            server,
            unquote(realm),
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            username=username,
            password=password,
            scope=scope,
            client_auth=client_auth,
            private_key=private_key,
            key_id=key_id,
            **options,
        )
        return auth

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"


def _client(  # noqa: PLR0917 - one private call site per constructor, in the same order
    client_id: str,
    client_secret: str | None,
    client_auth: ClientAuth,
    private_key: object,
    key_id: str | None,
    options: AuthOptions,
) -> Client:
    require_tls_certificate(client_auth, options)
    return client_for(client_id, client_secret, client_auth, "form", private_key, key_id, options)


def _grant(
    token_url: str,
    client: Client,
    *,
    refresh_token: str | None,
    username: str | None,
    password: str | None,
    scope: str | Sequence[str] | None,
) -> Grant:
    scopes = scope_text(scope)
    if refresh_token is not None and (username is not None or password is not None):
        raise ConfigurationError(
            "pass refresh_token= for a technical user, or username= and password= for the "
            "password grant, not both"
        )
    if refresh_token is not None:
        return RefreshTokenGrant(
            token_url=token_url,
            client=client,
            refresh_token=require_text("refresh_token", refresh_token),
            scope=scopes,
            fix=_TECHNICAL_USER_FIX,
        )
    if username is not None or password is not None:
        return PasswordGrant(
            token_url=token_url,
            client=client,
            username=require_text("username", username),
            password=require_text("password", password),
            scope=scopes,
        )
    if client.auth in ("body", "basic") and client.client_secret is None:
        raise ConfigurationError(
            "Keycloak needs credentials: refresh_token= (technical user), username= and "
            "password=, or a confidential client for client credentials: client_secret=, or "
            "client_auth='private_key_jwt' with private_key=, or client_auth='tls_client_auth' "
            "with cert="
        )
    return ClientCredentialsGrant(token_url=token_url, client=client, scope=scopes)
