"""aiohttp: signing as a client middleware (aiohttp >= 3.12), `ClientSession(middlewares=(auth,))`.

aiohttp runs a client middleware once per hop: for the request the caller made and again,
with a new `ClientRequest`, for each redirect it follows, around the handler that waits for
a connection and sends. So `_middleware` signs each hop itself (a token from the manager,
the API headers, the route to a server-assigned origin, a DPoP proof), sends it through the
handler, and decides after the answer as the other transports do (`_signing.py`): a DPoP
nonce asked for, or a rejected token renewed (only if it is still the current one) and the
same request sent once more, as aiohttp's own digest middleware does, unless its body
cannot be sent again (a stream, an async iterable). It waits only on the manager's
coroutines: the event loop never blocks.

**Redirects.** aiohttp takes `Authorization` off the caller's headers on a redirect to
another origin, but a middleware that signs every hop would put it back. So when an answer
redirects, the middleware keeps a `_Chain` in a context variable (every hop of one call runs
in the caller's task) for the hops that follow: one whose origin is neither the one the
caller addressed nor the one the token went to (nor the http -> https upgrade of that host,
as requests and httpx allow) gets nothing of renewauth's, and its 401 renews nothing. A
chain knows its call by the one list aiohttp hands every hop of a call (`_traces`, private:
read with a fallback), so a later call in the same task, addressed to that other origin
itself, is signed. Were that list gone, the next hop in the task to the origin a redirect
named would be taken for the redirect's and sent unsigned: a 401 at worst, never a leak.

**Departure.** A request is signed before it waits for a connector slot, and under load the
wait can outlast a short token. aiohttp offers a middleware no hook where the connection is
held (`TraceConfig` signals belong to the session), but it calls `req.send(conn)` there, an
attribute looked up on the request: a `_Departure` put there asks the manager once more
(`atoken_at_departure`) and swaps the token, and the DPoP proof naming it, if the one signed
has aged. Setting and removing that attribute, which a `ClientRequest` does not have,
costs about 5,000 instructions (callgrind, CPython 3.11): as much as all the rest this
middleware adds to a request with a cached token. So only a request whose token may be due
for renewal within `_signing.QUEUED_AT_MOST` seconds is watched: every one, with a short
token. One that waits longer for a connection and leaves with an expired token takes the 401
path.

aiohttp is never imported here (but to tell a streamed body, after a 401): the middleware
uses what the request and the handler it is given offer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

from .._urls import origin_of
from ..dpop import DpopKey
from ..errors import ConfigurationError
from ..manager import TokenManager
from ..token import Token
from ._signing import (
    QUEUED_AT_MOST,
    STEP_UP_STATUSES,
    is_https_upgrade,
    may_age_in_queue,
    needs_dpop_nonce,
    report_step_up,
    routed_url,
    should_resend,
)

__all__ = ["RESENDING", "AiohttpSigning"]

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]
Origin = tuple[str, str | None, int | None]  # scheme, host, port (yarl fills default ports)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})  # those aiohttp follows
_KEPT = 4  # chains a task keeps at most (one per call it is in; more only if a call is nested)


def _origin(url: Any) -> Origin:
    return (url.scheme, url.host, url.port)


def _call_of(request: Any) -> object | None:
    """The object aiohttp shares among the hops of one `ClientSession` call, or `None`."""
    call = getattr(request, "_traces", None)
    return call if type(call) is list else None


class _Chain:
    """A redirect answer this middleware saw, kept for the hops aiohttp sends after it in the
    same call: where the caller sent the request (`addressed`), where the token went
    (`signed`, after routing), and where the last redirect points (`target`, `None` if that
    cannot be parsed). `call` is the call's own object (`_call_of`); `None` when unknown."""

    __slots__ = ("addressed", "call", "signed", "target")

    def __init__(
        self, call: object | None, addressed: Origin, signed: Origin, target: Origin | None
    ) -> None:
        self.call, self.addressed, self.signed, self.target = call, addressed, signed, target

    def follows(self, call: object | None, hop: Origin) -> bool:
        """Whether the hop to `hop` of the call `call` is one this chain redirected to."""
        if call is not None and self.call is not None:
            return call is self.call
        return self.target is None or self.target == hop  # unknown: to where it pointed

    def admits(self, hop: Origin) -> bool:
        """Whether renewauth's headers may go to `hop` on this call."""
        addressed = self.addressed
        if hop in (addressed, self.signed):
            return True
        return hop[1] == addressed[1] and is_https_upgrade(
            addressed[0], addressed[2], hop[0], hop[2]
        )


_CHAINS: ContextVar[tuple[_Chain, ...]] = ContextVar("renewauth_aiohttp_chains", default=())

#: True while a request already sent once goes through the middleware (renewauth's retrofit
#: sends a program's rejected token's request once more that way): its 401 is given back as
#: it is, so that no request is resent twice.
RESENDING: ContextVar[bool] = ContextVar("renewauth_aiohttp_resending", default=False)


def _followed(chains: tuple[_Chain, ...], request: Any) -> _Chain | None:
    """The chain whose redirect `request` follows, if any."""
    call, hop = _call_of(request), _origin(request.url)
    for chain in chains:
        if chain.follows(call, hop):
            return chain
    return None


def _redirect_target(request: Any, location: str) -> Origin | None:
    """Where aiohttp goes after `request`'s redirect to `location` (resolved as it does)."""
    try:
        return _origin(request.original_url.join(type(request.url)(location)))
    except (ValueError, TypeError):
        return None


def _track(request: Any, response: Any, chain: _Chain | None, addressed: Any) -> None:
    """After a hop's answer: keep, move or end the redirect chain it belongs to."""
    if response.status in _REDIRECTS:
        headers = response.headers
        location = headers.get("Location") or headers.get("URI")
        if location is not None:
            target = _redirect_target(request, location)
            if chain is None:
                call = _call_of(request)
                chain = _Chain(call, _origin(addressed), _origin(request.url), target)
                _CHAINS.set((chain, *_CHAINS.get()[: _KEPT - 1]))
            else:
                chain.target = target
            return
    if chain is not None:
        _CHAINS.set(tuple(kept for kept in _CHAINS.get() if kept is not chain))


def _replayable(request: Any) -> bool:
    """Whether aiohttp can send `request`'s body again: none, bytes, a seekable file; not an
    async iterable or stream (read as it is sent) nor anything already consumed."""
    body = request.body
    if isinstance(body, bytes):
        return True
    if getattr(body, "consumed", True):
        return False
    from aiohttp.payload import AsyncIterablePayload

    return not isinstance(body, AsyncIterablePayload)


class _Departure:
    """Stands for `request.send` while a request is watched: aiohttp calls it once the
    request holds its connection, and the token is checked once more there (see the module
    docstring). The request holds it and it the request, until `off()`."""

    __slots__ = ("request", "send", "signing", "token")

    send: Callable[[Any], Awaitable[Any]]

    def __init__(self, signing: AiohttpSigning, request: Any, token: Token) -> None:
        self.signing, self.request, self.token = signing, request, token
        self.send = request.send  # its own method, or a wrapper another put there first
        request.send = self

    async def __call__(self, conn: Any) -> Any:
        signed = self.token
        token = await self.signing._manager.atoken_at_departure(signed)
        if token is not signed:
            logger.debug("token replaced as the request left: it aged while queued")
            self.token = token
            self.signing._set_token_aiohttp(self.request, token)
        return await self.send(conn)

    def off(self) -> None:
        """Give the request its `send` back (and end the cycle between the two)."""
        request, send = self.request, self.send
        its_own = getattr(send, "__self__", None) is request
        if request.send is self:
            if its_own:
                del request.send  # its own method again
            else:
                request.send = send


class AiohttpSigning:
    """The aiohttp middleware side of every renewauth auth object."""

    _manager: TokenManager
    _retry_statuses: Collection[int]
    _api_headers: Mapping[str, str]
    _home_origin: str | None
    _dpop: DpopKey | None = None
    # Nothing per process: a redirect chain lives in the task's context, the rest on the
    # request, so a pickled auth object leaves nothing of aiohttp's behind.
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset()

    async def _middleware(self, request: Any, handler: Handler) -> Any:
        """One hop of a request through this middleware (aiohttp awaits this coroutine)."""
        chains = _CHAINS.get()
        chain = _followed(chains, request) if chains else None
        try:
            addressed = request.url
            request.headers  # noqa: B018  # what a middleware signs: checked once, here
        except AttributeError:
            raise ConfigurationError(
                f"{type(self).__name__} was called as an aiohttp middleware with a "
                f"{type(request).__qualname__}: pass it as aiohttp.ClientSession("
                "middlewares=(auth,)) (aiohttp >= 3.12), which calls it with a ClientRequest"
            ) from None
        if chain is not None and not chain.admits(_origin(addressed)):
            response = await handler(request)  # a redirect elsewhere: nothing of ours on it
            _track(request, response, chain, addressed)
            return response
        manager = self._manager
        # The common case, a cached token that cannot age in the queue, takes no coroutine.
        token = manager.token_fresh_for(QUEUED_AT_MOST)
        if watch := token is None:
            token = await manager.atoken_for_request()
            watch = may_age_in_queue(manager, token)
        self._sign_aiohttp(request, addressed, token)
        if watch:
            response, token = await self._watched(request, handler, token)
        else:
            response = await handler(request)
        status = response.status
        if status in self._retry_statuses or self._dpop is not None:
            response = await self._answered_aiohttp(request, handler, response, addressed, token)
            status = response.status
        else:
            if status < 500 and manager.unproven is not None:
                manager.confirm(token)
            if status in STEP_UP_STATUSES:
                self._report_step_up_aiohttp(request, response, token)
        if chain is not None or status in _REDIRECTS:
            _track(request, response, chain, addressed)
        return response

    async def _watched(self, request: Any, handler: Handler, token: Token) -> tuple[Any, Token]:
        """`handler(request)`, the token checked again as the request leaves; the answer
        and the token that left."""
        departure = _Departure(self, request, token)
        try:
            return await handler(request), departure.token
        finally:
            departure.off()

    def _sign_aiohttp(self, request: Any, addressed: Any, token: Token) -> None:
        """Put `token`, the API headers and a DPoP proof on `request`, addressed to
        `addressed` and routed to the token's server if it assigned one."""
        url = addressed
        if token.api_origin is not None:
            target = routed_url(str(addressed), self._home_origin, token.api_origin)
            if target is not None:
                url = type(addressed)(target, encoded=True)
        if request.url is not url:  # routed, or routed anew after a renewal
            request.url = url
            request.headers["Host"] = url.host_port_subcomponent
        if self._api_headers:
            request.headers.update(self._api_headers)
        self._set_token_aiohttp(request, token)

    def _set_token_aiohttp(self, request: Any, token: Token) -> None:
        """Set `token` in `request`'s headers (and a DPoP proof that names it)."""
        headers = request.headers
        headers["Authorization"] = token.authorization
        if self._dpop is not None:
            headers["DPoP"] = self._dpop.proof(
                request.method, str(request.url), access_token=token.access_token
            )

    async def _answered_aiohttp(
        self, request: Any, handler: Handler, response: Any, addressed: Any, token: Token
    ) -> Any:
        """The answer to give back, after one that may ask for more (`token` left with the
        request): a DPoP nonce (sent once more with it), a rejected token (renewed, if it
        is still current, and sent once more)."""
        manager = self._manager
        if needs_dpop_nonce(
            self._dpop, request.url, response.status, response.headers
        ) and _replayable(request):
            logger.debug("the API asked for a DPoP nonce; resending once with it")
            response, token = await self._again_aiohttp(
                request, handler, response, addressed, token
            )
        status = response.status
        if status not in self._retry_statuses:
            if status < 500 and manager.unproven is not None:
                manager.confirm(token)
            if status in STEP_UP_STATUSES:
                self._report_step_up_aiohttp(request, response, token)
            return response
        if not self._should_resend_aiohttp(request, response, token):
            return response
        renewed = await manager.arenew_rejected(token)
        if renewed is None:
            return response
        logger.debug("%d from the API; renewed, resending once", status)
        response, token = await self._again_aiohttp(request, handler, response, addressed, renewed)
        manager.resent(origin_of(str(request.url)), status)
        status = response.status
        if status not in self._retry_statuses and status < 500 and manager.unproven is not None:
            manager.confirm(token)
        if status in STEP_UP_STATUSES:
            self._report_step_up_aiohttp(request, response, token)
        return response

    async def _again_aiohttp(
        self, request: Any, handler: Handler, answered: Any, addressed: Any, token: Token
    ) -> tuple[Any, Token]:
        """Send `request` once more, signed with `token`, after the answer `answered`; the
        new answer and the token that left with it."""
        answered.release()  # its connection back to the pool; a body writer still busy stops
        await request.close()  # ... and settles before the body is sent again
        self._sign_aiohttp(request, addressed, token)
        return await self._watched(request, handler, token)

    def _should_resend_aiohttp(self, request: Any, response: Any, token: Token) -> bool:
        """For an answer whose status is in `retry_statuses`: renew and resend?"""
        url = str(request.url)  # the answer is this hop's: aiohttp follows redirects outside
        return should_resend(
            response.status,
            self._retry_statuses,
            can_renew=self._manager.grant.can_renew,
            signed_url=url,
            answered_url=url,
            carried_token=request.headers.get("Authorization") == token.authorization,
            already_resent=RESENDING.get(),
            challenge=_challenge(response),
            replayable=_replayable(request),
            log=logger,
            on_event=self._manager.on_event,
        )

    def _report_step_up_aiohttp(self, request: Any, response: Any, token: Token) -> None:
        """Report an answer that asks for a stronger login (`report_step_up`), whatever
        `retry_statuses` holds; it goes back to the caller as it is."""
        url = str(request.url)
        report_step_up(
            response.status,
            _challenge(response),
            signed_url=url,
            answered_url=url,
            carried_token=request.headers.get("Authorization") == token.authorization,
            on_event=self._manager.on_event,
            log=logger,
        )


def _challenge(response: Any) -> str:
    """Every `WWW-Authenticate` line of an aiohttp answer, joined as one value (its `get`
    gives only the first: a Bearer challenge may follow a Basic one on a line of its own)."""
    return ", ".join(response.headers.getall("WWW-Authenticate", ()))
