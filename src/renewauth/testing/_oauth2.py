"""A fake OAuth2 provider with a bearer-protected API, served on loopback for tests.

Lives here: the generic dialect: its token endpoint (RFC 6749 §4.3 password, §4.4 client
credentials, §6 refresh) and protected API (RFC 6750). The server, counters and controls it
shares with the vendor fakes live in ``_server``. Must not live here: imports from the rest of
renewauth or from requests, httpx or pytest; the fake runs on the standard library alone.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from renewauth.testing._server import _BaseFake
from renewauth.testing._wire import (
    OAuthError,
    RefreshGrant,
    Reply,
    Request,
    basic_credentials,
    equal_secrets,
    json_reply,
    token_reply,
    unverified_claims,
)

_TOKEN_PATH = "/oauth/token"
_API_PREFIX = "/api/"
_DEFAULT_CLIENTS: Mapping[str, str | None] = MappingProxyType({"client-id": "client-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"alice": "alice-password"})


class FakeOAuth2Provider(_BaseFake):
    """An OAuth2 authorization server and a bearer-protected API on ``127.0.0.1``.

    Use it to test code that fetches and renews tokens against a real socket: it issues
    unsigned JWT access tokens, checks them on ``api_url``, rotates and revokes refresh tokens,
    fails or delays the token endpoint on command and counts every call. Time comes from
    ``clock``, so a test moves a fake clock past expiry instead of sleeping.

    The socket is bound when the provider is built, so ``base_url`` is known before ``start()``.
    A stopped provider cannot be started again; build a new one.

    Args:
        token_lifetime: Seconds an access token stays valid after it is issued.
        refresh_tokens: Issue refresh tokens with the password grant (and with client
            credentials when ``refresh_on_client_credentials`` is set).
        refresh_on_client_credentials: Also issue a refresh token for client credentials.
        rotate_refresh_tokens: Each refresh returns a new refresh token and spends the old
            one. When False the response carries no ``refresh_token`` (RFC 6749 §6 lets the
            server omit it) and the old one keeps working.
        include_expires_in: Send ``expires_in``; when False only the JWT's ``exp`` tells.
        expires_in_as_string: Send ``expires_in`` as a JSON string, as some servers do.
        token_type: The ``token_type`` value in token responses, such as "bearer".
        clients: Client id to secret; None marks a public client.
        users: Username to password, for the password grant.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        refresh_token_lifetime: Seconds a refresh token works after it was issued, however
            often it is used: every answer that uses or issues one says how long it has
            left as ``refresh_expires_in`` (counting down when it is not rotated), and a
            refresh token past its end is refused (``invalid_grant``). None (the default):
            refresh tokens have no stated end.
        clock: Returns the current time in seconds since the epoch.
        dpop_nonces: Demand DPoP server nonces (RFC 9449 §8, §9). The token endpoint and the
            API each keep a nonce of their own, and refuse a request whose ``DPoP`` proof
            does not carry it with ``use_dpop_nonce`` and the nonce in ``DPoP-Nonce``; the
            API sends its nonce on every answer, as resource servers do, and takes tokens
            as ``Authorization: DPoP``. ``rotate_dpop_nonces()`` changes both. Proofs are
            not verified: only their ``nonce`` claim is read. Pass ``token_type="DPoP"`` as
            well for a client that insists on DPoP-bound tokens.

    Raises:
        ValueError: If ``token_lifetime`` or ``token_delay`` is negative or not finite.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        refresh_tokens: bool = True,
        refresh_on_client_credentials: bool = False,
        rotate_refresh_tokens: bool = True,
        include_expires_in: bool = True,
        expires_in_as_string: bool = False,
        token_type: str = "Bearer",  # noqa: S107  # a token type, not a secret
        clients: Mapping[str, str | None] = _DEFAULT_CLIENTS,
        users: Mapping[str, str] = _DEFAULT_USERS,
        token_delay: float = 0.0,
        refresh_token_lifetime: float | None = None,
        clock: Callable[[], float] = time.time,
        dpop_nonces: bool = False,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        if refresh_token_lifetime is not None and not (
            math.isfinite(refresh_token_lifetime) and refresh_token_lifetime > 0
        ):
            raise ValueError("refresh_token_lifetime must be seconds > 0, or None")
        self._refresh_token_lifetime = refresh_token_lifetime
        self._dpop_nonces = dpop_nonces
        if dpop_nonces:
            self._token_schemes = ("bearer", "dpop")
        self._token_nonce = secrets.token_urlsafe(16)  # the authorization server's
        self._api_nonce = secrets.token_urlsafe(16)  # the resource server's
        self._refresh_tokens = refresh_tokens
        self._refresh_on_client_credentials = refresh_on_client_credentials
        self._rotate_refresh_tokens = rotate_refresh_tokens
        self._include_expires_in = include_expires_in
        self._expires_in_as_string = expires_in_as_string
        self._token_type = token_type
        self._clients: dict[str, str | None] = dict(clients)
        self._users: dict[str, str] = dict(users)

    @property
    def token_url(self) -> str:
        """The token endpoint, ``{base_url}/oauth/token``."""
        return self.base_url + _TOKEN_PATH

    @property
    def api_url(self) -> str:
        """The root of the bearer-protected API, ``{base_url}/api/``."""
        return self.base_url + _API_PREFIX

    def issue_refresh_token(self, username: str = "alice", client_id: str = "client-id") -> str:
        """Mint a valid refresh token without a token call, to test the refresh grant alone.

        Args:
            username: The subject of the tokens the refresh token will yield.
            client_id: The client that must present it.

        Returns:
            The new refresh token.
        """
        with self._lock:
            return self._mint_refresh_token_locked(
                RefreshGrant(
                    subject=username, client_id=client_id, expires_at=self._refresh_end_locked()
                )
            )

    def _refresh_end_locked(self) -> float | None:
        lifetime = self._refresh_token_lifetime
        return None if lifetime is None else self._clock() + lifetime

    def rotate_dpop_nonces(self) -> None:
        """Give the token endpoint and the API new DPoP nonces (with ``dpop_nonces``): the
        next proof each receives with the old nonce is refused with ``use_dpop_nonce``."""
        with self._lock:
            self._token_nonce = secrets.token_urlsafe(16)
            self._api_nonce = secrets.token_urlsafe(16)

    # -- token endpoint ----------------------------------------------------------------------

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        proof = headers.get("dpop")
        if (
            self._dpop_nonces
            and proof is not None
            and unverified_claims(proof).get("nonce") != self._token_nonce
        ):
            raise OAuthError(
                400,
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
                {"DPoP-Nonce": self._token_nonce},
            )
        client_id, is_confidential = self._authenticate_client_locked(headers, params)
        grant_type = params.get("grant_type")
        scope = params.get("scope")
        if grant_type == "client_credentials":
            if not is_confidential:
                raise OAuthError(
                    400, "unauthorized_client", "Public client not allowed to use this grant"
                )
            with_refresh = self._refresh_tokens and self._refresh_on_client_credentials
            return self._issue_tokens_locked(client_id, client_id, scope, with_refresh)
        if grant_type == "password":
            username = _require(params, "username")
            password = _require(params, "password")
            expected = self._users.get(username)
            if expected is None or not equal_secrets(password, expected):
                raise OAuthError(400, "invalid_grant", "Invalid user credentials")
            return self._issue_tokens_locked(username, client_id, scope, self._refresh_tokens)
        if grant_type == "refresh_token":
            refresh_token = _require(params, "refresh_token")
            grant = self._refresh_grants.get(refresh_token)
            if grant is None or grant.client_id != client_id:
                raise OAuthError(400, "invalid_grant", "Token is not active")
            if not grant.is_active:
                self._stale_refresh_tokens += 1
                raise OAuthError(400, "invalid_grant", "Token is not active")
            if grant.expires_at is not None and self._clock() >= grant.expires_at:
                raise OAuthError(400, "invalid_grant", "Refresh token expired")
            if self._rotate_refresh_tokens:
                self._refresh_grants[refresh_token] = replace(grant, is_active=False)
            return self._issue_tokens_locked(
                grant.subject,
                client_id,
                scope,
                self._rotate_refresh_tokens,
                refresh_end=None if self._rotate_refresh_tokens else grant.expires_at,
            )
        if grant_type is None:
            raise OAuthError(400, "unsupported_grant_type", "Missing parameter: grant_type")
        raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def _authenticate_client_locked(
        self, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Return the client id and whether it is confidential (RFC 6749 §2.3.1)."""
        uses_basic, basic = basic_credentials(headers)
        challenge: dict[str, str] = {}
        client_id: str | None
        secret: str | None
        if uses_basic:
            challenge = {"WWW-Authenticate": "Basic"}
            if basic is None or params.get("client_id", basic[0]) != basic[0]:
                raise _invalid_client(challenge)
            client_id, secret = basic
        else:
            client_id, secret = params.get("client_id"), params.get("client_secret")
        if client_id is None or client_id not in self._clients:
            raise _invalid_client(challenge)
        expected = self._clients[client_id]
        if expected is None:
            if secret:
                raise _invalid_client(challenge)
            return client_id, False
        if secret is None or not equal_secrets(secret, expected):
            raise _invalid_client(challenge)
        return client_id, True

    def _issue_tokens_locked(
        self,
        subject: str,
        client_id: str,
        scope: str | None,
        with_refresh_token: bool,
        *,
        refresh_end: float | None = None,
    ) -> Reply:
        access_token = self._mint_access_token_locked(
            subject, claims={"azp": client_id}, client_id=client_id
        )
        payload: dict[str, object] = {"access_token": access_token, "token_type": self._token_type}
        if self._include_expires_in:
            expires_in = self._lifetime_number()
            payload["expires_in"] = str(expires_in) if self._expires_in_as_string else expires_in
        if with_refresh_token:
            refresh_end = self._refresh_end_locked()
            payload["refresh_token"] = self._mint_refresh_token_locked(
                RefreshGrant(subject=subject, client_id=client_id, expires_at=refresh_end)
            )
        if refresh_end is not None:  # issued now, or the one used, counting down to its end
            payload["refresh_expires_in"] = max(round(refresh_end - self._clock()), 1)
        if scope is not None:
            payload["scope"] = scope
        return token_reply(payload)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        if request.path == _TOKEN_PATH:
            if request.method != "POST":
                return json_reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
            return self._answer_token_request(request)
        if request.path.startswith(_API_PREFIX):
            if self._dpop_nonces:
                return self._serve_api_with_nonces(request)
            return self._serve_api(request)
        return None

    def _serve_api(self, request: Request) -> Reply:
        return self._serve_protected_api(
            request,
            _API_PREFIX,
            unauthorized=lambda _reason: json_reply(
                401,
                {"error": "invalid_token"},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ),
            forbidden=lambda: json_reply(
                403,
                {"error": "insufficient_scope"},
                {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            ),
        )

    def _serve_api_with_nonces(self, request: Request) -> Reply:
        """The API as a resource server that demands its own DPoP nonce (RFC 9449 §9)."""
        scheme = request.headers.get("authorization", "").partition(" ")[0].lower()
        proof = request.headers.get("dpop", "")
        with self._lock:
            nonce = self._api_nonce
            if scheme == "dpop" and unverified_claims(proof).get("nonce") != nonce:
                self._api_unauthorized += 1
                return json_reply(
                    401,
                    {"error": "use_dpop_nonce"},
                    {
                        "WWW-Authenticate": 'DPoP error="use_dpop_nonce", '
                        'error_description="Resource server requires nonce in DPoP proof"',
                        "DPoP-Nonce": nonce,
                    },
                )
        reply = self._serve_api(request)
        return replace(reply, headers={**reply.headers, "DPoP-Nonce": nonce})


def _invalid_client(challenge: Mapping[str, str]) -> OAuthError:
    return OAuthError(
        401, "invalid_client", "Invalid client or Invalid client credentials", challenge
    )


def _require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise OAuthError(400, "invalid_request", f"Missing parameter: {name}")
    return value
