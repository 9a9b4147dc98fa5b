"""Vendorlink (VL_API / ISPnext): Login, a possible server reassignment, and ExtendToken.

Seed 001 and PROVIDERS.md §4. Not OAuth 2: `POST {server}/API/auth/login` with JSON
`{"u", "p"}` answers `accessToken` and `renewalToken`, or only `{"hostname": …}` naming the
server to log in at instead (followed once). `POST {server}/API/auth/extendtoken` renews with
the (possibly expired) access token in the header and the renewal token in the body; a
renewal token works once, and `null` in the reply means it is spent. Any ExtendToken failure
falls back to Login. There is no `expires_in`: expiry comes from the JWT `exp` claim.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Unpack
from urllib.parse import urlsplit

from .._arguments import require_text
from .._urls import is_loopback_host, origin_of
from ..auth import AuthOptions, TokenAuth
from ..errors import InvalidGrant, TokenRequestError
from ..flows import Flow, TokenRequest, TokenResponse
from ..oauth2 import jwt_expiry
from ..token import Token

__all__ = ["Vendorlink"]

logger = logging.getLogger(__name__)

_LOGIN_PATH = "/API/auth/login"
_EXTEND_PATH = "/API/auth/extendtoken"
_LOGIN_FIX = (
    "check username= and password=, and that the customer allows API usage (Admin → General "
    "Settings → Authorisation And Security → Allow API usage)"
)


def _json_object(response: TokenResponse) -> dict[str, object]:
    data = response.json_object()
    return dict(data) if data is not None else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorlinkGrant:
    """The Login / ExtendToken flow, sans-IO."""

    base_url: str
    username: str
    password: str = field(repr=False)
    renewal_field: str = "rToken"
    can_renew: bool = True

    @property
    def token_url(self) -> str:
        return origin_of(self.base_url) + _LOGIN_PATH

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("vendorlink", origin_of(self.base_url), self.username), (self.password,)

    def fetch(self, current: Token | None) -> Flow:
        assigned = current.api_origin if current is not None else None
        if current is not None and current.refresh_token:
            server = assigned or origin_of(self.base_url)
            response = yield self._extend_request(server, current)
            token = self._token(response, api_origin=assigned)
            if token is not None:
                return token
            logger.warning(
                "ExtendToken refused by %s (HTTP %d); logging in again", server, response.status
            )
        if assigned is not None:
            # Later Logins go to the server Vendorlink assigned; only if it refuses, start
            # over at the configured one (which may assign another).
            response = yield self._login_request(assigned)
            token = self._token(response, api_origin=assigned)
            if token is not None:
                return token
        return (yield from self._log_in())

    def _log_in(self) -> Flow:
        home = origin_of(self.base_url)
        response = yield self._login_request(home)
        assigned = self._assigned_origin(response)
        if assigned is not None:
            logger.debug("Vendorlink assigned %s; logging in there", assigned)
            response = yield self._login_request(assigned)
            if self._assigned_origin(response) is not None:
                raise TokenRequestError(
                    f"Vendorlink at {assigned} assigned yet another server; only one hop is "
                    "followed: pass that server as base_url=",
                    status=response.status,
                    origin=assigned,
                )
        token = self._token(response, api_origin=assigned)
        if token is None:
            raise InvalidGrant(
                f"login refused by {response.origin} (HTTP {response.status}); {_LOGIN_FIX}",
                status=response.status,
                origin=response.origin,
            )
        return token

    def _login_request(self, server: str) -> TokenRequest:
        body = json.dumps({"u": self.username, "p": self.password}).encode()
        return TokenRequest(
            url=server + _LOGIN_PATH,
            body=body,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
            grant="login",
        )

    def _extend_request(self, server: str, current: Token) -> TokenRequest:
        body = json.dumps({self.renewal_field: current.refresh_token}).encode()
        return TokenRequest(
            url=server + _EXTEND_PATH,
            body=body,
            headers={
                # The access token may have expired: Vendorlink accepts it for renewal.
                "Authorization": f"Bearer {current.access_token}",
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
            grant="extendtoken",
            # Any ExtendToken failure, a 5xx included, falls back to Login at once: retrying a
            # renewal token the server may have spent cannot help.
            retryable=False,
        )

    def _assigned_origin(self, response: TokenResponse) -> str | None:
        """The server a `{"hostname": …}`-only answer names, if it is one we may trust."""
        data = _json_object(response)
        hostname = data.get("hostname")
        if response.status != 200 or "accessToken" in data or not isinstance(hostname, str):
            return None
        scheme = urlsplit(self.base_url).scheme.lower()
        assigned = origin_of(f"{scheme}://{hostname.strip()}")
        if not _is_sibling(urlsplit(assigned).hostname or "", urlsplit(self.base_url).hostname):
            raise TokenRequestError(
                f"Vendorlink at {origin_of(self.base_url)} assigned a server outside its "
                "domain; credentials are not sent there: check base_url=",
                status=response.status,
                origin=origin_of(self.base_url),
            )
        return assigned

    def _token(self, response: TokenResponse, *, api_origin: str | None) -> Token | None:
        """The token in a Login or ExtendToken answer, or `None` if it holds none."""
        data = _json_object(response)
        access_token = data.get("accessToken")
        if response.status != 200 or not isinstance(access_token, str) or not access_token:
            return None
        renewal_token = data.get("renewalToken")
        return Token(
            access_token=access_token,
            issued_at=response.sent_at,
            expires_at=jwt_expiry(access_token, response),
            # `null` means the renewal token is spent: the next renewal logs in.
            refresh_token=renewal_token
            if isinstance(renewal_token, str) and renewal_token
            else None,
            api_origin=api_origin,
            raw=data,
        )


_SHARED_SECOND_LEVELS = frozenset({"ac", "co", "com", "edu", "gov", "ne", "net", "or", "org"})


def _is_sibling(host: str, base_host: str | None) -> bool:
    """Whether `host` may receive credentials meant for `base_host`: the same parent domain
    (app.vendorlink.nl → app2.vendorlink.nl), or loopback for a loopback base. An address
    literal, or a base too short to have a private parent (vl.co.uk), allows only itself."""
    if not host or not base_host:
        return False
    host, base_host = host.lower(), base_host.lower()
    if is_loopback_host(base_host):
        return is_loopback_host(host)
    if host == base_host:
        return True
    labels = base_host.split(".")
    parent = labels[1:]
    if _is_address(base_host) or len(parent) < 2 or parent[0] in _SHARED_SECOND_LEVELS:
        return False
    return host.endswith("." + ".".join(parent))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class Vendorlink(TokenAuth):
    """Tokens for Vendorlink's VL_API (the ISPnext tender platform).

    API calls addressed to `base_url`'s server go to the server Vendorlink assigned at login,
    if it assigned one; the token goes nowhere else.

    Example::

        session.auth = Vendorlink("user", password, base_url="https://app.vendorlink.nl")
        session.get("https://app.vendorlink.nl/API/…")

    Args:
        username: the Vendorlink user's name.
        password: that user's password.
        base_url: the server you log in at, such as `https://app.vendorlink.nl`.
        renewal_field: the ExtendToken body key for the renewal token: `"rToken"` (current
            documentation) or `"RenewalToken"` (older servers).
        **options: the options of `TokenAuth`.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        base_url: str,
        renewal_field: str = "rToken",
        **options: Unpack[AuthOptions],
    ) -> None:
        grant = VendorlinkGrant(
            base_url=require_text("base_url", base_url),
            username=require_text("username", username),
            password=require_text("password", password),
            renewal_field=require_text("renewal_field", renewal_field),
        )
        super().__init__(grant, **options)
        self._home_origin = origin_of(base_url)
        self._public = f"username={username!r}"

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"
