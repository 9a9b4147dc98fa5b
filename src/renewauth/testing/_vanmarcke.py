"""A fake Van Marcke API gateway: token endpoint, ``/v2/`` API and service users, on loopback.

Lives here: Van Marcke's dialect as far as it is known (an ``x-api-key`` header required on
every call, RFC 6749 password and refresh_token grants for service and end users, the
authorization code grant for end users, gateway-style ``fault`` bodies) and the service-users
API that creates a service user per end user, refuses a second with 403 "Conflict" and resets
passwords. The shared server and controls live in ``_server``, the login page and its codes in
``_authorize``. See PROVIDERS.md §5; what is UNKNOWN there is an assumption here.
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from renewauth.testing._authorize import Authorizations
from renewauth.testing._server import _BaseFake
from renewauth.testing._wire import (
    OAuthError,
    RefreshGrant,
    Reply,
    Request,
    equal_secrets,
    json_reply,
    token_reply,
)

_DEFAULT_CLIENTS: Mapping[str, str | None] = MappingProxyType({"vm-client": "vm-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"API-APP1-P123456": "service-password"})
_DEFAULT_END_USERS: Mapping[str, str] = MappingProxyType({"enduser": "enduser-password"})
_TOKEN_PATH = "/v1/oauth/token"
_AUTHORIZE_PATH = "/v1/oauth/authorize"
_API_PREFIX = "/v2/"
_SERVICE_USERS_PATH = "/v1/serviceusers"
_GATEWAY_PREFIXES = ("/v1/", "/v2/")
_FIRST_CUSTOMER_NUMBER = 200001
_END_USER = "end-user"
_CONFLICT = "Conflict: a service user already exists for this application and customer"


@dataclass(slots=True, kw_only=True)
class _ServiceUser:
    id: str
    username: str
    owner: str  # the end user who created it


class FakeVanMarcke(_BaseFake):
    """Van Marcke's API gateway (api.vanmarcke.com) on ``127.0.0.1``.

    Use it to test code that calls Van Marcke's APIs as a service user, or that sets up
    service users. Every call to the token endpoint, the API and the service-users API must
    carry ``x-api-key``; without the right key the gateway answers 401 ``InvalidApiKey`` and
    the call never reaches the endpoint (it counts only in ``missing_api_key``). The token
    endpoint takes RFC 6749 form bodies: the password grant for service users and end users,
    the refresh_token grant when ``refresh_tokens`` is on, with standard OAuth errors.

    The service-users API takes an end user's bearer token: POST ``service_users_url`` creates
    that end user's service user (201 with its password) once, then answers 403 "Conflict";
    GET lists it; POST ``{service_users_url}/{id}/resetPassword`` sets a new password, which
    the password grant accepts from then on. The API at ``api_url`` answers 401 for a bad or
    expired token; ``forbidden`` answers 403, ``always-401`` 401, ``redirect?to=`` 307, and
    any other path echoes the request.

    The authorization endpoint at ``authorize_url`` (RFC 6749 §4.1 with PKCE, RFC 7636
    ``S256`` only) is a browser's page, so it needs no ``x-api-key``: GET shows a login form,
    whose POST with an end user's name and password redirects (302) to the ``redirect_uri``
    with ``code`` and ``state``; wrong credentials show the form again with an error. The
    ``redirect_uri`` must be a loopback address, ``http://127.0.0.1:<any port>/...`` (RFC 8252
    §7.3), or the page refuses the request without redirecting. The token endpoint exchanges
    a code once (``grant_type=authorization_code`` with ``code``, ``redirect_uri``,
    ``client_id`` and ``code_verifier``), within ``code_lifetime``, for the client and
    redirect URI it was issued to and the verifier of its challenge; anything else is
    ``invalid_grant``. The answer is the password grant's. ``log_in`` drives the page as a
    browser would.

    Args:
        api_key: The application's key, required in the ``x-api-key`` header.
        clients: Client id to secret; None marks a client that sends no secret.
        users: Service user name to password.
        end_users: End user name to password (customers that may create service users).
        refresh_tokens: Issue refresh tokens and accept the refresh_token grant.
        rotate_refresh_tokens: Each refresh returns a new refresh token and spends the old
            one. When False the refresh answer carries no ``refresh_token`` and the old one
            keeps working.
        token_lifetime: Seconds an access token stays valid; sent as ``expires_in``.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        code_lifetime: Seconds an authorization code can be exchanged after it is issued.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``token_lifetime`` or ``token_delay`` is negative or not finite, or
            ``code_lifetime`` is not above 0.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        clients: Mapping[str, str | None] = _DEFAULT_CLIENTS,
        users: Mapping[str, str] = _DEFAULT_USERS,
        end_users: Mapping[str, str] = _DEFAULT_END_USERS,
        refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = False,
        token_lifetime: float = 3600.0,
        token_delay: float = 0.0,
        code_lifetime: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, token_delay=token_delay, clock=clock)
        self._api_key = api_key
        self._clients: dict[str, str | None] = dict(clients)
        self._users: dict[str, str] = dict(users)
        self._end_users: dict[str, str] = dict(end_users)
        self._refresh_tokens = refresh_tokens
        self._rotate_refresh_tokens = rotate_refresh_tokens
        self._service_users: dict[str, _ServiceUser] = {}
        self._next_customer_number = _FIRST_CUSTOMER_NUMBER
        self._missing_api_key = 0
        self._api_calls_with_key = 0
        self._authorizations = Authorizations(
            path=_AUTHORIZE_PATH, clock=clock, code_lifetime=code_lifetime
        )

    # -- addresses ---------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        """The token endpoint, ``{base_url}/v1/oauth/token``."""
        return self.base_url + _TOKEN_PATH

    @property
    def authorize_url(self) -> str:
        """The authorization endpoint, a browser's login page: ``{base_url}/v1/oauth/authorize``."""
        return self.base_url + _AUTHORIZE_PATH

    @property
    def api_url(self) -> str:
        """The root of the protected API, ``{base_url}/v2/``."""
        return self.base_url + _API_PREFIX

    @property
    def service_users_url(self) -> str:
        """The service-users API, ``{base_url}/v1/serviceusers``."""
        return self.base_url + _SERVICE_USERS_PATH

    # -- counters ----------------------------------------------------------------------------

    @property
    def missing_api_key(self) -> int:
        """Calls refused by the gateway for a missing or wrong ``x-api-key``."""
        with self._lock:
            return self._missing_api_key

    @property
    def api_calls_with_key(self) -> int:
        """Calls (token, API and service users) that carried the right ``x-api-key``."""
        with self._lock:
            return self._api_calls_with_key

    @property
    def codes_issued(self) -> int:
        """Authorization codes issued by the login page (a login accepted)."""
        with self._lock:
            return self._authorizations.issued

    @property
    def codes_exchanged(self) -> int:
        """Authorization codes the token endpoint exchanged for a token."""
        with self._lock:
            return self._authorizations.exchanged

    @property
    def codes_refused(self) -> int:
        """Authorization code exchanges refused: unknown, reused, expired, another client or
        redirect URI, or a wrong ``code_verifier``."""
        with self._lock:
            return self._authorizations.refused

    @property
    def logins_refused(self) -> int:
        """Logins on the authorization page refused for a wrong name or password."""
        with self._lock:
            return self._authorizations.logins_refused

    def _reset_own_counters_locked(self) -> None:
        self._missing_api_key = 0
        self._api_calls_with_key = 0
        self._authorizations.reset_counters()

    # -- the login page, as a browser uses it -------------------------------------------------

    def log_in(self, authorize_url: str, username: str, password: str) -> str:
        """Do what a browser and its user do with ``authorize_url``: open the login page,
        post the form with ``username`` and ``password``, and return where the page
        redirects (the ``redirect_uri`` with ``code`` and ``state``, or with ``error``),
        without following it.

        Raises:
            ValueError: ``authorize_url`` is not this fake's ``authorize_url`` with a query,
                or the page did not redirect (refused credentials, an unknown client, a
                ``redirect_uri`` that is not loopback); the message says which status.
        """
        if not authorize_url.startswith(self.authorize_url + "?"):
            raise ValueError(f"log_in() takes {self.authorize_url}?..., the fake's own page")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(authorize_url, timeout=10) as page:
                page.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ValueError(f"the login page answered {exc.code}, not a form") from None
        query = urllib.parse.urlsplit(authorize_url).query
        form = {**dict(urllib.parse.parse_qsl(query)), "username": username, "password": password}
        posted = urllib.request.Request(  # noqa: S310 - the fake's own http:// page
            self.authorize_url, data=urllib.parse.urlencode(form).encode(), method="POST"
        )
        try:
            with opener.open(posted, timeout=10) as page:
                page.read()
                status = page.status
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location")
            exc.close()
            if exc.code == 302 and location:
                return str(location)
            status = exc.code
        raise ValueError(f"the login page answered {status} without redirecting")

    # -- token endpoint ----------------------------------------------------------------------

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        client_id = params.get("client_id", "")
        secret = params.get("client_secret")
        if client_id not in self._clients:
            raise OAuthError(401, "invalid_client", "Client authentication failed")
        expected_secret = self._clients[client_id]
        if expected_secret is not None and (
            secret is None or not equal_secrets(secret, expected_secret)
        ):
            raise OAuthError(401, "invalid_client", "Client authentication failed")
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            code = self._authorizations.redeem(client_id, params)
            return self._issue_locked(code.subject, client_id, _END_USER, self._refresh_tokens)
        if grant_type == "password":
            username, password = params.get("username", ""), params.get("password")
            kind = _END_USER if username in self._end_users else "service-user"
            expected = self._end_users.get(username, self._users.get(username))
            if expected is None or password is None or not equal_secrets(password, expected):
                raise OAuthError(400, "invalid_grant", "Invalid resource owner credentials")
            return self._issue_locked(username, client_id, kind, self._refresh_tokens)
        if grant_type == "refresh_token" and self._refresh_tokens:
            refresh_token = params.get("refresh_token", "")
            grant = self._refresh_grants.get(refresh_token)
            if grant is not None and not grant.is_active:
                self._stale_refresh_tokens += 1
            if grant is None or not grant.is_active or grant.client_id != client_id:
                raise OAuthError(400, "invalid_grant", "Invalid refresh token")
            if self._rotate_refresh_tokens:
                self._spend_refresh_token_locked(refresh_token)
            kind = _END_USER if grant.subject in self._end_users else "service-user"
            return self._issue_locked(grant.subject, client_id, kind, self._rotate_refresh_tokens)
        raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def _issue_locked(
        self, subject: str, client_id: str, kind: str, with_refresh_token: bool
    ) -> Reply:
        access_token = self._mint_access_token_locked(
            subject,
            claims={"client_id": client_id, "user_type": kind},
            client_id=client_id,
            kind=kind,
        )
        payload: dict[str, object] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self._lifetime_number(),
        }
        if with_refresh_token:
            payload["refresh_token"] = self._mint_refresh_token_locked(
                RefreshGrant(subject=subject, client_id=client_id)
            )
        return token_reply(payload)

    # -- service users -----------------------------------------------------------------------

    def _answer_service_users(self, request: Request) -> Reply:
        with self._lock:
            grant, reason = self._check_bearer_locked(request)
            if reason or grant is None:
                self._api_unauthorized += 1
                return _unauthorized(reason)
            if grant.kind != _END_USER:
                self._api_forbidden += 1
                return json_reply(403, {"message": "Forbidden: only end users manage these"})
            owned = [user for user in self._service_users.values() if user.owner == grant.subject]
            rest = request.path.removeprefix(_SERVICE_USERS_PATH)
            if rest in ("", "/") and request.method == "GET":
                self._api_ok += 1
                listing = [{"id": user.id, "username": user.username} for user in owned]
                return json_reply(200, listing)
            if rest in ("", "/") and request.method == "POST":
                if owned:
                    self._api_forbidden += 1
                    return json_reply(403, {"message": _CONFLICT})
                user = _ServiceUser(
                    id=secrets.token_hex(8),
                    username=f"API-APP1-P{self._next_customer_number}",
                    owner=grant.subject,
                )
                self._next_customer_number += 1
                self._service_users[user.id] = user
                password = self._set_password_locked(user.username)
                self._api_ok += 1
                return json_reply(201, {"username": user.username, "password": password})
            user_id, _, action = rest.removeprefix("/").partition("/")
            target = self._service_users.get(user_id)
            if action != "resetPassword" or request.method != "POST":
                return json_reply(404, {"message": "Not Found"})
            if target is None or target.owner != grant.subject:
                return json_reply(404, {"message": f"No service user with id {user_id!r}"})
            self._api_ok += 1
            return json_reply(200, {"password": self._set_password_locked(target.username)})

    def _set_password_locked(self, username: str) -> str:
        password = secrets.token_urlsafe(18)
        self._users[username] = password
        return password

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: Request) -> Reply | None:
        if request.path == _AUTHORIZE_PATH:  # a browser's page: no x-api-key
            with self._lock:
                return self._authorizations.answer(
                    request, clients=self._clients, users=self._end_users
                )
        if not request.path.startswith(_GATEWAY_PREFIXES):
            return None
        presented = request.headers.get("x-api-key")
        with self._lock:
            if presented is None or not equal_secrets(presented, self._api_key):
                self._missing_api_key += 1
                return _fault(401, "Invalid ApiKey", "oauth.v2.InvalidApiKey")
            self._api_calls_with_key += 1
        if request.path == _TOKEN_PATH:
            if request.method != "POST":
                return json_reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
            return self._answer_token_request(request)
        if request.path == _SERVICE_USERS_PATH or request.path.startswith(
            _SERVICE_USERS_PATH + "/"
        ):
            return self._answer_service_users(request)
        if request.path.startswith(_API_PREFIX):
            return self._serve_protected_api(
                request,
                _API_PREFIX,
                unauthorized=lambda reason: (
                    _fault(
                        401, "Access Token expired", "keymanagement.service.access_token_expired"
                    )
                    if reason == "expired"
                    else _fault(401, "Invalid access token", "oauth.v2.InvalidAccessToken")
                ),
                forbidden=lambda: _fault(403, "Forbidden", "accesscontrol.AccessDenied"),
            )
        return json_reply(404, {"message": "Not Found"})


def _fault(status: int, message: str, code: str) -> Reply:
    return json_reply(status, {"fault": {"faultstring": message, "detail": {"errorcode": code}}})


def _unauthorized(reason: str) -> Reply:
    if reason == "expired":
        return _fault(401, "Access Token expired", "keymanagement.service.access_token_expired")
    return _fault(401, "Invalid access token", "oauth.v2.InvalidAccessToken")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Leaves a redirect to the caller (as an ``HTTPError``), as ``log_in`` promises."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
