"""Van Marcke: a service user's password grant, and an API key on every call.

Seed 000 and PROVIDERS.md §5. The service user logs in with the password grant
(RFC 6749 §4.3, form body) at `https://api.vanmarcke.com/v1/oauth/token`; the test
environment is `https://api-test.vanmarcke.com/v1/oauth/token`. Every request, the token
call included, carries `x-api-key`. A refresh token is used when one is issued, else the
password grant runs again.

The set-up steps (create a service user, reset its password) are EXPERIMENTAL: their paths
are not published, so they are parameters with unverified defaults. They need an END user's
access token: from the end user's password grant, or from a login in a browser
(`VanMarcke.log_in_end_user`: the authorization code flow with PKCE at
`https://api.vanmarcke.com/v1/oauth/authorize`, for accounts with single sign-on or a second
factor).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Unpack
from urllib.parse import quote

from .._arguments import client_from, require_text
from .._urls import origin_of, require_secure_url
from ..auth import AuthOptions, TokenAuth
from ..consent import OAuth2AuthorizationCode
from ..errors import TokenRequestError
from ..flows import TokenRequest
from ..oauth2 import PasswordGrant, clean_text, is_client_error
from ..stores.memory import MemoryStore
from ..transports.httpx import HttpxSender

__all__ = ["AUTHORIZE_URL", "SERVICE_USERS_URL", "TOKEN_URL", "ServiceUser", "VanMarcke"]

TOKEN_URL = "https://api.vanmarcke.com/v1/oauth/token"
AUTHORIZE_URL = "https://api.vanmarcke.com/v1/oauth/authorize"
SERVICE_USERS_URL = "https://api.vanmarcke.com/v1/serviceusers"  # unverified (experimental)


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """A service user's credentials, as the service-users API returns them once."""

    username: str
    password: str = field(repr=False)


class VanMarcke(TokenAuth):
    """Tokens for the Van Marcke APIs, with `x-api-key` on every request.

    Example::

        session.auth = VanMarcke("API-APP1-P123456", password, client_id="…", api_key="…")

    Args:
        username: the service user's name.
        password: the service user's password.
        client_id: the registered application's client id.
        api_key: the application's API key, sent as `x-api-key` on every request.
        client_secret: the application's secret, when it has one.
        token_url: the token endpoint (production by default).
        **options: the options of `TokenAuth`.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        client_id: str,
        api_key: str,
        client_secret: str | None = None,
        token_url: str = TOKEN_URL,
        **options: Unpack[AuthOptions],
    ) -> None:
        headers = {"x-api-key": require_text("api_key", api_key)}
        grant = PasswordGrant(
            token_url=require_text("token_url", token_url),
            client=client_from(client_id, client_secret, "body", "form", headers),
            username=require_text("username", username),
            password=require_text("password", password),
            fix=(
                "check username= and password= (the service user's); reset a lost password "
                "with `renewauth vanmarcke reset-password`"
            ),
            client_fix="check client_id=, client_secret= and api_key= (the application's)",
            # Its error bodies are undocumented: any refused refresh falls back to the password.
            refresh_refused=is_client_error,
        )
        super().__init__(grant, **options)
        self._api_headers = headers
        self._public = f"client_id={client_id!r} username={username!r}"

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"

    @staticmethod
    def log_in_end_user(
        *,
        client_id: str,
        api_key: str,
        client_secret: str | None = None,
        authorize_url: str = AUTHORIZE_URL,
        token_url: str = TOKEN_URL,
        show: Callable[[str], object] | None = None,
        open_browser: bool = True,
        timeout: float = 300.0,
    ) -> str:
        """An END user's access token from a login in a browser, for the set-up steps.

        The authorization code flow with PKCE (`OAuth2AuthorizationCode.login`): the login
        page at `authorize_url` opens in a browser (and is printed on stderr, or given to
        `show`); Van Marcke redirects to a loopback address renewauth serves for that one
        callback; the code is exchanged with `x-api-key` on the token call. For accounts
        that cannot use the password grant (single sign-on, a second factor). The token is
        kept in memory only and never shown.

        Raises:
            AccessDenied: the end user declined.
            ConsentExpired: no login within `timeout` seconds.
            TokenRequestError: the code exchange was refused.
        """
        login = OAuth2AuthorizationCode(
            client_id,
            authorization_url=require_text("authorize_url", authorize_url),
            token_url=require_text("token_url", token_url),
            client_secret=client_secret,
            token_headers={"x-api-key": require_text("api_key", api_key)},
            store=MemoryStore(),  # used once, for the set-up call: nothing to keep
        )
        return login.login(show, open_browser=open_browser, timeout=timeout).access_token

    @staticmethod
    def create_service_user(
        access_token: str,
        *,
        api_key: str,
        url: str = SERVICE_USERS_URL,
        timeout: float = 10.0,
    ) -> ServiceUser:
        """Create the service user of this application and customer (experimental).

        Args:
            access_token: an END user's access token (from the end user's password grant,
                or `log_in_end_user` after a login in a browser).
            api_key: the application's API key.
            url: the service-users endpoint.
            timeout: seconds for the call.

        Returns:
            The new service user's credentials: store them, they are shown once.

        Raises:
            TokenRequestError: refused; a 403 means the service user exists already (reset
                its password instead).
        """
        reply = _call("POST", url, access_token, api_key, timeout=timeout, body=b"{}")
        if reply[0] == 403:
            raise TokenRequestError(
                "a service user already exists for this application and customer; get a new "
                "password with `renewauth vanmarcke reset-password` "
                "(VanMarcke.reset_service_user_password)",
                status=403,
                origin=_origin(url),
            )
        data = _json_object(reply, url, "create a service user")
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise TokenRequestError(
                f"{_origin(url)} created a service user but its answer has no username and "
                "password; check url=",
                status=reply[0],
                origin=_origin(url),
            )
        return ServiceUser(username, password)

    @staticmethod
    def reset_service_user_password(
        access_token: str,
        *,
        api_key: str,
        username: str,
        url: str = SERVICE_USERS_URL,
        timeout: float = 10.0,
    ) -> str:
        """Give the service user `username` a new password and return it (experimental).

        Looks the user's id up with `GET url`, then calls `POST url/{id}/resetPassword`.

        Raises:
            TokenRequestError: refused, or no service user of that name.
        """
        listing = _call("GET", url, access_token, api_key, timeout=timeout)
        data = _json_list(listing, url, "list service users")
        ids = [
            item.get("id")
            for item in data
            if isinstance(item, dict) and item.get("username") == username
        ]
        if not ids or not isinstance(ids[0], str | int):
            raise TokenRequestError(
                f"no service user named {username!r} at {_origin(url)}; create one with "
                "`renewauth vanmarcke create-service-user`",
                status=listing[0],
                origin=_origin(url),
            )
        reset_url = f"{url.rstrip('/')}/{quote(str(ids[0]), safe='')}/resetPassword"
        reply = _call("POST", reset_url, access_token, api_key, timeout=timeout, body=b"{}")
        password = _json_object(reply, reset_url, "reset the password").get("password")
        if not isinstance(password, str):
            raise TokenRequestError(
                f"{_origin(url)} reset the password but sent no new one; check url=",
                status=reply[0],
                origin=_origin(url),
            )
        return password


_Reply = tuple[int, bytes]


def _origin(url: str) -> str:
    return origin_of(url)


def _call(
    method: str, url: str, access_token: str, api_key: str, *, timeout: float, body: bytes = b""
) -> _Reply:
    # The end user's token and the API key travel here: never in clear text off loopback.
    require_secure_url(url, what="url", allow_insecure_http=False)
    request = TokenRequest(
        url=url,
        body=body,
        method=method,
        grant="service users",
        headers={
            "Authorization": f"Bearer {access_token}",
            "x-api-key": api_key,
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    reply = HttpxSender().send(request, timeout=timeout)
    return reply.status, reply.body


def _decoded(reply: _Reply, url: str, what: str) -> object:
    status, body = reply
    try:
        data: object = json.loads(body)
    except ValueError:
        data = None
    if status >= 400 or data is None:
        message = data.get("message") if isinstance(data, dict) else None
        detail = f" ({clean_text(message)})" if isinstance(message, str) else ""
        raise TokenRequestError(
            f"could not {what} at {_origin(url)}: HTTP {status}{detail}; check the end user's "
            "access token, api_key= and url= (these steps are experimental)",
            status=status,
            origin=_origin(url),
        )
    return data


def _json_object(reply: _Reply, url: str, what: str) -> dict[str, object]:
    data = _decoded(reply, url, what)
    if not isinstance(data, dict):
        raise TokenRequestError(
            f"could not {what} at {_origin(url)}: the answer is not a JSON object; check url=",
            status=reply[0],
            origin=_origin(url),
        )
    return data


def _json_list(reply: _Reply, url: str, what: str) -> list[object]:
    data = _decoded(reply, url, what)
    if not isinstance(data, list):
        raise TokenRequestError(
            f"could not {what} at {_origin(url)}: the answer is not a JSON list; check url=",
            status=reply[0],
            origin=_origin(url),
        )
    return data
