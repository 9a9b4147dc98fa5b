"""httpx: signing for `httpx` clients, sync and async.

Signing follows httpx's own `Auth` protocol, and its decisions are written once, in
`_httpx_flow`: a generator that signs the request, yields it, looks at the answer and yields
it once more after a renewal (or for a DPoP nonce). It only decides; what it needs done that
may wait (a token, a renewal after a rejection, the answer) it yields, and one of two thin
drivers does it and leaves the result for the flow to read: `sync_auth_flow` with the
manager's blocking calls, `async_auth_flow` with its coroutines (and the admission gate, see
below). The request body is never read by the auth object (`requires_request_body` stays
False, so uploads stream); a body that is not a `ByteStream` cannot be replayed and is never
resent.

httpx signs a request before it waits for a pooled connection, and under load that wait can
outlast a short token. So the request also carries httpcore's `trace` extension, which
httpcore calls when it holds a connection and is about to write the request headers
(HTTP/1.1 and HTTP/2 alike). There the token is checked once more and, if it is no longer
fresh, replaced in the headers about to be written: the token leaves when the request leaves.
The same hook sees every hop of a redirect and takes renewauth's headers off a hop to another
origin. A transport that is not httpcore's never calls the hook; the token signed stays.

With `httpx.AsyncClient`, the same hook tells how many requests wait in each pool; when the
pool a request goes to is saturated, the request waits before it is signed instead (see
`_admission`), where waiting is cheap and the token it gets is fresher. It never waits there
for another client's pool.

The same flows serve httpx's forks with its API (`HTTPX_FORKS`: httpx2). Such a fork's
clients take only the fork's own `Auth`, and a callable that is not one is wrapped as a
function of the request (which would sign once and never renew). So when a fork is imported,
before or after renewauth, `adopt_fork` adds its `Auth` to `HttpxSigning`'s bases: every
renewauth auth object is then an `Auth` of httpx and of that fork at once, and the flows,
which only use what both libraries' requests offer, run unchanged. The fork is never
imported here: a post-import hook waits for the program to import it.

Token requests are not sent here: `httpx_sender.py` sends them (its names are imported here
too, where the auth objects have always found them).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Generator, Mapping
from types import FrameType, ModuleType
from typing import Any, ClassVar

import httpcore
import httpx
import wrapt

from .._urls import origin_of
from ..dpop import DpopKey
from ..manager import TokenManager
from ..token import Token
from ._admission import QUEUED, Gate, client_pool, pool_gate
from ._signing import (
    STEP_UP_STATUSES,
    is_https_upgrade,
    may_age_in_queue,
    needs_dpop_nonce,
    report_step_up,
    routed_url,
    should_resend,
)
from .httpx_sender import CertOption, HttpxSender, TokenClients, VerifyOption

__all__ = [
    "HTTPX_FORKS",
    "CertOption",
    "HttpxSender",
    "HttpxSigning",
    "TokenClients",
    "VerifyOption",
    "adopt_fork",
]

HTTPX_FORKS = ("httpx2",)  # forks of httpx with its API, whose clients take renewauth objects

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


class _Reply:
    """What a driver of `HttpxSigning._httpx_flow` did for what the flow yielded last: the
    token, the answer or the renewed token, read by the flow when it resumes."""

    __slots__ = ("value",)

    value: Any


def _pool_timeout(request: httpx.Request) -> float | None:
    """How long `request` may wait for a connection (httpx's pool timeout), if it says."""
    timeouts = request.extensions.get("timeout")
    return timeouts.get("pool") if isinstance(timeouts, dict) else None


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
    # The admission gates `_gate` and `_pool_gate` keep on the auth object for this
    # process's event loops and pools: a pickled or copied auth object leaves them behind
    # (`TokenAuth.__reduce__`) and makes its own.
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset({"_gates", "_last_gate", "_pool_gates"})
    # The request bodies a resend can send again: httpx's `ByteStream`, and each adopted
    # fork's (`adopt_fork`).
    _replayable: ClassVar[tuple[type, ...]] = (httpx.ByteStream,)

    # --- the two drivers: the only code that waits, for a token or for the pool ------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        manager = self._manager
        reply = _Reply()
        for need in self._httpx_flow(request, None, reply):
            if need is None or isinstance(need, Token):  # to sign with, or rejected: renew it
                reply.value = (
                    manager.token_for_request() if need is None else manager.renew_rejected(need)
                )
            else:  # the request (of httpx or of a fork of it)
                reply.value = yield need

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        gate: Gate | None = None
        if isinstance(request, httpx.Request):
            # httpcore 1.0's async pool walks its whole queue for every request that starts
            # or ends; httpcore2's stops early, and there the gate cost more than it saved
            # (benchmarks/bench_clients.py): a fork's requests queue in their pool.
            gate = self._gate()
            if not gate.enter_now():
                # Requests queue on this loop: this one waits, before the signing, only if
                # its own pool is saturated.
                gate = self._pool_gate(gate, sys._getframe(1), request.url)
                await gate.enter(_pool_timeout(request))
        reply = _Reply()
        flow = self._httpx_flow(request, gate, reply, asynchronous=True)
        try:
            for need in flow:
                if need is None or isinstance(need, Token):  # to sign with, or rejected: renew it
                    reply.value = (
                        await self._manager.atoken_for_request()
                        if need is None
                        else await self._manager.arenew_rejected(need)
                    )
                else:  # the request (of httpx or of a fork of it)
                    reply.value = yield need
        finally:
            flow.close()  # ended early (an error, a cancellation): it leaves the gate now

    def _gate(self) -> Gate:
        """This object's admission gate on the running event loop (its loop gate)."""
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

    def _pool_gate(self, loop_gate: Gate, driver: FrameType | None, url: httpx.URL) -> Gate:
        """The admission gate, under `loop_gate`, of the pool that the client running this
        flow (from its frame `driver` up) sends `url` through (see `_admission`)."""
        gates: weakref.WeakKeyDictionary[object, Gate] | None = self.__dict__.get("_pool_gates")
        if gates is None:
            gates = self.__dict__.setdefault("_pool_gates", weakref.WeakKeyDictionary())
        return pool_gate(gates, client_pool(driver, url), loop_gate)

    # --- the flow: every decision about one request, written once -------------------------

    def _httpx_flow(
        self,
        request: httpx.Request,
        gate: Gate | None,
        reply: _Reply,
        *,
        asynchronous: bool = False,
    ) -> Generator[httpx.Request | Token | None, None, None]:
        """The signing of `request`, from its first token to its last answer, as a generator
        that only decides: what it yields, a driver does, leaving the result in `reply`.

        It yields `None` for the token to sign with (`token_for_request`), the request to
        send for its answer, and the token the API rejected for the one to resend with
        (`renew_rejected`: a token, or `None` to give the rejection back). `gate` is an
        async client's admission gate (`None` for a sync client or a fork's), left when the
        flow ends: let it end or close it. `asynchronous`: an async client's request, whose
        departure hook must be a coroutine function.

        The driver iterates and does not `send()`: a generator that ends inside `send()`
        raises `StopIteration` to its caller, and catching it cost nearly as much as all
        the rest this flow adds to a request with a cached token (about 2,500 instructions
        under callgrind, on CPython 3.11).
        """
        manager = self._manager
        signed: _Departure | None = None
        try:
            yield None
            token: Token = reply.value
            addressed = request.url
            signed = self._sign_httpx(request, addressed, token, gate, asynchronous)
            yield request
            response: httpx.Response = reply.value
            if gate is not None and signed.stage == QUEUED and gate.seen:
                gate.answered_unseen()
            departure: _Departure = request.extensions[_DEPARTURE]
            token = departure.token  # the token that left
            if (
                self._dpop is not None
                and needs_dpop_nonce(
                    self._dpop, request.url, response.status_code, response.headers
                )
                and isinstance(request.stream, self._replayable)  # it can be sent again
            ):
                logger.debug("the API asked for a DPoP nonce; resending once with it")
                self._sign_httpx(request, addressed, token, gate, asynchronous)
                yield request
                response = reply.value
                departure = request.extensions[_DEPARTURE]
                token = departure.token
            if response.status_code not in self._retry_statuses:
                if manager.unproven is not None and _accepted(response, departure):
                    manager.confirm(token)
                if response.status_code in STEP_UP_STATUSES:
                    self._report_step_up(request, response, token)
                return
            if self._should_resend(request, response, token):
                yield token
                renewed: Token | None = reply.value
                if renewed is not None:
                    logger.debug("%d from the API; renewed, resending once", response.status_code)
                    self._sign_httpx(request, addressed, renewed, gate, asynchronous)
                    rejected_status = response.status_code
                    yield request
                    response = reply.value
                    manager.resent(origin_of(str(request.url)), rejected_status)
                    if response.status_code not in self._retry_statuses and _accepted(
                        response, departure
                    ):
                        manager.confirm(departure.token)
                    if response.status_code in STEP_UP_STATUSES:
                        self._report_step_up(request, response, departure.token)
        finally:
            if gate is not None:
                if signed is None:
                    gate.leave(QUEUED)  # it failed before it was signed
                elif signed.gate is gate:
                    signed.stage = gate.leave(signed.stage)

    def _sign_httpx(
        self,
        request: httpx.Request,
        url: httpx.URL,
        token: Token,
        gate: Gate | None,
        asynchronous: bool,
    ) -> _Departure:
        """Set `token` (and the API headers, the route, a DPoP proof) on `request`, addressed
        to `url`, and watch it leave (see `_watch_departure`)."""
        request.headers["Authorization"] = token.authorization
        if self._api_headers:
            request.headers.update(self._api_headers)
        if token.api_origin is not None:
            target = routed_url(str(url), self._home_origin, token.api_origin)
            if target is not None:
                request.url = type(request.url)(target)  # httpx's URL, or a fork's
                request.headers["Host"] = request.url.netloc.decode("ascii")
        if self._dpop is not None:
            request.headers["DPoP"] = self._dpop.proof(
                request.method, str(request.url), access_token=token.access_token
            )
        return self._watch_departure(request, token, gate, asynchronous)

    def _should_resend(
        self, request: httpx.Request, response: httpx.Response, token: Token
    ) -> bool:
        """For an answer whose status is in `retry_statuses`: renew and resend?"""
        answered = response.request
        return should_resend(
            response.status_code,
            self._retry_statuses,
            can_renew=self._manager.grant.can_renew,
            signed_url=str(request.url),
            answered_url=str(answered.url),
            carried_token=answered.headers.get("Authorization") == token.authorization,
            already_resent=False,
            challenge=response.headers.get("WWW-Authenticate"),
            replayable=isinstance(request.stream, self._replayable),
            log=logger,
            on_event=self._manager.on_event,
        )

    def _report_step_up(
        self, request: httpx.Request, response: httpx.Response, token: Token
    ) -> None:
        """Report an answer that asks for a stronger login (`report_step_up`), whatever
        `retry_statuses` holds; it goes back to the caller as it is."""
        answered = response.request
        report_step_up(
            response.status_code,
            response.headers.get("WWW-Authenticate"),
            signed_url=str(request.url),
            answered_url=str(answered.url),
            carried_token=answered.headers.get("Authorization") == token.authorization,
            on_event=self._manager.on_event,
            log=logger,
        )

    # --- when the request leaves: the hook httpcore calls -----------------------------------

    def _watch_departure(
        self, request: httpx.Request, token: Token, gate: Gate | None, asynchronous: bool
    ) -> _Departure:
        """Put the departure hook on `request` (signed with `token`), or update the one it
        carries when it is sent again; returns its `_Departure`. A request of an async client
        (`asynchronous`; `gate`, its admission gate, if it has one) gets the async hook."""
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
            return departure
        departure = extensions[_DEPARTURE] = _Departure(token, request.url, request.headers, gate)
        if not self._watches(request, token, gate):
            return departure
        ours: Any = self._adepart if asynchronous else self._depart
        trace = extensions.get("trace")
        if trace is None:
            extensions["trace"] = ours
        elif trace != ours:  # the caller's own trace: ours runs first, theirs sees the result
            extensions["trace"] = (_chain_async if asynchronous else _chain_sync)(ours, trace)
        return departure

    def _watches(self, request: httpx.Request, token: Token, gate: Gate | None) -> bool:
        """Whether the departure hook goes on `request`. Always on httpx's requests (an async
        client's gate counts every departure) and wherever the hook must clean a redirect
        elsewhere of headers the clients do not know (an API key, a DPoP proof). On a fork's
        request otherwise only while its token may age in the pool's queue
        (`may_age_in_queue`): httpcore2 calls a trace for a dozen events of every request,
        which cost 4 % of a cached-token request's instructions over a real connection."""
        if gate is not None or isinstance(request, httpx.Request):
            return True
        if self._api_headers or self._dpop is not None:
            return True
        return may_age_in_queue(self._manager, token)

    # On HTTP/2 the stream id is taken before this event and claimed only once the headers
    # go: a request waiting here would let another take the same id. So it never waits.

    def _depart(self, event: str, info: Mapping[str, Any]) -> None:
        if event in _HEADER_EVENTS:
            hop = info["request"]
            departure = self._departing(hop)
            if departure is not None:
                may_wait = event != _H2_HEADERS
                token = self._manager.token_at_departure(departure.token, may_wait=may_wait)
                if token is not departure.token:
                    self._leave_with(hop, departure, token)

    async def _adepart(self, event: str, info: Mapping[str, Any]) -> None:
        if event in _HEADER_EVENTS:
            hop = info["request"]
            departure = self._departing(hop, admitted=True)
            if departure is not None:
                may_wait = event != _H2_HEADERS
                token = await self._manager.atoken_at_departure(departure.token, may_wait=may_wait)
                if token is not departure.token:
                    self._leave_with(hop, departure, token)

    def _departing(self, hop: Any, *, admitted: bool = False) -> _Departure | None:
        """The `_Departure` of httpcore's request `hop`, whose headers go now, when renewauth
        signed it and may change its token; else `None`. A hop to another origin is cleaned
        here. `admitted`: the request came through an admission gate, which it leaves now."""
        departure = hop.extensions.get(_DEPARTURE)
        if not isinstance(departure, _Departure):
            return None
        if admitted and departure.gate is not None and departure.stage == QUEUED:
            departure.stage = departure.gate.depart(QUEUED)  # out of the pool's queue
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
        return departure

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


def adopt_fork(module: ModuleType) -> None:
    """Make every renewauth auth object an `Auth` of the httpx fork `module` (httpx2), whose
    clients accept no other: its `Auth` joins `HttpxSigning`'s bases, its `ByteStream` the
    replayable bodies. Once per fork; a module without httpx's `Auth` and `ByteStream`, or
    whose `Auth` cannot be a base, is left alone with a WARNING (its clients would wrap the
    object as a function and fail), never an error in the program's import."""
    base, stream = getattr(module, "Auth", None), getattr(module, "ByteStream", None)
    if not isinstance(base, type) or not isinstance(stream, type):
        logger.warning(
            "%s has no Auth or ByteStream class as httpx has: renewauth objects cannot be its "
            "clients' auth",
            module.__name__,
        )
        return
    with _ADOPTING:
        if not issubclass(HttpxSigning, base):
            try:
                HttpxSigning.__bases__ = (*HttpxSigning.__bases__, base)
            except TypeError as exc:  # a layout Python cannot combine with httpx's Auth
                logger.warning(
                    "%s.Auth cannot be a base of renewauth's auth objects (%s): pass them to "
                    "httpx clients instead",
                    module.__name__,
                    exc,
                )
                return
        if stream not in HttpxSigning._replayable:
            HttpxSigning._replayable = (*HttpxSigning._replayable, stream)
    logger.debug("renewauth auth objects are %s.Auth objects too", module.__name__)


def adopt_imported_forks() -> None:
    """Adopt each fork the program has imported already (a cheap look at `sys.modules`): a
    fork imported again under the same name, as tests do, is a new module the hook has not
    seen."""
    for name in HTTPX_FORKS:
        module = sys.modules.get(name)
        if module is not None and not issubclass(HttpxSigning, getattr(module, "Auth", object)):
            adopt_fork(module)


_ADOPTING = threading.Lock()
for _name in HTTPX_FORKS:  # now if imported already, else when the program imports it
    wrapt.register_post_import_hook(adopt_fork, _name)
