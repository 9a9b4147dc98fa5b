"""The aiohttp adapter (aiohttp >= 3.12): a middleware of retrofit's own, last in the chain of
every `ClientSession` request, shows each hop's request to the gate and carries out its verdict.

Where it goes in: `ClientSession._request`, the one method that `get`, `post`, `request` and
`ws_connect` call, is wrapped to append the middleware to the chain that request runs (the
`middlewares=` given to the call, else the session's own). There it sees every request
through sessions made before or after the patch, and the chain aiohttp builds for each hop
(redirects included) ends with it, so it sees each hop's request fully built: its URL, the
`Authorization` the program set or that aiohttp made from `auth=BasicAuth(…)`, a `.netrc` or
the URL's user:password, and the body. Wrapping `ClientSession.__init__` instead would miss
sessions made before the patch and every call given `middlewares=` of its own.

What the verdict asks is done with aiohttp's own means: a request to sign goes through the
route's auth object as a middleware (`await route.auth(request, handler)`: renewal, the resend
after a 401); one kept until rejected is sent as it is and, when the API rejects the program's
own token, once more through the route's auth. aiohttp is never imported here: `targets` is
given the module once the program has imported it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._routing import Route
from ..auth import TokenAuth
from ..transports.aiohttp import RESENDING
from ._diagnostics import report_success, reporting
from ._gate import Verdict, answered, judge, resend_after_rejection
from ._plan import Action, Seen

if TYPE_CHECKING:
    import aiohttp

    Handler = Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]

__all__ = ["Unsupported", "targets"]

_AUTHORIZATION = "Authorization"


class Unsupported(Exception):
    """This aiohttp cannot be retrofitted (before 3.12 it has no client middlewares)."""


@dataclass(frozen=True, slots=True)
class _Library:
    """The classes of the aiohttp the program imported that the middleware looks for."""

    bytes_payload: type[Any]  # `BytesPayload`: a body already in memory
    answering: tuple[type, ...]  # middlewares that answer challenges (`DigestAuthMiddleware`)


@dataclass(frozen=True, slots=True)
class _Call:
    """What one `ClientSession` call brought, known before aiohttp builds its requests."""

    library: _Library
    own_auth: str | None  # a name for the `auth=` of the call or the session
    userinfo: bool  # the URL carries user:password (aiohttp sends it as Basic)
    chain: tuple[object, ...]  # the program's middlewares, before retrofit's

    def auth_in_chain(self, route_auth: TokenAuth) -> tuple[bool, str | None]:
        """Whether the route's own auth object is among the program's middlewares (it signs
        the request itself), and the name of another that answers challenges, if any."""
        signed_here, answering = False, None
        for middleware in self.chain:
            owner = getattr(middleware, "__self__", middleware)  # a bound method: its object
            if owner is route_auth:
                signed_here = True
            elif isinstance(owner, (TokenAuth, *self.library.answering)):
                answering = answering or type(owner).__qualname__
        return signed_here, answering


class _Hop:
    """One hop of an aiohttp request, about to be sent, as the gate sees it (`Outgoing`)."""

    def __init__(self, request: Any, call: _Call, body: bytes | None) -> None:
        self.request = request
        self.call = call
        self.body = body
        self.url = str(request.url)

    def seen(self, route: Route) -> Seen:
        request, call = self.request, self.call
        signed_here, answering = call.auth_in_chain(route.auth)
        return Seen(
            method=request.method,
            content_type=request.headers.get("Content-Type", ""),
            body=self.body,
            answering_auth=answering,
            signed_here=signed_here,
            authorization=request.headers.get(_AUTHORIZATION),
            own_auth=None if call.userinfo else call.own_auth,
            userinfo=call.userinfo,
        )

    def run_own_auth(self) -> Seen:  # pragma: no cover - aiohttp takes no callable auth
        raise AssertionError("aiohttp has no callable auth to run")


def _is_replayable(request: Any) -> bool:
    """Whether aiohttp can send the request's body again: its payload says so (bytes and
    seekable files can; an async generator, once sent, cannot)."""
    return not getattr(request.body, "consumed", False)


class _Retrofit:
    """The middleware retrofit appends to one call's chain: it runs once per hop."""

    __slots__ = ("call",)

    def __init__(self, call: _Call) -> None:
        self.call = call

    async def __call__(self, request: Any, handler: Handler) -> Any:
        body = request.body
        small = None
        if request.method == "POST" and isinstance(body, self.call.library.bytes_payload):
            small = await body.as_bytes()  # already in memory: a token request is told by it
        verdict = judge(_Hop(request, self.call, small))
        if verdict is None:
            return await handler(request)
        action = verdict.action
        if action is Action.SIGN:
            request.headers.popall(_AUTHORIZATION, None)
            response = await _signed(verdict, request, handler)
        elif action is Action.KEEP_UNTIL_REJECTED:
            response = await _kept_until_rejected(verdict, request, handler)
        else:
            response = await handler(request)
        answered(verdict, response.status)
        return response


async def _signed(verdict: Verdict, request: Any, handler: Handler) -> Any:
    """The request sent through the route's auth object, a failure to get a token reported."""
    route = verdict.route
    with reporting(route):
        response = await route.auth(request, handler)
    report_success(route)
    return response


async def _kept_until_rejected(verdict: Verdict, request: Any, handler: Handler) -> Any:
    """The request sent with the program's own Bearer token; when the API rejects exactly that
    token, sent once more through the route's auth object (renewauth's own signature then
    follows renewauth's rules)."""
    route = verdict.route
    authorization = request.headers[_AUTHORIZATION]
    response = await handler(request)
    if response.status not in route.auth.retry_statuses or (
        request.headers.get(_AUTHORIZATION) != authorization
    ):
        return response
    if not resend_after_rejection(
        route,
        verdict.origin,
        authorization,
        response.status,
        replayable=_is_replayable(request),
        challenge=", ".join(response.headers.getall("WWW-Authenticate", ())),
    ):
        return response
    response.release()
    request.headers.popall(_AUTHORIZATION, None)
    resending = RESENDING.set(True)  # the one resend: its own 401 goes back as it is
    try:
        return await _signed(verdict, request, handler)
    finally:
        RESENDING.reset(resending)


def _own_auth(auth: object) -> str | None:
    """A name for the `auth=` of a call or a session (aiohttp's `BasicAuth`, a named tuple)."""
    return None if auth is None else type(auth).__qualname__


def _has_userinfo(url: object) -> bool:
    try:
        parts = urlsplit(str(url))
        return parts.username is not None or parts.password is not None
    except ValueError:  # aiohttp raises its own error for it
        return False


def targets(module: ModuleType) -> list[tuple[type, str, Any]]:
    """The method of aiohttp to wrap, with its wrapper.

    Raises:
        Unsupported: an aiohttp without client middlewares (before 3.12).
    """
    session_class = module.ClientSession
    request_method = session_class.__dict__.get("_request")
    if request_method is None or "middlewares" not in inspect.signature(request_method).parameters:
        raise Unsupported(f"aiohttp {module.__version__} has no client middlewares (3.12+)")
    digest = getattr(module, "DigestAuthMiddleware", None)
    library = _Library(module.payload.BytesPayload, () if digest is None else (digest,))

    async def request(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        chain: Sequence[object] | None = kwargs.get("middlewares")
        if chain is None:
            chain = instance._middlewares  # the session's chain: aiohttp keeps it private
        given = kwargs.get("auth")
        url = args[1] if len(args) > 1 else kwargs.get("str_or_url")
        call = _Call(
            library,
            own_auth=_own_auth(given if given is not None else instance.auth),
            userinfo=_has_userinfo(url),
            chain=tuple(chain),
        )
        return await wrapped(*args, **{**kwargs, "middlewares": (*chain, _Retrofit(call))})

    return [(session_class, "_request", request)]
