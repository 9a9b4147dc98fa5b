"""The RFC 6749 grants as sans-IO flows, and the client that authenticates them.

Three grants: client credentials (§4.4), resource owner password (§4.3) and refresh token (§6),
and the JWT bearer grant (RFC 7523). Each is a frozen value whose `fetch()` returns a `Flow`
(see `flows.py`); what an answer means (a `Token` or a typed error) is read by `answers.py`.
This module also offers the few names of `answers` that providers, dpop and discovery import
from here (`__all__`).

No I/O, no clock (times come stamped on the `TokenResponse`), no requests, no httpx.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import quote_plus, urlencode

from ._jose import ASSERTION_TYPE, AssertionMaker
from .answers import (
    ErrorReader,
    RefusalRule,
    clean_text,
    is_client_error,
    is_refused_grant,
    jwt_expiry,
    parse_token_response,
    read_oauth_error,
)
from .flows import Flow, TokenRequest, TokenResponse
from .token import Token

__all__ = [
    "CLIENT_AUTH_METHODS",
    "JWT_BEARER",
    "JWT_CLIENT_AUTH",
    "TLS_CLIENT_AUTH",
    "BodyEncoding",
    "Client",
    "ClientAuth",
    "ClientCredentialsGrant",
    "JwtBearerGrant",
    "PasswordGrant",
    "RefreshTokenGrant",
    "basic_credentials",
    "clean_text",
    "is_client_error",
    "jwt_expiry",
    "read_oauth_error",
    "refresh_or_fall_back",
]

logger = logging.getLogger(__name__)

ClientAuth = Literal[
    "body",
    "basic",
    "private_key_jwt",
    "client_secret_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
CLIENT_AUTH_METHODS: tuple[str, ...] = (
    "body",
    "basic",
    "private_key_jwt",
    "client_secret_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
)
TLS_CLIENT_AUTH = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
JWT_CLIENT_AUTH = frozenset({"private_key_jwt", "client_secret_jwt"})
BodyEncoding = Literal["form", "json"]

_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


# What to check when the token endpoint refuses the client, by how it authenticates.
_CLIENT_FIX = "check client_id= and client_secret=, and try client_auth='basic' or 'body'"
_CLIENT_FIXES: Mapping[str, str] = MappingProxyType({
    "private_key_jwt": (
        "check client_id= and that the server holds the public half of private_key= for this "
        "client (and key_id=, when it holds several keys)"
    ),
    "client_secret_jwt": (
        "check client_id= and client_secret=, and that the server expects client_secret_jwt "
        "for this client"
    ),
    "tls_client_auth": (
        "check client_id= and that cert= is the certificate the server registered for this "
        "client (its subject, or the CA that issued it)"
    ),
    "self_signed_tls_client_auth": (
        "check client_id= and that cert= is the self-signed certificate the server holds for "
        "this client"
    ),
})  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """An OAuth 2 client as the token endpoint sees it.

    Args:
        client_id: the client identifier.
        client_secret: the secret of a confidential client; `None` for a public client.
        auth: `"body"` sends id and secret as body parameters (`client_secret_post`);
            `"basic"` sends them in an `Authorization: Basic` header (`client_secret_basic`),
            each form-encoded before base64 as RFC 6749 §2.3.1 says.
            `"private_key_jwt"` and `"client_secret_jwt"` send a fresh signed assertion
            (RFC 7523 §2.2) made by `assertion`; `"tls_client_auth"` and
            `"self_signed_tls_client_auth"` (RFC 8705) send only the id: the client
            certificate of the TLS connection authenticates.
        body: `"form"` (`application/x-www-form-urlencoded`, the RFC) or `"json"`.
        headers: extra headers for every token request (an API key, say).
        assertion: what signs the client assertion of the two JWT methods.
    """

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth: ClientAuth = "body"
    body: BodyEncoding = "form"
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_STRINGS, repr=False)
    assertion: AssertionMaker | None = field(default=None, repr=False, compare=False)
    key_fingerprint: str = field(default="", repr=False)

    def fix_when_refused(self, fix: str) -> str:
        """`fix`, or what to check for this client's method when `fix` is the generic one."""
        return _CLIENT_FIXES.get(self.auth, fix) if fix == _CLIENT_FIX else fix

    def secrets(self) -> tuple[str, ...]:
        """What identifies this client's credentials, hashed into the cache key, never shown."""
        secret = self.client_secret or ""
        return (secret, self.key_fingerprint) if self.key_fingerprint else (secret,)

    def request(self, token_url: str, grant: str, params: Mapping[str, str]) -> TokenRequest:
        """A token request for `grant` with `params`, authenticated as this client."""
        fields = {"grant_type": grant, **params}
        headers = {"Accept": "application/json", **self.headers}
        if self.auth == "basic" and self.client_secret is not None:
            headers["Authorization"] = basic_credentials(self.client_id, self.client_secret)
        elif self.auth in JWT_CLIENT_AUTH and self.assertion is not None:
            # RFC 7523 §3: iss and sub are the client id, aud the token endpoint.
            fields["client_id"] = self.client_id
            fields["client_assertion_type"] = ASSERTION_TYPE
            fields["client_assertion"] = self.assertion.assertion(
                issuer=self.client_id, subject=self.client_id, audience=token_url
            )
        elif self.auth in TLS_CLIENT_AUTH:
            fields["client_id"] = self.client_id  # RFC 8705 §2: the certificate authenticates
        else:
            fields["client_id"] = self.client_id
            if self.client_secret is not None:
                fields["client_secret"] = self.client_secret
        if self.body == "json":
            headers["Content-Type"] = "application/json"
            body = json.dumps(fields).encode()
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(fields).encode()
        return TokenRequest(
            url=token_url,
            body=body,
            headers=headers,
            grant=grant,
            # An assertion's jti is good for one call: a retry signs a new one.
            again=(
                (lambda: self.request(token_url, grant, params))
                if self.assertion is not None
                else None
            ),
        )


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The `Authorization` value for HTTP Basic client authentication.

    RFC 6749 §2.3.1: id and secret are encoded with `application/x-www-form-urlencoded`
    *before* they are joined by a colon and base64-encoded, so a secret with `:`, `+`, `/`,
    `%` or `=` survives the trip.
    """
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


# --- grants -------------------------------------------------------------------------------


def _scope_params(scope: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    params = dict(extra)
    if scope:
        params["scope"] = scope
    return params


def refresh_or_fall_back(
    token_url: str,
    client: Client,
    current: Token | None,
    *,
    read_error: ErrorReader = read_oauth_error,
    fix: str = "check client_id= and client_secret=",
    params: Mapping[str, str] | None = None,
    fallback: str = "primary",
    refused: RefusalRule | None = None,
) -> Generator[TokenRequest, TokenResponse, Token | None]:
    """Renew `current` with its refresh token (RFC 6749 §6); `None` when there is none or
    the server refused it, so the caller falls back to its primary grant.

    Refused means `invalid_grant` unless `refused` says otherwise (providers whose error
    dialect is unknown fall back on any 4xx but 429). Use with `yield from` in a flow.
    """
    if current is None or not current.refresh_token:
        return None
    response = yield client.request(
        token_url, "refresh_token", {"refresh_token": current.refresh_token, **(params or {})}
    )
    is_refused = (
        refused(response) if refused is not None else is_refused_grant(response, read_error)
    )
    if not is_refused:
        return parse_token_response(
            response, previous=current, grant="refresh_token", fix=fix, read_error=read_error
        )
    logger.warning(
        "refresh token refused by %s (%s); falling back to the %s grant",
        response.origin,
        read_error(response)[0] or response.status,
        fallback,
    )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCredentialsGrant:
    """RFC 6749 §4.4: the client authenticates as itself; renewal repeats the grant.

    With `refresh=True`, a refresh token the server issued is used first (falling back to
    the grant when it is refused).
    """

    token_url: str
    client: Client
    scope: str | None = None
    audience: str | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _NO_STRINGS, repr=False)
    refresh: bool = False
    fix: str = _CLIENT_FIX
    read_error: ErrorReader = field(default=read_oauth_error, repr=False, compare=False)
    refresh_refused: RefusalRule | None = field(default=None, repr=False, compare=False)
    can_renew: bool = True

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        public = (
            "client_credentials",
            self.token_url,
            self.client.client_id,
            self.scope or "",
            self.audience or "",
        )
        return public, (*self.client.secrets(), *_flat(self.extra))

    def fetch(self, current: Token | None) -> Flow:
        if self.refresh:
            renewed = yield from refresh_or_fall_back(
                self.token_url,
                self.client,
                current,
                read_error=self.read_error,
                fix=self.client.fix_when_refused(self.fix),
                fallback="client_credentials",
                refused=self.refresh_refused,
            )
            if renewed is not None:
                return renewed
        params = _scope_params(self.scope, self.extra)
        if self.audience:
            params["audience"] = self.audience
        response = yield self.client.request(self.token_url, "client_credentials", params)
        return parse_token_response(
            response,
            grant="client_credentials",
            fix=self.client.fix_when_refused(self.fix),
            read_error=self.read_error,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordGrant:
    """RFC 6749 §4.3: a user's name and password; renewal uses the refresh token (§6) and
    falls back to the password once when the refresh token is refused."""

    token_url: str
    client: Client
    username: str
    password: str = field(repr=False)
    scope: str | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _NO_STRINGS, repr=False)
    fix: str = "check username= and password= (and client_id=, client_secret=)"
    client_fix: str = _CLIENT_FIX
    read_error: ErrorReader = field(default=read_oauth_error, repr=False, compare=False)
    refresh_refused: RefusalRule | None = field(default=None, repr=False, compare=False)
    can_renew: bool = True

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        public = (
            "password",
            self.token_url,
            self.client.client_id,
            self.username,
            self.scope or "",
        )
        return public, (*self.client.secrets(), self.password, *_flat(self.extra))

    def fetch(self, current: Token | None) -> Flow:
        renewed = yield from refresh_or_fall_back(
            self.token_url,
            self.client,
            current,
            read_error=self.read_error,
            fix=self.client.fix_when_refused(self.client_fix),
            fallback="password",
            refused=self.refresh_refused,
        )
        if renewed is not None:
            return renewed
        params = {"username": self.username, "password": self.password, **self.extra}
        response = yield self.client.request(
            self.token_url, "password", _scope_params(self.scope, params)
        )
        return parse_token_response(
            response,
            grant="password",
            fix=self.fix,
            read_error=self.read_error,
            client_fix=self.client.fix_when_refused(self.client_fix),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTokenGrant:
    """RFC 6749 §6: renew with a refresh token, the only credential this client holds.

    The store's refresh token wins over the constructor's once one has been saved (it is the
    newest after a rotation); a reply without a refresh token keeps the one that was sent.
    """

    token_url: str
    client: Client
    refresh_token: str = field(repr=False)
    scope: str | None = None
    fix: str = (
        "the refresh token is spent, revoked or expired: obtain a new one and pass it as "
        "refresh_token= (a store keeps rotated ones: share it between runs)"
    )
    client_fix: str = _CLIENT_FIX
    read_error: ErrorReader = field(default=read_oauth_error, repr=False, compare=False)
    can_renew: bool = True

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        # The chain is the credential: the refresh token it started from names it. The
        # client's secret or key is left out, so that rotating the client secret keeps the
        # chain (the server binds refresh tokens to the client, not to one of its secrets).
        public = ("refresh_token", self.token_url, self.client.client_id, self.scope or "")
        return public, (self.refresh_token,)

    def presents(self, current: Token | None) -> str:
        """The refresh token a renewal from `current` sends: `current`'s, else the first."""
        if current is not None and current.refresh_token:
            return current.refresh_token
        return self.refresh_token

    def fetch(self, current: Token | None) -> Flow:
        refresh_token = self.presents(current)
        params = _scope_params(self.scope, {"refresh_token": refresh_token})
        response = yield self.client.request(self.token_url, "refresh_token", params)
        return parse_token_response(
            response,
            previous_refresh_token=refresh_token,
            grant="refresh_token",
            fix=self.fix,
            read_error=self.read_error,
            client_fix=self.client.fix_when_refused(self.client_fix),
        )


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtBearerGrant:
    """RFC 7523 §2.1: a service account signs its own assertion and trades it for a token.

    Every call sends a fresh assertion (`iss` the issuer, `sub` the subject, `aud` the
    audience or the token endpoint, a short `exp`, a new `jti`); renewal repeats the grant.
    No client authentication is sent: the assertion is the credential.
    """

    token_url: str
    issuer: str
    subject: str
    assertion: AssertionMaker = field(repr=False, compare=False)
    audience: str | None = None
    scope: str | None = None
    key_fingerprint: str = field(default="", repr=False)
    fix: str = (
        "check issuer=, subject=, audience= and that the server trusts the key of "
        "private_key= (and key_id=) for this issuer"
    )
    read_error: ErrorReader = field(default=read_oauth_error, repr=False, compare=False)
    can_renew: bool = True

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        public = ("jwt_bearer", self.token_url, self.issuer, self.subject, self.scope or "")
        return (*public, self.audience or ""), (self.key_fingerprint,)

    def _request(self) -> TokenRequest:
        signed = self.assertion.assertion(
            issuer=self.issuer, subject=self.subject, audience=self.audience or self.token_url
        )
        fields = _scope_params(self.scope, {"grant_type": JWT_BEARER, "assertion": signed})
        return TokenRequest(
            url=self.token_url,
            body=urlencode(fields).encode(),
            headers={
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            grant="jwt_bearer",
            again=self._request,  # a retry sends a new assertion, with a new jti
        )

    def fetch(self, current: Token | None) -> Flow:
        response = yield self._request()
        return parse_token_response(
            response, grant="jwt_bearer", fix=self.fix, read_error=self.read_error
        )


def _flat(mapping: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(f"{key}={value}" for key, value in sorted(mapping.items()))
