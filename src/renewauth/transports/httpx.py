"""httpx: signing for `httpx` clients, sync and async.

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

Token requests are not sent here: `httpx_sender.py` sends them (its names are imported here
too, where the auth objects have always found them).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Generator, Mapping
from typing import Any, ClassVar

import httpcore
import httpx

from .._urls import origin_of
from ..dpop import DpopKey
from ..manager import TokenManager
from ..token import Token
from ._admission import QUEUED, Gate
from ._signing import is_https_upgrade, is_nonce_challenge, routed_url, should_renew_after
from .httpx_sender import CertOption, HttpxSender, TokenClients, VerifyOption

__all__ = ["CertOption", "HttpxSender", "HttpxSigning", "TokenClients", "VerifyOption"]

logger = logging.getLogger(__name__)

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
