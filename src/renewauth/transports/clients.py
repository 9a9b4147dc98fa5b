"""The transports joined: what every renewauth auth object is to each HTTP library, and the
one `__call__` that requests and aiohttp both call.

requests calls an auth with the prepared request (`session.auth = auth`); aiohttp calls a
client middleware with the request and the next handler (`middlewares=(auth,)`); httpx and
httpx2 run the auth flows of `HttpxSigning` instead, never `__call__`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, overload

import requests

from ..errors import ConfigurationError
from .aiohttp import AiohttpSigning
from .httpx import HttpxSigning
from .requests import RequestsSigning

if TYPE_CHECKING:  # the optional libraries, for the types of `__call__` only
    import aiohttp
    import httpx2

__all__ = ["ClientSigning"]


class ClientSigning(RequestsSigning, HttpxSigning, AiohttpSigning):
    """A requests auth, an `httpx.Auth` (and `httpx2.Auth`, see `httpx.adopt_fork`) and an
    aiohttp client middleware at once."""

    @overload
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest: ...
    @overload
    def __call__(self, request: httpx2.Request) -> httpx2.Request: ...
    @overload
    def __call__(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> Awaitable[aiohttp.ClientResponse]: ...
    def __call__(self, request: Any, handler: Any = None) -> Any:
        """requests calls it with a prepared request (`session.auth = auth`), aiohttp with
        a request and the next handler (`middlewares=(auth,)`). httpx and httpx2 run its
        auth flows instead; the `httpx2.Request` form exists for type checkers, which see
        `httpx2.Client(auth=auth)` take a callable."""
        if handler is not None:
            return self._middleware(request, handler)
        if isinstance(request, requests.PreparedRequest):
            return RequestsSigning.__call__(self, request)
        raise ConfigurationError(
            f"{type(self).__name__} was called with a {type(request).__module__}."
            f"{type(request).__qualname__}: it signs requests (session.auth = auth), httpx and "
            "httpx2 (Client(auth=auth)) and aiohttp (ClientSession(middlewares=(auth,))); "
            "pass it where that library takes auth"
        )
