"""The token sender: how renewauth's own token requests go out, over httpx.

Token requests go through a short-lived `httpx.Client` or `httpx.AsyncClient` per renewal
(renewals are rare; a client per call is safe across threads, event loops and `fork`). The
TLS context is built once per setting and shared; in an event loop it is built in a worker
thread, since loading the CA bundle blocks for tens of milliseconds.

A token call that gets no answer raises `TokenEndpointUnavailable` whose message names the
fix, caused by a clean copy of the low-level error: never httpx's exception, which holds the
request and its body with the credentials. Nothing here signs an API request (that is
`httpx.py` and `requests.py`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import urllib.request
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx

from .._urls import is_loopback_host, origin_of
from ..errors import ConfigurationError, InsecureTransportError, TokenEndpointUnavailable
from ..flows import TokenRequest
from ..manager import HttpReply

__all__ = ["CertOption", "HttpxSender", "TokenClients", "VerifyOption"]


VerifyOption = bool | str | os.PathLike[str] | ssl.SSLContext
"""`verify=`: True (the environment's CA bundle, else certifi), a CA file or directory, an
`ssl.SSLContext` used as it is, or False (refused unless the token endpoint is loopback)."""
CertOption = str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]]
"""`cert=`: a PEM file holding the client certificate and its key, or `(certfile, keyfile)`."""

# The variables that name a CA bundle, in the order they are honoured: httpx's and OpenSSL's
# first, then requests' (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), so a requests user's bundle is
# the token call's too.
_CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _ca_environment() -> tuple[str, ...]:
    return tuple(os.environ.get(name, "") for name in _CA_VARIABLES)


def _load_ca(where: str, what: str) -> ssl.SSLContext:
    try:
        if os.path.isdir(where):
            return ssl.create_default_context(capath=where)
        return ssl.create_default_context(cafile=where)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{what} names {where!r}, which is not a readable PEM CA bundle or directory "
            f"({type(exc).__name__}); fix the path"
        ) from None


def _build_context(verify: bool | str, cert: tuple[str, str | None] | None) -> ssl.SSLContext:
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        context = _load_ca(verify, "verify=")
    else:
        for name in _CA_VARIABLES:
            where = os.environ.get(name)
            if where:
                context = _load_ca(where, f"the environment variable {name}")
                break
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    if cert is not None:
        try:
            context.load_cert_chain(cert[0], cert[1])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cert= could not be loaded ({type(exc).__name__}); pass a PEM file holding "
                "the client certificate and its unencrypted key, or (certfile, keyfile)"
            ) from None
    return context


def _tls_context(
    verify: bool | str = True, cert: tuple[str, str | None] | None = None
) -> ssl.SSLContext:
    """The TLS context for token calls, built once per setting and CA environment."""
    key = (verify, cert, _ca_environment() if verify is True else ())
    context = _contexts.get(key)
    if context is None:
        context = _build_context(verify, cert)
        with _contexts_lock:
            context = _contexts.setdefault(key, context)
    return context


def _is_built(verify: bool | str, cert: tuple[str, str | None] | None) -> bool:
    return (verify, cert, _ca_environment() if verify is True else ()) in _contexts


def _arguments(request: TokenRequest) -> dict[str, Any]:
    """`request` as the arguments of `httpx.Client.request` (and of the async client's)."""
    return {
        "method": request.method,
        "url": request.url,
        "content": request.body,
        "headers": request.headers,
    }


def _reply(response: httpx.Response) -> HttpReply:
    headers = MappingProxyType({name.lower(): value for name, value in response.headers.items()})
    return HttpReply(response.status_code, headers, response.content)


def _low_level_error(exc: BaseException) -> OSError | None:
    """The innermost `OSError` under httpx's exception (`socket.gaierror`,
    `ConnectionRefusedError`, an `ssl.SSLError`, `TimeoutError`, ...), found along each
    `__cause__`, else `__context__`; anyio's group of failed connection attempts is entered
    at its first `OSError`."""
    found: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        if isinstance(current, BaseExceptionGroup):
            current = next((one for one in current.exceptions if isinstance(one, OSError)), None)
        else:  # the context even when suppressed: httpcore's pool re-raises `from None`
            current = current.__cause__ or current.__context__
    return found


def _clean_copy(error: OSError) -> OSError | None:
    """A new exception of `error`'s type, errno and text (and, for a TLS failure, OpenSSL's
    reason): no traceback, no chain, nothing that leads back to the request httpx was sending
    and its body, which hold the credentials. `None` if the type cannot be built so."""
    args: tuple[object, ...]
    if error.errno is not None and isinstance(error.strerror, str):
        args = (error.errno, error.strerror)
    elif all(isinstance(arg, str | int) for arg in error.args):
        args = error.args
    else:
        args = ()
    try:
        copy = type(error)(*args)
    except Exception:  # a type with another constructor: no cause rather than a wrong one
        return None
    for name in ("library", "reason", "verify_code", "verify_message"):  # ssl.SSLError's
        value = getattr(error, name, None)
        if isinstance(value, str | int):
            setattr(copy, name, value)
    return copy


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate
# is trusted but names another host, which no CA bundle fixes.
_NAME_MISMATCH = frozenset({62, 64})


def _unreachable(
    request: TokenRequest, exc: httpx.HTTPError, *, timeout: float, proxy: str | None
) -> tuple[TokenEndpointUnavailable, OSError | None]:
    """The error to raise for a token call that got no answer, and its cause: a clean copy
    of the low-level error, never httpx's exception (it holds the request and its body)."""
    low = _low_level_error(exc)
    if proxy is None:
        where, peer = f"token endpoint {request.origin}", request.url
        hint = "check the network and token_url=, or raise timeout= if it is slow"
    else:  # the name resolved and the port connected to are the proxy's
        where, peer = f"token endpoint {request.origin} through the proxy {origin_of(proxy)}", proxy
        hint = (
            "check the proxy (proxy=, HTTPS_PROXY), the network and token_url=, or raise "
            "timeout= if it is slow"
        )
    if isinstance(exc, httpx.TimeoutException):
        message = (
            f"{where} did not answer within {timeout:g} s; raise timeout= if it is slow, "
            "or check the network and token_url="
        )
    elif isinstance(low, socket.gaierror):
        host = urlsplit(peer).hostname
        message = f"{where} could not be reached: could not resolve {host} ({low.strerror}); {hint}"
    elif isinstance(low, ConnectionRefusedError):
        message = f"{where} could not be reached: connection refused by {origin_of(peer)}; {hint}"
    elif isinstance(low, ConnectionResetError):
        message = f"{where} could not be reached: connection reset by {origin_of(peer)}; {hint}"
    elif isinstance(low, ssl.SSLCertVerificationError):
        if low.verify_code in _NAME_MISMATCH:
            fix = "check the host in token_url= against the names in the server's certificate"
        else:
            fix = (
                "pass verify= the CA bundle that signed the server's certificate, or name it "
                "in SSL_CERT_FILE"
            )
        reason = low.verify_message or low.strerror
        message = f"{where} could not be reached: certificate not trusted ({reason}); {fix}"
    else:
        message = f"{where} could not be reached ({type(exc).__name__}); {hint}"
    error = TokenEndpointUnavailable(message, origin=request.origin)
    return error, None if low is None else _clean_copy(low)


class _TokenClient(httpx.Client):
    """The client of token requests: its own class, so that `renewauth.patch()` (which wraps
    `httpx.Client.send`) can tell renewauth's token calls from the program's."""


class _AsyncTokenClient(httpx.AsyncClient):
    """The asyncio twin of `_TokenClient`."""


TokenClients = (_TokenClient, _AsyncTokenClient)


class HttpxSender:
    """Sends token requests with httpx; never follows redirects (the body holds secrets).

    The route and the trust store are the documented ones, never silently others: `proxy=`
    when given, else `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY` as httpx and
    requests read them; `verify=` when given, else the first of `SSL_CERT_FILE`,
    `SSL_CERT_DIR`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` that is set, else certifi's bundle.

    Args:
        verify: see `VerifyOption`; `False` is refused for any host but loopback.
        cert: the client certificate for mutual TLS (RFC 8705), see `CertOption`.
        proxy: a proxy URL (`http://proxy.corp:3128`) for every token call.
    """

    def __init__(
        self,
        *,
        verify: VerifyOption = True,
        cert: CertOption | None = None,
        proxy: str | None = None,
    ) -> None:
        self._context: ssl.SSLContext | None = None
        if isinstance(verify, ssl.SSLContext):
            if cert is not None:
                raise ConfigurationError(
                    "pass cert= or verify=ssl.SSLContext(...), not both: load the client "
                    "certificate into your context with load_cert_chain()"
                )
            self._context = verify
            self._verify: bool | str = True
        elif isinstance(verify, bool):
            self._verify = verify
        elif isinstance(verify, str | os.PathLike):
            self._verify = os.fspath(verify)
        else:
            raise ConfigurationError(
                "verify= must be True, a CA bundle path, an ssl.SSLContext, or False "
                f"(loopback only), got {type(verify).__name__}"
            )
        self._cert = _cert_files(cert)
        if proxy is not None and (
            not isinstance(proxy, str)
            or urlsplit(proxy).scheme not in ("http", "https", "socks5", "socks5h")
            or not urlsplit(proxy).hostname
        ):
            raise ConfigurationError(
                "proxy= must be a proxy URL such as 'http://proxy.example.com:3128'"
            )
        self._proxy = proxy

    def __reduce__(self) -> tuple[object, ...]:
        if self._context is not None:
            raise ConfigurationError(
                "an auth object with verify=ssl.SSLContext(...) cannot be pickled; pass "
                "verify= the CA bundle's path instead"
            )
        return _sender, (self._verify, self._cert, self._proxy)

    @property
    def verifies(self) -> bool:
        """False when certificate checks are off (`verify=False`, loopback only)."""
        return self._verify is not False

    def _check(self, request: TokenRequest) -> None:
        if self._verify is False and not is_loopback_host(urlsplit(request.url).hostname or ""):
            raise InsecureTransportError(
                f"verify=False is refused for {request.origin}: certificate checks may only "
                "be turned off for a loopback server; pass verify= the CA bundle instead"
            )

    def _tls(self) -> ssl.SSLContext:
        return self._context or _tls_context(self._verify, self._cert)

    def _client_options(self, timeout: float) -> dict[str, Any]:
        return {"verify": self._tls(), "timeout": timeout, "proxy": self._proxy, "trust_env": True}

    def _proxy_for(self, url: str) -> str | None:
        """The proxy a token call to `url` goes through, read as httpx reads it: `proxy=`,
        else the environment's for the URL's scheme (or ALL_PROXY) unless NO_PROXY names
        the host. Only error messages use it."""
        if self._proxy is not None:
            return self._proxy
        proxies = urllib.request.getproxies()
        parts = urlsplit(url)
        proxy = proxies.get(parts.scheme) or proxies.get("all")
        if not proxy or bool(urllib.request.proxy_bypass(parts.netloc)):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    def _failure(
        self, request: TokenRequest, exc: httpx.HTTPError, timeout: float
    ) -> tuple[TokenEndpointUnavailable, OSError | None]:
        """What a token call that got no answer raises, and its cause (see `_unreachable`)."""
        return _unreachable(request, exc, timeout=timeout, proxy=self._proxy_for(request.url))

    def send(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        self._check(request)
        try:
            with _TokenClient(**self._client_options(timeout)) as client:
                return _reply(client.request(**_arguments(request)))
        except httpx.HTTPError as exc:
            failure, cause = self._failure(request, exc, timeout)
        # Raised outside the `except`, so httpx's exception (which holds the request and its
        # body with the credentials) is not even kept as the context: the cause is a copy.
        raise failure from cause

    async def asend(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        self._check(request)
        if self._context is None and not _is_built(self._verify, self._cert):
            await asyncio.to_thread(_tls_context, self._verify, self._cert)
        try:
            async with _AsyncTokenClient(**self._client_options(timeout)) as client:
                return _reply(await client.request(**_arguments(request)))
        except httpx.HTTPError as exc:
            failure, cause = self._failure(request, exc, timeout)
        raise failure from cause


def _sender(
    verify: bool | str, cert: tuple[str, str | None] | None, proxy: str | None
) -> HttpxSender:
    files: CertOption | None = None
    if cert is not None:
        files = cert[0] if cert[1] is None else (cert[0], cert[1])
    return HttpxSender(verify=verify, cert=files, proxy=proxy)


def _cert_files(cert: CertOption | None) -> tuple[str, str | None] | None:
    if cert is None:
        return None
    if isinstance(cert, str | os.PathLike):
        return os.fspath(cert), None
    if (
        isinstance(cert, tuple)
        and len(cert) == 2
        and all(isinstance(part, str | os.PathLike) for part in cert)
    ):
        return os.fspath(cert[0]), os.fspath(cert[1])
    raise ConfigurationError(
        "cert= must be a PEM file with the certificate and its key, or (certfile, keyfile)"
    )
