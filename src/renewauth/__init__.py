"""renewauth: drop-in auth for requests and httpx that keeps bearer tokens valid.

```python
session.auth = OAuth2ClientCredentials(token_url, client_id, client_secret)
httpx.Client(auth=OAuth2Password(token_url, client_id, username, password))
```

The token is fetched on the first request, renewed before it expires, renewed again when the
API answers 401 and the request resent once — exactly one token call per renewal, however
many threads or asyncio tasks need it.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .auth import (
    BearerToken,
    OAuth2ClientCredentials,
    OAuth2JwtBearer,
    OAuth2Password,
    OAuth2RefreshToken,
    TokenAuth,
)
from .consent import DevicePrompt, OAuth2AuthorizationCode, OAuth2DeviceCode
from .errors import (
    AccessDenied,
    AuthError,
    ConfigurationError,
    ConsentError,
    ConsentExpired,
    DiscoveryError,
    InsecureTransportError,
    InvalidClient,
    InvalidGrant,
    LoginRequired,
    StoreError,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from .retrofit import Patch, patch, unpatch
from .stores import FileStore, MemoryStore, RedisStore, TokenStore
from .token import Token

__all__ = [
    "AccessDenied",
    "AuthError",
    "BearerToken",
    "ConfigurationError",
    "ConsentError",
    "ConsentExpired",
    "DevicePrompt",
    "DiscoveryError",
    "FileStore",
    "InsecureTransportError",
    "InvalidClient",
    "InvalidGrant",
    "LoginRequired",
    "MemoryStore",
    "OAuth2AuthorizationCode",
    "OAuth2ClientCredentials",
    "OAuth2DeviceCode",
    "OAuth2JwtBearer",
    "OAuth2Password",
    "OAuth2RefreshToken",
    "Patch",
    "RedisStore",
    "StoreError",
    "Token",
    "TokenAuth",
    "TokenEndpointUnavailable",
    "TokenRequestError",
    "TokenStore",
    "__version__",
    "patch",
    "unpatch",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())

try:
    __version__ = _version("renewauth")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
