"""httpx: the token sender used by every auth object, and signing for `httpx` clients.

Token requests go through a short-lived `httpx.Client` or `httpx.AsyncClient` per renewal
(renewals are rare; a client per call is safe across threads, event loops and `fork`). The
TLS context is built once and shared; in an event loop it is built in a worker thread, since
loading the CA bundle blocks for tens of milliseconds.

Signing follows httpx's own `Auth` protocol: `sync_auth_flow` and `async_auth_flow` set the
header, look at the answer, and yield the request once more after a renewal. The request body
is never read by the auth object (`requires_request_body` stays False, so uploads stream);
a body that is not a `ByteStream` cannot be replayed and is never resent.

httpx signs a request before it waits for a pooled connection, and under load that wait can
outlast a short token. So the request also carries httpcore's `trace` extension, which
httpcore calls when it holds a connection and is about to write the request headers
(HTTP/1.1 and HTTP/2 alike). There the token is checked once more and, if it is no longer
fresh, replaced in the headers about to be written: the token leaves when the request leaves.
The same hook sees every hop of a redirect and takes renewauth's headers off a hop to another
origin. A transport that is not httpcore's never calls the hook; the token signed stays.

With `httpx.AsyncClient`, the same hook tells how many requests wait in the pool; when the
pool is saturated, a request waits before it is signed instead (see `_admission`), where
waiting is cheap and the token it gets is fresher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Generator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx

from .._urls import is_loopback_host, origin_of
from ..dpop import DpopKey
from ..errors import ConfigurationError, InsecureTransportError, TokenEndpointUnavailable
from ..flows import TokenRequest
from ..manager import HttpReply, TokenManager
from ..token import Token
from ._admission import QUEUED, Gate
from ._signing import is_https_upgrade, is_nonce_challenge, routed_url, should_renew_after

__all__ = ["CertOption", "HttpxSender", "HttpxSigning", "TokenClients", "VerifyOption"]

logger = logging.getLogger(__name__)


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
        return {"timeout": timeout, "proxy": self._proxy, "trust_env": True}

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

    def send(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        self._check(request)
        try:
            with _TokenClient(verify=self._tls(), **self._client_options(timeout)) as client:
                response = client.request(
                    request.method, request.url, content=request.body, headers=request.headers
                )
        except httpx.HTTPError as exc:
            proxy = self._proxy_for(request.url)
            failure, cause = _unreachable(request, exc, timeout=timeout, proxy=proxy)
        else:
            return _reply(response)
        # Raised outside the `except`, so httpx's exception (which holds the request and its
        # body with the credentials) is not even kept as the context: the cause is a copy.
        raise failure from cause

    async def asend(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        self._check(request)
        if self._context is None and not _is_built(self._verify, self._cert):
            await asyncio.to_thread(_tls_context, self._verify, self._cert)
        try:
            async with _AsyncTokenClient(
                verify=self._tls(), **self._client_options(timeout)
            ) as client:
                response = await client.request(
                    request.method, request.url, content=request.body, headers=request.headers
                )
        except httpx.HTTPError as exc:
            proxy = self._proxy_for(request.url)
            failure, cause = _unreachable(request, exc, timeout=timeout, proxy=proxy)
        else:
            return _reply(response)
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


_DEPARTURE = "renewauth.departure"  # the request extension that holds a `_Departure`
_H2_HEADERS = "http2.send_request_headers.started"
_HEADER_EVENTS = frozenset({"http11.send_request_headers.started", _H2_HEADERS})

Trace = Callable[[str, Mapping[str, Any]], None]
AsyncTrace = Callable[[str, Mapping[str, Any]], Awaitable[None]]


class _Departure:
    """What a signed request carries until it leaves: the token in its `Authorization`
    header (replaced when it leaves, if it must), the URL it was signed for and its headers.

    It holds no reference to the request itself: the request holds it (in its extensions),
    and a cycle would leave every request to the garbage collector. With an async client it
    also holds the request's admission `gate` and its `stage` there.
    """

    __slots__ = ("gate", "headers", "stage", "token", "url")

    def __init__(
        self, token: Token, url: httpx.URL, headers: httpx.Headers, gate: Gate | None
    ) -> None:
        self.token = token
        self.url = url
        self.headers = headers
        self.gate = gate
        self.stage = QUEUED


def _chain_sync(first: Trace, then: Trace) -> Trace:
    def trace(event: str, info: Mapping[str, Any]) -> None:
        first(event, info)
        then(event, info)

    return trace


def _chain_async(first: AsyncTrace, then: AsyncTrace) -> AsyncTrace:
    async def trace(event: str, info: Mapping[str, Any]) -> None:
        await first(event, info)
        await then(event, info)

    return trace


def _goes_elsewhere(hop: Any, signed: httpx.URL) -> bool | None:
    """Whether httpcore's request `hop` goes to another origin than `signed` was signed for;
    `None` when that cannot be told: a proxy's CONNECT (no headers of ours), or a target
    httpcore wrote in a form it cannot parse back (an IPv6 host through a proxy)."""
    url = hop.url
    target = url.target
    if not target.startswith(b"/"):
        if b"://" not in target:
            return None  # CONNECT host:port, through a proxy
        try:
            url = httpcore.URL(target)  # a forwarding proxy: the request names its origin
        except ValueError:
            return None
    if url.host != signed.raw_host:
        return True
    if url.scheme == signed.raw_scheme:
        return bool(url.port != signed.port)
    # http -> https on the same host and default ports: requests and httpx both keep the
    # token on that upgrade, and so does renewauth (it already went there in clear text).
    return not is_https_upgrade(signed.raw_scheme, signed.port, url.scheme, url.port)


def _accepted(response: httpx.Response, departure: _Departure) -> bool:
    """Whether the API the token went to took it: the answer is no server error, and came
    from that origin (not from the target of a redirect elsewhere)."""
    answered, signed = response.request.url, departure.url
    same_origin = (answered.raw_scheme, answered.raw_host, answered.port) == (
        signed.raw_scheme,
        signed.raw_host,
        signed.port,
    )
    return response.status_code < 500 and same_origin


class HttpxSigning(httpx.Auth):
    """The `httpx.Auth` side of every renewauth auth object."""

    _manager: TokenManager
    _retry_statuses: Collection[int]
    _api_headers: Mapping[str, str]
    _home_origin: str | None
    _dpop: DpopKey | None = None
    # What `_gate` keeps on the auth object for this process's event loops: a pickled or
    # copied auth object leaves it behind (`TokenAuth.__reduce__`) and makes its own.
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset({"_gates", "_last_gate"})

    def _sign_httpx(self, request: httpx.Request, url: httpx.URL, token: Token) -> None:
        request.headers["Authorization"] = token.authorization
        if self._api_headers:
            request.headers.update(self._api_headers)
        if token.api_origin is not None:
            target = routed_url(str(url), self._home_origin, token.api_origin)
            if target is not None:
                request.url = httpx.URL(target)
                request.headers["Host"] = request.url.netloc.decode("ascii")
        if self._dpop is not None:
            request.headers["DPoP"] = self._dpop.proof(
                request.method, str(request.url), access_token=token.access_token
            )

    def _needs_nonce_httpx(self, request: httpx.Request, response: httpx.Response) -> bool:
        """DPoP: keep the nonce the API sent; True when it asks for the proof again with
        it (the token itself is fine) and the body can be sent again."""
        dpop = self._dpop
        nonce = response.headers.get("DPoP-Nonce")
        if dpop is None or not nonce:
            return False
        dpop.remember_nonce(str(request.url), nonce)
        return is_nonce_challenge(
            response.status_code, response.headers.get("WWW-Authenticate")
        ) and isinstance(request.stream, httpx.ByteStream)

    def _watch_departure(
        self, request: httpx.Request, token: Token, *, is_async: bool, gate: Gate | None = None
    ) -> None:
        extensions = request.extensions
        departure = extensions.get(_DEPARTURE)
        if isinstance(departure, _Departure) and departure.headers is request.headers:
            # The resend of a request already watched (the renewal may have routed it anew).
            departure.token, departure.url = token, request.url
            if gate is not None:
                if departure.gate is gate:
                    departure.stage = gate.again(departure.stage)
                else:
                    departure.gate, departure.stage = gate, QUEUED
            return
        extensions[_DEPARTURE] = _Departure(token, request.url, request.headers, gate)
        ours: Any = self._adepart if is_async else self._depart
        trace = extensions.get("trace")
        if trace is None:
            extensions["trace"] = ours
        elif trace != ours:  # the caller's own trace: ours runs first, theirs sees the result
            extensions["trace"] = (_chain_async if is_async else _chain_sync)(ours, trace)

    # --- when the request leaves: the hook httpcore calls -----------------------------------

    def _departing(self, event: str, info: Mapping[str, Any]) -> tuple[Any, _Departure] | None:
        """The httpcore request and its `_Departure` when this event is "headers go now" for
        a request renewauth signed, else `None`; a hop to another origin is cleaned here."""
        if event not in _HEADER_EVENTS:
            return None
        hop = info["request"]
        departure = hop.extensions.get(_DEPARTURE)
        if not isinstance(departure, _Departure):
            return None
        elsewhere = _goes_elsewhere(hop, departure.url)
        if elsewhere is None:
            return None
        if elsewhere:
            # A redirect to another origin: httpx took the Authorization header off (unless
            # it only upgraded to https); the API key and any token go too.
            dropped = {b"authorization", *(name.lower().encode() for name in self._api_headers)}
            if self._dpop is not None:
                dropped.add(b"dpop")
            hop.headers[:] = [(k, v) for k, v in hop.headers if k.lower() not in dropped]
            return None
        return hop, departure

    def _leave_with(self, hop: Any, departure: _Departure, token: Token) -> None:
        """Put `token` in the headers about to be written, in place of the one signed."""
        signed = departure.token.authorization.encode()
        for index, (name, value) in enumerate(hop.headers):
            if value == signed and name.lower() == b"authorization":
                hop.headers[index] = (name, token.authorization.encode())
                departure.token = token
                departure.headers["Authorization"] = token.authorization
                logger.debug("token replaced as the request left: it aged while queued")
                if self._dpop is not None:  # the proof's `ath` names the token: make it anew
                    proof = self._dpop.proof(
                        hop.method.decode("ascii"),
                        str(departure.url),
                        access_token=token.access_token,
                    )
                    hop.headers[:] = [
                        (k, proof.encode() if k.lower() == b"dpop" else v) for k, v in hop.headers
                    ]
                    departure.headers["DPoP"] = proof
                return

    # On HTTP/2 the stream id is taken before this event and claimed only once the headers
    # go: a request waiting here would let another take the same id. So it never waits.

    def _depart(self, event: str, info: Mapping[str, Any]) -> None:
        departing = self._departing(event, info)
        if departing is not None:
            hop, departure = departing
            may_wait = event != _H2_HEADERS
            token = self._manager.token_at_departure(departure.token, may_wait=may_wait)
            if token is not departure.token:
                self._leave_with(hop, departure, token)

    async def _adepart(self, event: str, info: Mapping[str, Any]) -> None:
        if event in _HEADER_EVENTS:
            ours = info["request"].extensions.get(_DEPARTURE)
            if isinstance(ours, _Departure) and ours.gate is not None and ours.stage == QUEUED:
                ours.stage = ours.gate.depart(QUEUED)  # out of the pool's queue
        departing = self._departing(event, info)
        if departing is not None:
            hop, departure = departing
            may_wait = event != _H2_HEADERS
            token = await self._manager.atoken_at_departure(departure.token, may_wait=may_wait)
            if token is not departure.token:
                self._leave_with(hop, departure, token)

    # --- the answer -----------------------------------------------------------------------

    def _should_resend(
        self, request: httpx.Request, response: httpx.Response, token: Token
    ) -> bool:
        """For an answer whose status is in `retry_statuses`: renew and resend?"""
        answered = response.request
        if not self._manager.grant.can_renew or not should_renew_after(
            response.status_code,
            self._retry_statuses,
            signed_url=str(request.url),
            answered_url=str(answered.url),
            carried_token=answered.headers.get("Authorization") == token.authorization,
            already_resent=False,
            challenge=response.headers.get("WWW-Authenticate"),
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
        manager = self._manager
        token = manager.token_for_request()
        self._sign_httpx(request, addressed, token)
        self._watch_departure(request, token, is_async=False)
        response = yield request
        departure = request.extensions[_DEPARTURE]
        token = departure.token  # the token that left
        if self._dpop is not None and self._needs_nonce_httpx(request, response):
            logger.debug("the API asked for a DPoP nonce; resending once with it")
            self._sign_httpx(request, addressed, token)
            self._watch_departure(request, token, is_async=False)
            response = yield request
            departure = request.extensions[_DEPARTURE]
            token = departure.token
        if response.status_code not in self._retry_statuses:
            if manager.unproven is not None and _accepted(response, departure):
                manager.confirm(token)
            return
        if self._should_resend(request, response, token):
            renewed = manager.renew_rejected(token)
            if renewed is not None:
                logger.debug("%d from the API; renewed, resending once", response.status_code)
                self._sign_httpx(request, addressed, renewed)
                self._watch_departure(request, renewed, is_async=False)
                rejected_status = response.status_code
                response = yield request
                manager.resent(origin_of(str(request.url)), rejected_status)
                if response.status_code not in self._retry_statuses and _accepted(
                    response, departure
                ):
                    manager.confirm(departure.token)

    def _gate(self) -> Gate:
        """This object's admission gate on the running event loop."""
        loop = asyncio.get_running_loop()
        last = self.__dict__.get("_last_gate")
        if last is not None and last[0]() is loop:
            return last[1]  # type: ignore[no-any-return]
        gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = (
            self.__dict__.setdefault("_gates", weakref.WeakKeyDictionary())
        )
        gate = gates.get(loop)
        if gate is None:
            gate = gates.setdefault(loop, Gate())
        self.__dict__["_last_gate"] = (weakref.ref(loop), gate)
        return gate

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        gate = self._gate()
        if not gate.enter_now():
            timeouts = request.extensions.get("timeout")
            await gate.enter(timeouts.get("pool") if isinstance(timeouts, dict) else None)
        signed: _Departure | None = None
        try:
            addressed = request.url
            manager = self._manager
            token = await manager.atoken_for_request()
            self._sign_httpx(request, addressed, token)
            self._watch_departure(request, token, is_async=True, gate=gate)
            signed = request.extensions[_DEPARTURE]
            response = yield request
            if signed.stage == QUEUED and gate.seen:
                gate.answered_unseen()
            departure = request.extensions[_DEPARTURE]
            token = departure.token  # the token that left
            if self._dpop is not None and self._needs_nonce_httpx(request, response):
                logger.debug("the API asked for a DPoP nonce; resending once with it")
                self._sign_httpx(request, addressed, token)
                self._watch_departure(request, token, is_async=True, gate=gate)
                response = yield request
                departure = request.extensions[_DEPARTURE]
                token = departure.token
            if response.status_code not in self._retry_statuses:
                if manager.unproven is not None and _accepted(response, departure):
                    manager.confirm(token)
                return
            if self._should_resend(request, response, token):
                renewed = await manager.arenew_rejected(token)
                if renewed is not None:
                    logger.debug("%d from the API; renewed, resending once", response.status_code)
                    self._sign_httpx(request, addressed, renewed)
                    self._watch_departure(request, renewed, is_async=True, gate=gate)
                    rejected_status = response.status_code
                    response = yield request
                    manager.resent(origin_of(str(request.url)), rejected_status)
                    if response.status_code not in self._retry_statuses and _accepted(
                        response, departure
                    ):
                        manager.confirm(departure.token)
        finally:
            if signed is None:
                gate.leave(QUEUED)  # it failed before it was signed
            elif signed.gate is gate:
                signed.stage = gate.leave(signed.stage)
