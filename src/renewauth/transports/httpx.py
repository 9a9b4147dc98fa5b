"""httpx: the token sender used by every auth object, and signing for `httpx` clients.

Token requests go through a short-lived `httpx.Client` or `httpx.AsyncClient` per renewal
(renewals are rare; a client per call is safe across threads, event loops and `fork`). The
TLS context is built once and shared; in an event loop it is built in a worker thread, since
loading the CA bundle blocks for tens of milliseconds.

Signing follows httpx's own `Auth` protocol: `sync_auth_flow` and `async_auth_flow` set the
header, look at the answer, and yield the request once more after a renewal. The request body
is never read by the auth object (`requires_request_body` stays False, so uploads stream);
a body that is not a `ByteStream` cannot be replayed and is never resent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import AsyncGenerator, Collection, Generator, Mapping
from types import MappingProxyType

import httpx

from .._urls import origin_of
from ..errors import TokenEndpointUnavailable
from ..flows import TokenRequest
from ..manager import HttpReply, TokenManager
from ..token import Token
from ._signing import routed_url, should_renew_after

__all__ = ["HttpxSender", "HttpxSigning", "TokenClients"]

logger = logging.getLogger(__name__)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _reply(response: httpx.Response) -> HttpReply:
    headers = MappingProxyType({name.lower(): value for name, value in response.headers.items()})
    return HttpReply(response.status_code, headers, response.content)


def _unreachable(request: TokenRequest, failure: str) -> TokenEndpointUnavailable:
    return TokenEndpointUnavailable(
        f"token endpoint {request.origin} could not be reached ({failure}); "
        "check the network and token_url=, or raise timeout= if it is slow"
    )


class _TokenClient(httpx.Client):
    """The client of token requests: its own class, so that `renewauth.patch()` (which wraps
    `httpx.Client.send`) can tell renewauth's token calls from the program's."""


class _AsyncTokenClient(httpx.AsyncClient):
    """The asyncio twin of `_TokenClient`."""


TokenClients = (_TokenClient, _AsyncTokenClient)


class HttpxSender:
    """Sends token requests with httpx; never follows redirects (the body holds secrets)."""

    def send(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        try:
            with _TokenClient(verify=_tls_context(), timeout=timeout) as client:
                response = client.request(
                    request.method, request.url, content=request.body, headers=request.headers
                )
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        else:
            return _reply(response)
        # Raised outside the `except`, so httpx's exception (which holds the request and its
        # body with the credentials) is not even kept as the context.
        raise _unreachable(request, failure)

    async def asend(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        if _tls_context.cache_info().currsize == 0:
            await asyncio.to_thread(_tls_context)
        try:
            async with _AsyncTokenClient(verify=_tls_context(), timeout=timeout) as client:
                response = await client.request(
                    request.method, request.url, content=request.body, headers=request.headers
                )
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        else:
            return _reply(response)
        raise _unreachable(request, failure)


class HttpxSigning(httpx.Auth):
    """The `httpx.Auth` side of every renewauth auth object."""

    _manager: TokenManager
    _retry_statuses: Collection[int]
    _api_headers: Mapping[str, str]
    _home_origin: str | None

    def _sign_httpx(self, request: httpx.Request, url: httpx.URL, token: Token) -> None:
        request.headers["Authorization"] = token.authorization
        if self._api_headers:
            request.headers.update(self._api_headers)
        if token.api_origin is not None:
            target = routed_url(str(url), self._home_origin, token.api_origin)
            if target is not None:
                request.url = httpx.URL(target)
                request.headers["Host"] = request.url.netloc.decode("ascii")

    def _should_resend(
        self, request: httpx.Request, response: httpx.Response, token: Token
    ) -> bool:
        if not self._manager.grant.can_renew or not should_renew_after(
            response.status_code,
            self._retry_statuses,
            signed_url=str(request.url),
            answered_url=str(response.request.url),
            carried_token=response.request.headers.get("Authorization") == token.authorization,
            already_resent=False,
        ):
            return False
        if not isinstance(request.stream, httpx.ByteStream):
            logger.warning(
                "%s answered %d; not resending: the request body is a stream that cannot be "
                "replayed (pass bytes to send it again after a renewal)",
                origin_of(str(request.url)),
                response.status_code,
            )
            return False
        return True

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        addressed = request.url
        token = self._manager.token_for_request()
        self._sign_httpx(request, addressed, token)
        response = yield request
        if self._should_resend(request, response, token):
            logger.debug("%d from the API; renewing and resending once", response.status_code)
            token = self._manager.renew_rejected(token)
            self._sign_httpx(request, addressed, token)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        addressed = request.url
        token = await self._manager.atoken_for_request()
        self._sign_httpx(request, addressed, token)
        response = yield request
        if self._should_resend(request, response, token):
            logger.debug("%d from the API; renewing and resending once", response.status_code)
            token = await self._manager.arenew_rejected(token)
            self._sign_httpx(request, addressed, token)
            yield request
