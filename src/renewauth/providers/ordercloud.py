"""Sitecore OrderCloud: password, client credentials and anonymous (guest) tokens.

Seed 003 and PROVIDERS.md §2. `POST {auth_url}/oauth/token` with form bodies (RFC 6749 §4.3,
§4.4, §6). When the API client has a secret, it is sent on every grant, refresh included.
Errors come as an OAuth pair and/or `Errors[]`; credential errors are never retried, since
repeated failed logins lock the account for 30 minutes. A 403 means a missing role and never
triggers a renewal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from .._arguments import client_from, require_text, scope_text
from ..auth import AuthOptions, TokenAuth
from ..errors import ConfigurationError
from ..flows import Grant
from ..oauth2 import ClientCredentialsGrant, PasswordGrant, is_client_error
from ._dialects import read_ordercloud_error

__all__ = ["OrderCloud"]

_PASSWORD_FIX = (
    "check username= and password= (and client_secret= if the API client has one); "
    "OrderCloud locks an account for 30 minutes after repeated failures, so renewauth does "
    "not retry"
)
_CLIENT_FIX = (
    "check client_id= and client_secret= (an API client with a secret needs it on every "
    "grant; anonymous=True needs an API client that allows anonymous shoppers)"
)


class OrderCloud(TokenAuth):
    """Tokens for the OrderCloud API; the mode follows from what is given.

    - `username=` and `password=`: a user's token (elevated when `client_secret=` is given).
    - `client_secret=` alone: client credentials, acting as the API client's default
      context user.
    - `anonymous=True`: a guest token with the client id only.

    A refresh token is used when the API client issues one (`RefreshTokenDuration` > 0), and
    the primary grant is repeated when it is refused.

    Args:
        client_id: the API client id.
        client_secret: the API client's secret, sent on every grant when given.
        username: a user's name.
        password: that user's password.
        scope: roles, joined by spaces (`("FullAccess",)` by default).
        auth_url: `https://auth.ordercloud.io`, or the API host for sandbox and regional
            marketplaces (`https://sandboxapi.ordercloud.io`,
            `https://westeurope-production.ordercloud.io`, …).
        anonymous: ask for an anonymous shopper token.
        **options: the options of `TokenAuth`.

    Raises:
        ConfigurationError: no usable combination of credentials.
    """

    def __init__(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        scope: str | Sequence[str] | None = ("FullAccess",),
        auth_url: str = "https://auth.ordercloud.io",
        anonymous: bool = False,
        **options: Unpack[AuthOptions],
    ) -> None:
        token_url = require_text("auth_url", auth_url).rstrip("/") + "/oauth/token"
        client = client_from(client_id, client_secret, "body", "form")
        scopes = scope_text(scope)
        grant: Grant
        if username is not None or password is not None:
            if anonymous:
                raise ConfigurationError("anonymous=True takes no username= or password=")
            grant = PasswordGrant(
                token_url=token_url,
                client=client,
                username=require_text("username", username),
                password=require_text("password", password),
                scope=scopes,
                fix=_PASSWORD_FIX,
                client_fix=_CLIENT_FIX,
                read_error=read_ordercloud_error,
                # Its refresh errors are undocumented: any refusal falls back, as its SDKs do.
                refresh_refused=is_client_error,
            )
        elif client_secret is not None or anonymous:
            if anonymous and client_secret is not None:
                raise ConfigurationError(
                    "anonymous=True sends the client id only: leave out client_secret="
                )
            grant = ClientCredentialsGrant(
                token_url=token_url,
                client=client,
                scope=scopes,
                refresh=True,
                fix=_CLIENT_FIX,
                read_error=read_ordercloud_error,
                refresh_refused=is_client_error,
            )
        else:
            raise ConfigurationError(
                "OrderCloud needs username= and password=, client_secret=, or anonymous=True"
            )
        super().__init__(grant, **options)
        mode = "anonymous" if anonymous else (f"username={username!r}" if username else "client")
        self._public = f"client_id={client_id!r} {mode}"

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"
