"""Shopware 6 Admin API: an integration (client credentials) or an admin user.

Seed 004 and PROVIDERS.md §3. `POST {base_url}/api/oauth/token` with JSON bodies. Admin
users log in with the password grant through the `administration` client and renew with a
refresh token that is single-use on every refresh. Errors are classified by Shopware's
`errors[0].code` (a dead refresh token comes as 400 or 401, by league/oauth2-server
version); a throttled login (429) is waited out, never hammered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

from .._arguments import client_from, require_text
from ..auth import AuthOptions, TokenAuth
from ..errors import ConfigurationError
from ..flows import Grant, TokenResponse
from ..oauth2 import ClientCredentialsGrant, PasswordGrant
from ._dialects import read_shopware_error, shopware_throttle_seconds

__all__ = ["Shopware"]

_ADMINISTRATION = "administration"


@dataclass(frozen=True, slots=True, kw_only=True)
class _AdminGrant(PasswordGrant):
    def retry_after(self, response: TokenResponse) -> float | None:
        return shopware_throttle_seconds(response)


@dataclass(frozen=True, slots=True, kw_only=True)
class _IntegrationGrant(ClientCredentialsGrant):
    def retry_after(self, response: TokenResponse) -> float | None:
        return shopware_throttle_seconds(response)


class Shopware(TokenAuth):
    """Tokens for a Shopware 6 shop's Admin API.

    - `client_id=` and `client_secret=`: an integration (its access key id and secret);
      renewal repeats the client-credentials grant.
    - `username=` and `password=`: an admin user, through the `administration` client;
      renewal uses the (rotating) refresh token and logs in again once if it is refused.

    Args:
        base_url: the shop, such as `https://shop.example.com`.
        client_id: an integration's access key id.
        client_secret: the integration's secret access key.
        username: an admin user's name.
        password: that admin user's password.
        scopes: the `scopes` value sent with the password grant (`"write"`).
        **options: the options of `TokenAuth`.

    Raises:
        ConfigurationError: neither or both kinds of credentials.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        scopes: str = "write",
        **options: Unpack[AuthOptions],
    ) -> None:
        token_url = require_text("base_url", base_url).rstrip("/") + "/api/oauth/token"
        grant: Grant
        if username is not None or password is not None:
            if client_secret is not None:
                raise ConfigurationError(
                    "pass username= and password= (admin user) or client_id= and "
                    "client_secret= (integration), not both"
                )
            grant = _AdminGrant(
                token_url=token_url,
                client=client_from(client_id or _ADMINISTRATION, None, "body", "json"),
                username=require_text("username", username),
                password=require_text("password", password),
                extra={"scopes": scopes},
                read_error=read_shopware_error,
            )
            who = f"username={username!r}"
        elif client_id is not None or client_secret is not None:
            grant = _IntegrationGrant(
                token_url=token_url,
                client=client_from(
                    require_text("client_id", client_id),
                    require_text("client_secret", client_secret),
                    "body",
                    "json",
                ),
                fix=(
                    "check client_id= (the integration's access key id) and client_secret=, "
                    "and that the integration is active"
                ),
                read_error=read_shopware_error,
            )
            who = f"client_id={client_id!r}"
        else:
            raise ConfigurationError(
                "Shopware needs client_id= and client_secret= (integration) or username= and "
                "password= (admin user)"
            )
        super().__init__(grant, **options)
        self._public = who

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"
