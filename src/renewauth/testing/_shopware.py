"""A fake Shopware 6 shop: the Admin API's ``/api/oauth/token`` endpoint and ``/api/`` routes.

Lives here: Shopware's dialect (JSON or form bodies, integrations via client_credentials, admin
users via the ``administration`` client with password and always-rotating refresh tokens,
league/oauth2-server 8 or 9 error statuses, ``errors[]`` bodies, login throttling) and the API's
``errors[]`` answers. The shared server and controls live in ``_server``. See PROVIDERS.md §3.
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
    ErrorReply,
    RefreshGrant,
    Reply,
    Request,
    basic_credentials,
    equal_secrets,
    json_reply,
    token_reply,
)

_DEFAULT_INTEGRATIONS: Mapping[str, str] = MappingProxyType({"SWIAKEY01": "integration-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"admin": "shopware-password"})
_TOKEN_PATH = "/api/oauth/token"
_API_PREFIX = "/api/"
_ADMINISTRATION = "administration"
_DENIED = "The resource owner or authorization server denied the request."


class FakeShopware(_BaseFake):
    """A Shopware 6 shop's Admin API on ``127.0.0.1``.

    Use it to test code that calls the Shopware Admin API as an integration or an admin user.
    It speaks Shopware's dialect: every error is ``{"errors": [{"code", "status", "title",
    "detail"}]}`` with league/oauth2-server's codes ("4" client authentication failed, "6"
    wrong user credentials, "8" refresh token invalid, "9" access token refused). Refresh
    tokens always rotate: a used one is gone, and its reuse counts in
    ``stale_refresh_tokens``. After ``throttle_after`` failed logins of one username within
    ``throttle_seconds``, that username's token requests answer 429 ``FRAMEWORK__AUTH_THROTTLED``
    until ``throttle_seconds`` have passed on ``clock``. The API at ``api_url`` answers 401
    code "9" for a bad or expired token; ``forbidden`` answers 403
    ``FRAMEWORK__MISSING_PRIVILEGE_ERROR``, ``always-401`` 401, ``redirect?to=`` 307, and any
    other path echoes the request.

    Args:
        integrations: Access key id to secret, for client_credentials.
        users: Admin username to password, for the password grant.
        league_version: 8 answers a bad refresh token with 401, 9 with 400 (league's
            ``invalid_request`` became ``invalid_grant``).
        throttle_after: Failed logins of one username that trigger throttling.
        throttle_seconds: How long throttling lasts, and the window failures are counted in.
        token_lifetime: Seconds an access token stays valid; sent as ``expires_in``.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``league_version`` is not 8 or 9, ``throttle_after`` is below 1,
            ``throttle_seconds`` is negative, or ``token_lifetime`` or ``token_delay`` is
            negative or not finite.
    """

    def __init__(
        self,
        *,
        integrations: Mapping[str, str] = _DEFAULT_INTEGRATIONS,
        users: Mapping[str, str] = _DEFAULT_USERS,
        league_version: int = 8,
        throttle_after: int = 10,
        throttle_seconds: float = 30.0,
        token_lifetime: float = 600.0,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if league_version not in (8, 9):
            raise ValueError(f"league_version must be 8 or 9, got {league_version!r}")
        if throttle_after < 1:
            raise ValueError(f"throttle_after must be >= 1, got {throttle_after}")
        if not math.isfinite(throttle_seconds) or throttle_seconds < 0:
            raise ValueError(f"throttle_seconds must be >= 0, got {throttle_seconds!r}")
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        self._integrations: dict[str, str] = dict(integrations)
        self._users: dict[str, str] = dict(users)
        self._league_version = league_version
        self._throttle_after = throttle_after
        self._throttle_seconds = float(throttle_seconds)
        self._failed_login_times: dict[str, list[float]] = {}
        self._throttled_until: dict[str, float] = {}
        self._throttled = 0

    @property
    def token_url(self) -> str:
        """The token endpoint, ``{base_url}/api/oauth/token``."""
        return self.base_url + _TOKEN_PATH

    @property
    def api_url(self) -> str:
        """The root of the Admin API, ``{base_url}/api/``."""
        return self.base_url + _API_PREFIX

    @property
    def throttled(self) -> int:
        """Token requests answered 429 because their username was throttled."""
        with self._lock:
            return self._throttled

    def _reset_own_counters_locked(self) -> None:
        self._throttled = 0

    def change_password(self, username: str, new_password: str) -> None:
        """Set an admin user's password and revoke all of that user's tokens, as Shopware does.

        Args:
            username: The admin user; created if unknown.
            new_password: The password the password grant accepts from now on.
        """
        with self._lock:
            self._users[username] = new_password
            for token, grant in list(self._access_tokens.items()):
                if grant.subject == username and grant.client_id == _ADMINISTRATION:
                    del self._access_tokens[token]
            for token, refresh_grant in self._refresh_grants.items():
                if refresh_grant.subject == username:
                    self._refresh_grants[token] = replace(
                        refresh_grant, is_active=False, is_revoked=True
                    )

    # -- token endpoint ----------------------------------------------------------------------

    _strict_json_params = False

    def _bad_token_request(self, detail: str) -> Reply:
        return _error(400, "3", "The request is missing a parameter.", detail)

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        uses_basic, basic = basic_credentials(headers)
        client_id, secret = basic or (params.get("client_id", ""), params.get("client_secret"))
        challenge = {"WWW-Authenticate": 'Basic realm="OAuth"'} if uses_basic else {}
        grant_type = params.get("grant_type")
        if grant_type == "client_credentials":
            expected = self._integrations.get(client_id)
            if expected is None or secret is None or not equal_secrets(secret, expected):
                raise _client_authentication_failed(challenge)
            return self._issue_locked(client_id, client_id, refresh_token=False)
        if grant_type in ("password", "refresh_token") and client_id != _ADMINISTRATION:
            raise _client_authentication_failed(challenge)
        if grant_type == "password":
            return self._password_locked(params)
        if grant_type == "refresh_token":
            refresh_token = params.get("refresh_token", "")
            grant = self._refresh_grants.get(refresh_token)
            if grant is None or not grant.is_active:
                if grant is not None:
                    self._stale_refresh_tokens += 1
                status = 401 if self._league_version == 8 else 400
                raise ErrorReply(
                    _error(status, "8", "The refresh token is invalid.", "Token has been revoked")
                )
            # league/oauth2-server revokes the used refresh token; Shopware deletes its row.
            self._spend_refresh_token_locked(refresh_token)
            return self._issue_locked(grant.subject, _ADMINISTRATION, refresh_token=True)
        raise ErrorReply(
            _error(
                400,
                "2",
                "The authorization grant type is not supported by the authorization server.",
                "Check that all required parameters have been provided",
            )
        )

    def _password_locked(self, params: Mapping[str, str]) -> Reply:
        username = params.get("username", "")
        now = self._clock()
        throttled_until = self._throttled_until.get(username)
        if throttled_until is not None:
            if now < throttled_until:
                self._throttled += 1
                seconds = math.ceil(throttled_until - now)
                raise ErrorReply(
                    json_reply(
                        429,
                        {
                            "errors": [
                                {
                                    "code": "FRAMEWORK__AUTH_THROTTLED",
                                    "status": "429",
                                    "title": "Too Many Requests",
                                    "detail": f"Auth throttled for {seconds} seconds.",
                                    "meta": {"parameters": {"seconds": seconds}},
                                }
                            ]
                        },
                    )
                )
            del self._throttled_until[username]
        expected = self._users.get(username)
        password = params.get("password")
        if expected is None or password is None or not equal_secrets(password, expected):
            window_start = now - self._throttle_seconds
            failures = [t for t in self._failed_login_times.get(username, []) if t > window_start]
            failures.append(now)
            if len(failures) >= self._throttle_after:
                self._throttled_until[username] = now + self._throttle_seconds
                failures = []
            self._failed_login_times[username] = failures
            raise ErrorReply(_error(400, "6", "The user credentials were incorrect.", ""))
        self._failed_login_times.pop(username, None)  # Shopware resets the limiter on success
        return self._issue_locked(username, _ADMINISTRATION, refresh_token=True)

    def _issue_locked(self, subject: str, client_id: str, *, refresh_token: bool) -> Reply:
        now = self._clock()
        access_token = self._mint_access_token_locked(
            subject,
            claims={"aud": client_id, "nbf": math.floor(now), "scopes": ["write"]},
            client_id=client_id,
        )
        payload: dict[str, object] = {
            "token_type": "Bearer",
            "expires_in": self._lifetime_number(),
            "access_token": access_token,
        }
        if refresh_token:
            payload["refresh_token"] = self._mint_refresh_token_locked(
                RefreshGrant(subject=subject, client_id=client_id),
                "def50200" + secrets.token_hex(48),  # league's encrypted-payload look
            )
        return token_reply(payload)

    def _failure_reply(self, status: int, headers: dict[str, str]) -> Reply:
        return _error(status, "injected", "Injected failure", "injected failure", headers)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        if request.path == _TOKEN_PATH:
            if request.method != "POST":
                return _error(405, "0", "Method Not Allowed", "Use POST", {"Allow": "POST"})
            return self._answer_token_request(request)
        if request.path.startswith(_API_PREFIX):
            return self._serve_protected_api(
                request,
                _API_PREFIX,
                unauthorized=lambda _reason: _error(
                    401, "9", _DENIED, "Access token could not be verified."
                ),
                forbidden=lambda: _error(
                    403,
                    "FRAMEWORK__MISSING_PRIVILEGE_ERROR",
                    "Forbidden",
                    '{"message":"Missing privilege","missingPrivileges":["product:read"]}',
                ),
            )
        return None


def _error(
    status: int, code: str, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> Reply:
    payload = {"errors": [{"code": code, "status": str(status), "title": title, "detail": detail}]}
    return json_reply(status, payload, headers)


def _client_authentication_failed(challenge: Mapping[str, str]) -> ErrorReply:
    return ErrorReply(
        _error(401, "4", "Client authentication failed", "Client authentication failed", challenge)
    )
