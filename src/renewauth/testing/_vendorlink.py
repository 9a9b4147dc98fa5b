"""A fake Vendorlink VL_API: Login, ExtendToken and the protected ``/API/``, on loopback.

Lives here: Vendorlink's dialect (JSON ``{"u", "p"}`` Login, ExtendToken with a possibly
expired access token and a single-use renewal token, HS256 JWTs whose ``exp`` is the only
lifetime signal, empty bodies on failure) and the "log in at another server" answer, served
by a second loopback server that shares this fake's state. The shared server and controls live
in ``_server``. See PROVIDERS.md §4.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from renewauth.testing._server import _BaseFake
from renewauth.testing._wire import (
    AccessGrant,
    BodyError,
    ErrorReply,
    RefreshGrant,
    Reply,
    Request,
    equal_secrets,
    hs256_jwt,
    json_reply,
    parse_params,
)

_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"demo": "demo-password"})
_LOGIN_PATH = "/API/auth/login"
_EXTEND_PATH = "/API/auth/extendtoken"
_API_PREFIX = "/API/"
_NBF_BACKDATE_SECONDS = 300  # the vendor's tokens carry nbf five minutes before issue
_FIRST_USER_ID = 9999999
_DENIED = {"Message": "Authorization has been denied for this request."}


class FakeVendorlink(_BaseFake):
    """A Vendorlink (VL_API) application server on ``127.0.0.1``, optionally with a second one.

    Use it to test code that logs in to Vendorlink and keeps its session alive. Login takes
    JSON ``{"u": username, "p": password}`` and answers ``userId``, ``displayName``,
    ``accessToken``, ``renewalToken`` and ``hostname``, with no ``expires_in``: the access
    token is an HS256 JWT (``sid``, ``iss``, ``exp``, ``nbf``) and the fake accepts it until
    ``exp`` on ``clock``. ExtendToken takes the access token as a bearer (expired ones too) and
    the renewal token in the JSON body, and answers a new pair; each renewal token works once.
    Failed calls answer with an empty body.

    With ``reassign`` the fake also serves ``assigned_url``: Login at ``base_url`` then answers
    only ``{"hostname": "127.0.0.1:<port>"}`` and the client must log in again there. A token
    is accepted only by the API and ExtendToken of the server that issued it. Under ``/API/``
    (both servers) ``forbidden`` answers 403, ``always-401`` 401, ``redirect?to=`` 307 and any
    other path echoes the request.

    Args:
        users: Username to password.
        reassign: Run a second server and send every Login at ``base_url`` there.
        accepted_renewal_fields: JSON keys ExtendToken reads the renewal token from, in order
            (current docs use "rToken", older ones "RenewalToken").
        null_renewal_token: ExtendToken answers ``renewalToken: null``, as in older docs.
        bad_login: How Login refuses bad credentials: "empty" (200 with an empty body, as
            the vendor's sample expects) or "401" (401 with an empty body).
        token_lifetime: Seconds from issue to the access token's ``exp``.
        token_delay: Seconds Login and ExtendToken wait before answering; settable later.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``bad_login`` is neither "empty" nor "401", no renewal field is
            given, or ``token_lifetime`` or ``token_delay`` is negative or not finite.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] = _DEFAULT_USERS,
        reassign: bool = False,
        accepted_renewal_fields: Sequence[str] = ("rToken", "RenewalToken"),
        null_renewal_token: bool = False,
        bad_login: Literal["empty", "401"] = "empty",
        token_lifetime: float = 3600.0,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if bad_login not in ("empty", "401"):
            raise ValueError(f'bad_login must be "empty" or "401", got {bad_login!r}')
        if isinstance(accepted_renewal_fields, str) or not accepted_renewal_fields:
            raise ValueError("accepted_renewal_fields must be a non-empty sequence of keys")
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        self._users: dict[str, str] = dict(users)
        self._user_ids = {name: _FIRST_USER_ID - index for index, name in enumerate(users)}
        self._accepted_renewal_fields = tuple(accepted_renewal_fields)
        self._null_renewal_token = null_renewal_token
        self._bad_login = bad_login
        self._signing_key = secrets.token_bytes(32)
        self._assigned_host = self._add_server() if reassign else None
        self._logins_by_host: dict[str, int] = {}
        self._api_ok_by_host: dict[str, int] = {}
        self._extend_calls = 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def assigned_url(self) -> str | None:
        """The second server Login sends clients to, or None without ``reassign``."""
        return None if self._assigned_host is None else f"http://{self._assigned_host}"

    @property
    def login_url(self) -> str:
        """The Login endpoint, ``{base_url}/API/auth/login``."""
        return self.base_url + _LOGIN_PATH

    @property
    def token_url(self) -> str:
        """The same as ``login_url``: where a session starts."""
        return self.login_url

    @property
    def extend_url(self) -> str:
        """The ExtendToken endpoint, ``{base_url}/API/auth/extendtoken``."""
        return self.base_url + _EXTEND_PATH

    @property
    def api_url(self) -> str:
        """The root of the protected API, ``{base_url}/API/``."""
        return self.base_url + _API_PREFIX

    # -- counters ----------------------------------------------------------------------------

    @property
    def logins_by_host(self) -> dict[str, int]:
        """A copy of Login calls per server, keyed "127.0.0.1:port"."""
        with self._lock:
            return dict(self._logins_by_host)

    @property
    def extend_calls(self) -> int:
        """ExtendToken calls, including refused ones."""
        with self._lock:
            return self._extend_calls

    @property
    def api_ok_by_host(self) -> dict[str, int]:
        """A copy of successful API calls per server, keyed "127.0.0.1:port"."""
        with self._lock:
            return dict(self._api_ok_by_host)

    def _reset_own_counters_locked(self) -> None:
        self._logins_by_host.clear()
        self._api_ok_by_host.clear()
        self._extend_calls = 0

    def _count_api_ok_locked(self, request: Request) -> None:
        self._api_ok_by_host[request.host] = self._api_ok_by_host.get(request.host, 0) + 1

    # -- Login and ExtendToken ---------------------------------------------------------------

    def _answer_auth_call(self, request: Request, endpoint: str) -> Reply:
        try:
            params = parse_params(request.headers.get("content-type", ""), request.body)
            parse_error: Reply | None = None
        except BodyError:
            params, parse_error = {}, Reply(status=400)
        with self._lock:
            if endpoint == "login":
                self._logins_by_host[request.host] = self._logins_by_host.get(request.host, 0) + 1
            else:
                self._extend_calls += 1
        answer = self._login_locked if endpoint == "login" else self._extend_locked
        return self._serve_token_call(
            request,
            grant_type=endpoint,
            params=params,
            answer=lambda: answer(request, params),
            parse_error=parse_error,
        )

    def _login_locked(self, request: Request, params: Mapping[str, str]) -> Reply:
        if self._assigned_host is not None and request.host != self._assigned_host:
            return json_reply(200, {"hostname": self._assigned_host})
        username, password = params.get("u", ""), params.get("p")
        expected = self._users.get(username)
        if expected is None or password is None or not equal_secrets(password, expected):
            raise ErrorReply(Reply(status=200 if self._bad_login == "empty" else 401))
        payload = self._issue_locked(username, request.host)
        payload["hostname"] = request.host
        return json_reply(200, payload)

    def _extend_locked(self, request: Request, params: Mapping[str, str]) -> Reply:
        refused = ErrorReply(Reply(status=401))
        scheme, _, access_token = request.headers.get("authorization", "").partition(" ")
        access_grant = self._access_tokens.get(access_token.strip())
        if scheme.lower() != "bearer" or access_grant is None:
            raise refused
        if access_grant.host != request.host:
            raise refused
        renewal_token = next(
            (params[name] for name in self._accepted_renewal_fields if name in params), None
        )
        grant = self._refresh_grants.get(renewal_token or "")
        if grant is None:
            raise refused
        if not grant.is_active:
            self._stale_refresh_tokens += 1
            raise refused
        if grant.subject != access_grant.subject or grant.host != request.host:
            raise refused
        self._spend_refresh_token_locked(renewal_token or "")
        payload = self._issue_locked(grant.subject, request.host)
        if self._null_renewal_token:
            payload["renewalToken"] = None
        return json_reply(200, payload)

    def _issue_locked(self, username: str, host: str) -> dict[str, object]:
        now = self._clock()
        expires_at = math.ceil(now + self._token_lifetime)
        claims = {
            "sid": secrets.token_hex(16),
            "iss": f"http://{host}",
            "exp": expires_at,
            "nbf": math.floor(now) - _NBF_BACKDATE_SECONDS,
        }
        access_token = hs256_jwt({"typ": "JWT", "alg": "HS256"}, claims, self._signing_key)
        self._access_tokens[access_token] = AccessGrant(
            subject=username, expires_at=expires_at, host=host
        )
        self._tokens_issued += 1
        renewal_token = self._mint_refresh_token_locked(RefreshGrant(subject=username, host=host))
        return {
            "userId": self._user_ids.get(username, _FIRST_USER_ID),
            "displayName": f"{username.capitalize()} User",
            "accessToken": access_token,
            "renewalToken": renewal_token,
        }

    def _failure_reply(self, status: int, headers: dict[str, str]) -> Reply:
        return Reply(status=status, headers=headers)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        for path, endpoint in ((_LOGIN_PATH, "login"), (_EXTEND_PATH, "extendtoken")):
            if request.path == path:
                if request.method != "POST":
                    return Reply(status=405, headers={"Allow": "POST"})
                return self._answer_auth_call(request, endpoint)
        if request.path.startswith(_API_PREFIX):
            return self._serve_protected_api(
                request,
                _API_PREFIX,
                unauthorized=lambda _reason: json_reply(401, _DENIED),
                forbidden=lambda: json_reply(403, {"Message": "Access denied."}),
                same_host=True,
            )
        return None
