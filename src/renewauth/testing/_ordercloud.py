"""A fake Sitecore OrderCloud marketplace: its ``/oauth/token`` endpoint and ``/v1/`` API.

Lives here: OrderCloud's dialect (form bodies, secret in the body and required on every grant
when the API client has one, password / client_credentials / anonymous / refresh_token grants,
errors as OAuth pairs plus an ``Errors`` list, account lockout) and its API's ``Errors`` bodies.
The shared server and controls live in ``_server``. See PROVIDERS.md §2.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType

from renewauth.testing._server import _BaseFake
from renewauth.testing._wire import (
    ErrorReply,
    RefreshGrant,
    Reply,
    Request,
    equal_secrets,
    json_reply,
    token_reply,
)

_DEFAULT_CLIENTS: Mapping[str, str | None] = MappingProxyType({"oc-client": "oc-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"buyer01": "buyer-password"})
_TOKEN_PATH = "/oauth/token"
_API_PREFIX = "/v1/"


class FakeOrderCloud(_BaseFake):
    """An OrderCloud marketplace (auth and API on one host) on ``127.0.0.1``.

    Use it to test code that signs in to OrderCloud. It speaks OrderCloud's dialect: form
    bodies with the secret in the body, ``token_type: "bearer"`` in lower case, token-endpoint
    errors that carry both ``error``/``error_description`` and an ``Errors`` list, and API
    errors as ``{"Errors": [{"ErrorCode", "Message"}]}``. An API client with a secret must
    send it on every grant, refresh included. Anonymous (guest) tokens come from
    client_credentials with ``client_id`` only, for ``anonymous_clients``. After
    ``lockout_after`` consecutive failed logins a username is locked out, even with the right
    password, until ``unlock()``. The API at ``api_url`` answers 401 ``InvalidToken`` for a bad
    or expired token; ``forbidden`` answers 403 ``InsufficientRoles``, ``always-401`` 401,
    ``redirect?to=`` 307, any other path echoes the request.

    Args:
        clients: API client id to secret; None marks a client without a secret.
        anonymous_clients: Clients allowed to issue anonymous tokens (client id only).
        users: Username to password, for the password grant.
        default_context_user: The user a client_credentials token acts as.
        refresh_tokens: Issue refresh tokens with the password grant and accept the
            refresh_token grant (OrderCloud's ``RefreshTokenDuration`` above 0).
        rotate_refresh_tokens: Each refresh returns a new refresh token and spends the old
            one. When False the refresh answer carries no ``refresh_token`` and the old one
            keeps working.
        lockout_after: Consecutive failed logins after which a username is locked out.
        token_lifetime: Seconds an access token stays valid; sent as ``expires_in``.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``token_lifetime`` or ``token_delay`` is negative or not finite, or
            ``lockout_after`` is below 1.
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str | None] = _DEFAULT_CLIENTS,
        anonymous_clients: Collection[str] = frozenset({"oc-client"}),
        users: Mapping[str, str] = _DEFAULT_USERS,
        default_context_user: str = "context-user",
        refresh_tokens: bool = False,
        rotate_refresh_tokens: bool = False,
        lockout_after: int = 5,
        token_lifetime: float = 600.0,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lockout_after < 1:
            raise ValueError(f"lockout_after must be >= 1, got {lockout_after}")
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        self._clients: dict[str, str | None] = dict(clients)
        self._anonymous_clients = frozenset(anonymous_clients)
        self._users: dict[str, str] = dict(users)
        self._default_context_user = default_context_user
        self._refresh_tokens = refresh_tokens
        self._rotate_refresh_tokens = rotate_refresh_tokens
        self._lockout_after = lockout_after
        self._consecutive_failures: dict[str, int] = {}
        self._anonymous_tokens = 0
        self._failed_logins = 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def auth_url(self) -> str:
        """What users pass as OrderCloud's auth URL: ``base_url``."""
        return self.base_url

    @property
    def token_url(self) -> str:
        """The token endpoint, ``{base_url}/oauth/token``."""
        return self.base_url + _TOKEN_PATH

    @property
    def api_url(self) -> str:
        """The root of the API, ``{base_url}/v1/``."""
        return self.base_url + _API_PREFIX

    # -- counters and controls ---------------------------------------------------------------

    @property
    def anonymous_tokens(self) -> int:
        """Anonymous (guest) tokens issued."""
        with self._lock:
            return self._anonymous_tokens

    @property
    def failed_logins(self) -> int:
        """Password grants refused for a wrong password, an unknown user or a lockout."""
        with self._lock:
            return self._failed_logins

    def _reset_own_counters_locked(self) -> None:
        self._anonymous_tokens = 0
        self._failed_logins = 0

    def unlock(self, username: str) -> None:
        """Lift the lockout of ``username`` and zero its failed-login streak."""
        with self._lock:
            self._consecutive_failures.pop(username, None)

    # -- token endpoint ----------------------------------------------------------------------

    def _bad_token_request(self, detail: str) -> Reply:
        return _auth_error(400, "invalid_request", detail, "Auth.InvalidRequest")

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        grant_type = params.get("grant_type")
        client_id = params.get("client_id")
        if not client_id or client_id not in self._clients:
            raise ErrorReply(
                _auth_error(400, "invalid_client", "invalid client_id", "Auth.InvalidClientID")
            )
        secret = params.get("client_secret")
        scope = params.get("scope")
        if grant_type == "client_credentials" and secret is None:
            if client_id not in self._anonymous_clients:
                raise ErrorReply(
                    _auth_error(
                        400,
                        "invalid_client",
                        "client is not configured for anonymous shopping",
                        "Auth.InvalidClientID",
                    )
                )
            self._anonymous_tokens += 1
            subject = f"anonymous-{secrets.token_hex(6)}"
            return self._issue_locked(
                subject, client_id, scope, anonymous=True, refresh_token=False
            )
        self._check_secret_locked(client_id, secret)
        if grant_type == "client_credentials":
            return self._issue_locked(
                self._default_context_user, client_id, scope, anonymous=False, refresh_token=False
            )
        if grant_type == "password":
            username = params.get("username", "")
            self._check_password_locked(username, params.get("password"))
            return self._issue_locked(
                username, client_id, scope, anonymous=False, refresh_token=self._refresh_tokens
            )
        if grant_type == "refresh_token" and self._refresh_tokens:
            return self._refresh_locked(client_id, params)
        raise ErrorReply(
            _auth_error(
                400,
                "unsupported_grant_type",
                f"grant_type {grant_type!r} is not supported",
                "Auth.UnsupportedGrantType",
            )
        )

    def _check_secret_locked(self, client_id: str, secret: str | None) -> None:
        expected = self._clients[client_id]
        if expected is None:
            return
        if secret is None or not equal_secrets(secret, expected):
            raise ErrorReply(
                _auth_error(
                    400, "invalid_client", "invalid client secret", "Auth.InvalidClientSecret"
                )
            )

    def _check_password_locked(self, username: str, password: str | None) -> None:
        failures = self._consecutive_failures.get(username, 0)
        if failures >= self._lockout_after:
            self._failed_logins += 1
            raise ErrorReply(
                _auth_error(
                    400,
                    "invalid_grant",
                    "User account is locked out; try again later",
                    "PasswordReset.LockedOut",
                )
            )
        expected = self._users.get(username)
        if expected is None or password is None or not equal_secrets(password, expected):
            self._failed_logins += 1
            self._consecutive_failures[username] = failures + 1
            raise ErrorReply(
                _auth_error(
                    400, "invalid_grant", "Invalid username or password", "Auth.IncorrectPassword"
                )
            )
        self._consecutive_failures.pop(username, None)

    def _refresh_locked(self, client_id: str, params: Mapping[str, str]) -> Reply:
        refresh_token = params.get("refresh_token", "")
        grant = self._refresh_grants.get(refresh_token)
        if grant is not None and not grant.is_active:
            self._stale_refresh_tokens += 1
        if grant is None or not grant.is_active or grant.client_id != client_id:
            raise ErrorReply(
                _auth_error(
                    400, "invalid_grant", "Invalid refresh token", "Auth.InvalidRefreshToken"
                )
            )
        if self._rotate_refresh_tokens:
            self._spend_refresh_token_locked(refresh_token)
        return self._issue_locked(
            grant.subject,
            client_id,
            params.get("scope", grant.scope),
            anonymous=False,
            refresh_token=self._rotate_refresh_tokens,
        )

    def _issue_locked(
        self,
        subject: str,
        client_id: str,
        scope: str | None,
        *,
        anonymous: bool,
        refresh_token: bool,
    ) -> Reply:
        claims: dict[str, object] = {
            "usr": subject,
            "cid": client_id,
            "u": subject,
            "usrtype": "buyer",
            "role": (scope or "").split(),
            "iss": self.base_url,
            "aud": self.base_url,
            "nbf": math.floor(self._clock()),
        }
        if anonymous:
            claims["orderid"] = secrets.token_hex(8)
        payload: dict[str, object] = {
            "access_token": self._mint_access_token_locked(
                subject, claims=claims, client_id=client_id
            ),
            "token_type": "bearer",
            "expires_in": self._lifetime_number(),
        }
        if refresh_token:
            payload["refresh_token"] = self._mint_refresh_token_locked(
                RefreshGrant(subject=subject, client_id=client_id, scope=scope)
            )
        if scope is not None:
            payload["scope"] = scope
        return token_reply(payload)

    def _failure_reply(self, status: int, headers: dict[str, str]) -> Reply:
        return _auth_error(status, "server_error", "injected failure", "InjectedFailure", headers)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        if request.path == _TOKEN_PATH:
            if request.method != "POST":
                return json_reply(405, _errors("MethodNotAllowed", "Use POST"), {"Allow": "POST"})
            return self._answer_token_request(request)
        if request.path.startswith(_API_PREFIX):
            return self._serve_protected_api(
                request,
                _API_PREFIX,
                unauthorized=lambda _reason: json_reply(
                    401, _errors("InvalidToken", "Access token is invalid or expired.")
                ),
                forbidden=lambda: json_reply(
                    403,
                    _errors("InsufficientRoles", "User does not have role(s) required."),
                ),
            )
        return None


def _errors(code: str, message: str) -> dict[str, object]:
    return {"Errors": [{"ErrorCode": code, "Message": message}]}


def _auth_error(
    status: int,
    error: str,
    description: str,
    code: str,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    payload = {"error": error, "error_description": description, **_errors(code, description)}
    return json_reply(status, payload, headers)
