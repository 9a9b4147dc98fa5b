"""Every exception renewauth raises, in one tree.

```
AuthError
├── TokenRequestError          the token endpoint refused or answered nonsense
│   ├── InvalidGrant           the grant (password, refresh token, …) was refused
│   ├── InvalidClient          the client id or secret was refused
│   ├── TokenEndpointUnavailable   5xx, 429 or a network error, after the retries
│   └── DiscoveryError         the server's metadata document is missing or unusable
├── LoginRequired              a person must consent first: no token is stored yet
├── ConsentError               the person's consent did not complete
│   ├── AccessDenied           the person (or the server) refused it
│   └── ConsentExpired         no answer in time: the device code expired, no callback came
├── StoreError                 the token store could not be read or written
├── InsecureTransportError     a plain-http token URL off loopback (also a ValueError)
└── ConfigurationError         bad arguments or configuration (also a ValueError)
```

Messages say what failed, where (the token URL's origin, never a path with secrets in its
query) and what to do. No exception carries a secret or a request body: `TokenRequestError`
holds the status, the OAuth `error` and `error_description` the server sent, and the origin.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AuthError",
    "ConfigurationError",
    "ConsentError",
    "ConsentExpired",
    "DiscoveryError",
    "InsecureTransportError",
    "InvalidClient",
    "InvalidGrant",
    "LoginRequired",
    "StoreError",
    "TokenEndpointUnavailable",
    "TokenRequestError",
]


class AuthError(Exception):
    """Base class of every renewauth error: catch this to catch them all."""


class ConfigurationError(AuthError, ValueError):
    """Raised when arguments or a configuration file cannot work; the message names the fix."""


class LoginRequired(AuthError):
    """Raised when a credential that starts with a person's consent (`OAuth2AuthorizationCode`,
    `OAuth2DeviceCode`) is used before anyone logged in: its store holds no token. No token
    call is made; the message says how to log in (`renewauth login`, or `.login()`).

    .. versionadded:: 0.3
    """


class ConsentError(AuthError):
    """Raised when a login (`.login()`) ends without the person's consent.

    Attributes:
        error: the OAuth `error` code the server or the browser's callback gave, if any.
        error_description: the server's description, if any.
        origin: scheme, host and port of the server that answered, if one did.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description
        self.origin = origin


class AccessDenied(ConsentError):
    """Raised when the person declined (or the server refused) the authorization:
    `access_denied` in the browser's callback or from the device flow's token endpoint."""


class ConsentExpired(ConsentError):
    """Raised when no consent came in time: the device code expired (`expired_token`, or its
    `expires_in` passed), or the browser's callback did not arrive within `timeout=`."""


class StoreError(AuthError):
    """Raised when a token store (file, Redis) cannot be read or written. A renewed token
    whose write fails is not lost: it is kept in memory and written once the store is back;
    this error reaches the caller only when no token could be had without the store."""


class InsecureTransportError(AuthError, ValueError):
    """Raised when credentials would travel over plain http to a host that is not loopback."""


class TokenRequestError(AuthError):
    """Raised when a token endpoint refused a request or answered something unusable.

    Attributes:
        status: the HTTP status, or `None` when no response arrived.
        error: the OAuth `error` code (RFC 6749 §5.2) or the provider's own code, if any.
        error_description: the server's description, if any (servers do not put secrets there).
        origin: scheme, host and port of the token endpoint.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.error_description = error_description
        self.origin = origin


class InvalidGrant(TokenRequestError):
    """Raised when the server refused the grant: a wrong password, a spent refresh token."""


class InvalidClient(TokenRequestError):
    """Raised when the server refused the client: unknown client id or wrong client secret."""


class TokenEndpointUnavailable(TokenRequestError):
    """Raised when the token endpoint stayed unreachable, overloaded or failing (5xx, 429)
    through every retry.

    For a network error the message says which (a host that does not resolve, a refused
    connection, a certificate not trusted and OpenSSL's reason, no answer within `timeout=`,
    a reset), and `__cause__` is the low-level error: a `socket.gaierror`,
    `ConnectionRefusedError`, `ssl.SSLCertVerificationError`, `TimeoutError`, ... It is a copy
    without traceback: httpx's own exception holds the request and its credentials, so it is
    never kept.

    Attributes:
        retry_after: seconds the server asked to wait (`Retry-After`), if it said.

    .. versionchanged:: 0.2
        A network error says which, and keeps the low-level error as `__cause__`.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        origin: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            error=error,
            error_description=error_description,
            origin=origin,
        )
        self.retry_after = retry_after


class DiscoveryError(TokenRequestError):
    """Raised when discovery (`from_issuer`) found no usable metadata document: missing,
    not JSON, for another issuer, or without a token endpoint. The message names every URL
    tried.

    Attributes:
        urls: the metadata URLs that were tried, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        urls: tuple[str, ...] = (),
        status: int | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(message, status=status, origin=origin)
        self.urls = urls
