"""A fake Keycloak realm: the OpenID Connect token endpoint and a resource server, on loopback.

Lives here: Keycloak's dialect of the token endpoint (form bodies, client auth in the body or
HTTP Basic, client_credentials, password and refresh_token grants, offline tokens of technical
users, optional rotation, Keycloak's error texts) and a protected API that accepts the realm's
tokens. The shared server and controls live in ``_server``. See PROVIDERS.md §1.
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
    unsigned_jwt,
)

_DEFAULT_CLIENTS: Mapping[str, str | None] = MappingProxyType({"portal-client": "portal-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"alice": "alice-password"})
_API_PREFIX = "/api/"
_REFRESH_LIFETIME_SECONDS = 1800  # Keycloak's default SSO Session Idle
_DEFAULT_SCOPE = "profile email"
_NOT_FOUND_PAGE = (
    b"<!DOCTYPE html><html><head><title>Not Found</title></head>"
    b"<body><h1>404 Not Found</h1></body></html>"
)


class FakeKeycloak(_BaseFake):
    """A Keycloak realm's token endpoint and a resource server on ``127.0.0.1``.

    Use it to test code that talks to Keycloak, such as a developer portal's technical user
    whose only credential is an offline refresh token. It speaks Keycloak's dialect: form
    bodies, ``client_secret_post`` or HTTP Basic (RFC 6749 §2.3.1), ``refresh_expires_in``,
    ``session_state``, ``not-before-policy``, and Keycloak's error descriptions ("Stale token",
    "Token is not active", "Session not active"). The API at ``api_url`` behaves like
    ``FakeOAuth2Provider``'s: ``forbidden`` answers 403, ``always-401`` 401, ``redirect?to=``
    307, any other path echoes the request.

    Every refresh answer carries a new refresh token. With ``rotate_refresh_tokens`` (the
    realm's "Revoke Refresh Token") the presented one is spent; reusing it answers
    ``invalid_grant`` "Stale token". Unlike real Keycloak, the reuse does not also end the
    session, so the newer token keeps working.

    Args:
        realm: The realm name in the token path.
        legacy_auth_prefix: Serve under ``/auth`` as Keycloak before 17 (WildFly) does. The
            token path under the other prefix answers 404 with an HTML page.
        rotate_refresh_tokens: Spend a refresh token when it is used.
        refresh_on_client_credentials: Also issue a refresh token for client credentials
            ("Use refresh tokens for client credentials grant").
        clients: Client id to secret; None marks a public client.
        users: Username to password, for the password grant.
        token_lifetime: Seconds an access token stays valid; sent as ``expires_in``.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``token_lifetime`` or ``token_delay`` is negative or not finite.
    """

    def __init__(
        self,
        *,
        realm: str = "portal",
        legacy_auth_prefix: bool = False,
        rotate_refresh_tokens: bool = False,
        refresh_on_client_credentials: bool = False,
        clients: Mapping[str, str | None] = _DEFAULT_CLIENTS,
        users: Mapping[str, str] = _DEFAULT_USERS,
        token_lifetime: float = 300.0,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        self._realm = realm
        self._legacy_auth_prefix = legacy_auth_prefix
        self._rotate_refresh_tokens = rotate_refresh_tokens
        self._refresh_on_client_credentials = refresh_on_client_credentials
        self._clients: dict[str, str | None] = dict(clients)
        self._users: dict[str, str] = dict(users)
        self._token_path = self._prefix(legacy_auth_prefix) + self._realm_token_path()
        self._other_token_path = self._prefix(not legacy_auth_prefix) + self._realm_token_path()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def server_url(self) -> str:
        """What users pass as Keycloak's server URL: ``base_url``, plus ``/auth`` if legacy."""
        return self.base_url + self._prefix(self._legacy_auth_prefix)

    @property
    def token_url(self) -> str:
        """``{server_url}/realms/{realm}/protocol/openid-connect/token``."""
        return self.base_url + self._token_path

    @property
    def api_url(self) -> str:
        """The resource server that accepts the realm's tokens, ``{base_url}/api/``."""
        return self.base_url + _API_PREFIX

    @staticmethod
    def _prefix(legacy: bool) -> str:
        return "/auth" if legacy else ""

    def _realm_token_path(self) -> str:
        return f"/realms/{self._realm}/protocol/openid-connect/token"

    # -- controls ----------------------------------------------------------------------------

    def issue_refresh_token(
        self, username: str = "alice", client_id: str = "portal-client", offline: bool = True
    ) -> str:
        """Mint a technical user's refresh token, as a portal shows it, without a token call.

        Args:
            username: The user the refreshed tokens are issued to.
            client_id: The client that must present it.
            offline: An offline token (``typ: Offline``, no ``exp``); its refresh answers
                carry ``refresh_expires_in: 0``.

        Returns:
            The new refresh token, a JWT like Keycloak's.
        """
        with self._lock:
            grant = RefreshGrant(
                subject=username,
                client_id=client_id,
                session=secrets.token_hex(16),
                is_offline=offline,
                scope=_scope(None, offline=offline),
            )
            return self._mint_keycloak_refresh_token_locked(grant)

    def end_session(self) -> None:
        """End every session: refresh tokens issued so far answer "Session not active".

        Sessions started later (a new login, a new ``issue_refresh_token``) work; access
        tokens already issued stay valid until they expire, as with a real resource server.
        """
        with self._lock:
            for token, grant in self._refresh_grants.items():
                self._refresh_grants[token] = replace(grant, session="")

    # -- token endpoint ----------------------------------------------------------------------

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        client_id, is_confidential = self._authenticate_client_locked(headers, params)
        grant_type = params.get("grant_type")
        if grant_type == "client_credentials":
            if not is_confidential:
                raise OAuthError(
                    400, "unauthorized_client", "Client not enabled to retrieve service account"
                )
            grant = RefreshGrant(
                subject=f"service-account-{client_id}",
                client_id=client_id,
                session=secrets.token_hex(16),
                scope=_scope(params.get("scope"), offline=False),
            )
            return self._issue_tokens_locked(grant, self._refresh_on_client_credentials)
        if grant_type == "password":
            username, password = params.get("username"), params.get("password")
            expected = self._users.get(username or "")
            if expected is None or password is None or not equal_secrets(password, expected):
                raise OAuthError(401, "invalid_grant", "Invalid user credentials")
            scope = params.get("scope")
            is_offline = scope is not None and "offline_access" in scope.split()
            grant = RefreshGrant(
                subject=username or "",
                client_id=client_id,
                session=secrets.token_hex(16),
                is_offline=is_offline,
                scope=_scope(scope, offline=is_offline),
            )
            return self._issue_tokens_locked(grant, True)
        if grant_type == "refresh_token":
            return self._refresh_locked(client_id, params)
        if grant_type is None:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")

    def _refresh_locked(self, client_id: str, params: Mapping[str, str]) -> Reply:
        refresh_token = params.get("refresh_token")
        if not refresh_token:
            raise OAuthError(400, "invalid_request", "Missing form parameter: refresh_token")
        grant = self._refresh_grants.get(refresh_token)
        if grant is None:
            raise OAuthError(400, "invalid_grant", "Token is not active")
        if grant.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token")
        if not grant.is_active:
            self._stale_refresh_tokens += 1
            description = "Token is not active" if grant.is_revoked else "Stale token"
            raise OAuthError(400, "invalid_grant", description)
        if not grant.session:
            raise OAuthError(400, "invalid_grant", "Session not active")
        if self._rotate_refresh_tokens:
            self._spend_refresh_token_locked(refresh_token)
        return self._issue_tokens_locked(grant, True)

    def _authenticate_client_locked(
        self, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Return the client id and whether it is confidential (Keycloak's client authenticator)."""
        uses_basic, basic = basic_credentials(headers)
        client_id: str | None
        secret: str | None
        if uses_basic and basic is not None:
            client_id, secret = basic
        else:
            client_id, secret = params.get("client_id"), params.get("client_secret")
        if not client_id:
            raise OAuthError(400, "invalid_client", "Missing client_id parameter")
        if client_id not in self._clients:
            raise _unauthorized_client()
        expected = self._clients[client_id]
        if expected is None:
            return client_id, False
        if secret is None or not equal_secrets(secret, expected):
            raise _unauthorized_client()
        return client_id, True

    def _issue_tokens_locked(self, grant: RefreshGrant, with_refresh_token: bool) -> Reply:
        access_token = self._mint_access_token_locked(
            grant.subject,
            claims={
                "iss": self._issuer(),
                "typ": "Bearer",
                "azp": grant.client_id,
                "sid": grant.session,
                "scope": grant.scope,
            },
            client_id=grant.client_id,
        )
        payload: dict[str, object] = {
            "access_token": access_token,
            "expires_in": self._lifetime_number(),
        }
        if with_refresh_token:
            payload["refresh_expires_in"] = 0 if grant.is_offline else _REFRESH_LIFETIME_SECONDS
            payload["refresh_token"] = self._mint_keycloak_refresh_token_locked(grant)
        payload.update(
            {
                "token_type": "Bearer",
                "not-before-policy": 0,
                "session_state": grant.session,
                "scope": grant.scope,
            }
        )
        return token_reply(payload)

    def _mint_keycloak_refresh_token_locked(self, grant: RefreshGrant) -> str:
        now = self._clock()
        claims: dict[str, object] = {
            "iat": math.floor(now),
            "jti": secrets.token_urlsafe(12),
            "iss": self._issuer(),
            "sub": grant.subject,
            "typ": "Offline" if grant.is_offline else "Refresh",
            "azp": grant.client_id,
            "sid": grant.session,
            "scope": grant.scope,
        }
        if not grant.is_offline:  # Keycloak's offline tokens carry no exp
            claims["exp"] = math.ceil(now + _REFRESH_LIFETIME_SECONDS)
        return self._mint_refresh_token_locked(grant, unsigned_jwt(claims))

    def _issuer(self) -> str:
        return f"{self.server_url}/realms/{self._realm}"

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        if request.path == self._token_path:
            if request.method != "POST":
                return json_reply(405, {"error": "RESTEASY003650: No resource method found"})
            return self._answer_token_request(request)
        if request.path == self._other_token_path:
            return Reply(
                status=404,
                body=_NOT_FOUND_PAGE,
                headers={"Content-Type": "text/html;charset=utf-8"},
            )
        if request.path.startswith(_API_PREFIX):
            return self._serve_protected_api(
                request,
                _API_PREFIX,
                unauthorized=lambda _reason: json_reply(
                    401,
                    {"error": "invalid_token", "error_description": "Token verification failed"},
                    {"WWW-Authenticate": f'Bearer realm="{self._realm}", error="invalid_token"'},
                ),
                forbidden=lambda: json_reply(
                    403,
                    {"error": "insufficient_scope"},
                    {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
                ),
            )
        return None


def _unauthorized_client() -> OAuthError:
    return OAuthError(401, "unauthorized_client", "Invalid client or Invalid client credentials")


def _scope(requested: str | None, *, offline: bool) -> str:
    scopes = (requested or _DEFAULT_SCOPE).split()
    for default in _DEFAULT_SCOPE.split():
        if default not in scopes:
            scopes.append(default)
    if offline and "offline_access" not in scopes:
        scopes.insert(0, "offline_access")
    return " ".join(scopes)
