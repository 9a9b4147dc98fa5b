"""The httpx adapter, for httpx and for each fork with its API (`httpx2`): `Client.send` and
`AsyncClient.send` ask the gate and send with the auth its verdict chooses.

httpx runs the caller's auth while it sends, after this wrapper: a plain callable given as
`auth=` is run here instead, once, so that what it adds can be looked at; any other auth of
the caller's own is left to run, and the request with it. A fork's clients accept only the
fork's own `Auth`: a renewauth object that is one (renewauth makes its auth objects `httpx2.Auth`
once httpx2 is imported) is handed to them as it is, and any other is wrapped by the fork's
`Flavour` in an `Auth` of the fork that runs renewauth's httpx flows.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, cast

import httpx
import requests

from .._routing import Route
from .._urls import origin_of
from ..auth import TokenAuth
from ..transports.httpx import TokenClients
from ._diagnostics import report_success, reporting
from ._gate import Verdict, answered, judge, resend_after_rejection
from ._plan import Action, Seen, name_of

__all__ = ["Flavour", "is_httpx_fork", "targets"]

_FLOWS = ("auth_flow", "sync_auth_flow", "async_auth_flow")


class Flavour:
    """httpx, or a fork of it with the same API: the classes the wrappers need, and the auth
    objects they hand to its clients (which accept only that module's `Auth`)."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.auth_base: type = module.Auth
        self.function_auth: type = _function_auth_of(module)
        self.byte_stream: type = module.ByteStream
        self.client_default: object = module.USE_CLIENT_DEFAULT
        self.unchanged = module.Auth()  # the base Auth sends the request as it is
        self.keep_class = _keep_until_rejected_class(self)
        self.signed_class = None if module is httpx else _signed_class(self)

    def signed(self, route: Route) -> Any:
        """The auth that signs a request under `route` with this module's clients: the
        route's auth object itself when it is one of this module's `Auth`."""
        auth = route.auth
        if self.signed_class is None or isinstance(auth, self.auth_base):
            return auth
        return self.signed_class(auth)

    def own_auth(self, auth: object) -> tuple[str | None, Callable[[Any], Any] | None]:
        """A name for the caller's auth (None: it has none or a no-op one), and the function
        to run now when it is a plain callable, so that its result can be looked at."""
        if auth is None:
            return None, None
        if isinstance(auth, tuple):
            return "a (user, password) tuple", None
        if isinstance(auth, requests.auth.AuthBase):  # a renewauth object given to a fork
            return type(auth).__qualname__, None
        if isinstance(auth, self.function_auth):
            function = getattr(auth, "_func", None)  # httpx keeps the callable private
            if callable(function):
                return name_of(function), function
            return type(auth).__qualname__, None
        if isinstance(auth, self.auth_base):
            kind = type(auth)
            if all(getattr(kind, name) is getattr(self.auth_base, name) for name in _FLOWS):
                return None, None  # httpx.Auth() itself, or a subclass that changes nothing
            return kind.__qualname__, None
        if callable(auth):
            return name_of(auth), auth
        return type(auth).__qualname__, None


def _function_auth_of(module: ModuleType) -> type:
    """httpx's `FunctionAuth` (what a plain callable given as `auth=` becomes), not exported."""
    private = importlib.import_module(f"{module.__name__}._auth")
    return cast(type, private.FunctionAuth)


def is_httpx_fork(module: ModuleType) -> bool:
    """Whether `module` has the parts of httpx's API that the wrappers use."""
    names = ("Client", "AsyncClient", "Auth", "ByteStream", "USE_CLIENT_DEFAULT")
    if not all(hasattr(module, name) for name in names) or not all(
        callable(getattr(getattr(module, name), "send", None)) for name in ("Client", "AsyncClient")
    ):
        return False
    try:
        _function_auth_of(module)
    except (ImportError, AttributeError):
        return False
    return True


def _keep_until_rejected_class(flavour: Flavour) -> type:
    class KeepUntilRejected(flavour.auth_base):  # type: ignore[misc, name-defined]
        """Sends the program's own Bearer token; after a rejection, once more with ours."""

        def __init__(self, route: Route) -> None:
            self._route = route

        def _resend(self, request: Any, response: Any, authorization: str) -> Any:
            """The route's flow, when `response` is the API rejecting exactly the token this
            request carried and the request can be sent again; else None."""
            route = self._route
            if not (
                response.status_code in route.auth.retry_statuses
                and origin_of(str(response.request.url)) == origin_of(str(request.url))
                and response.request.headers.get("Authorization") == authorization
            ):
                return None
            replayable = isinstance(request.stream, flavour.byte_stream)
            origin = origin_of(str(request.url))
            status = response.status_code
            if not resend_after_rejection(
                route,
                origin,
                authorization,
                status,
                replayable=replayable,
                challenge=response.headers.get("WWW-Authenticate"),
            ):
                return None
            request.headers.pop("Authorization", None)
            return flavour.signed(route)

        # The route's flow signs the one resend and sees its answer; a second resend it may
        # ask for is not sent (one resend per request).
        def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            authorization = request.headers["Authorization"]
            response = yield request
            signed = self._resend(request, response, authorization)
            if signed is not None:
                flow = signed.sync_auth_flow(request)
                try:
                    response = yield next(flow)
                    with contextlib.suppress(StopIteration):
                        flow.send(response)
                finally:
                    flow.close()

        async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            authorization = request.headers["Authorization"]
            response = yield request
            signed = self._resend(request, response, authorization)
            if signed is not None:
                flow = signed.async_auth_flow(request)
                try:
                    response = yield await flow.__anext__()
                    with contextlib.suppress(StopAsyncIteration):
                        await flow.asend(response)
                finally:
                    await flow.aclose()

    return KeepUntilRejected


def _signed_class(flavour: Flavour) -> type:
    """For a fork: its own `Auth` that runs a renewauth object's httpx flows."""

    # A replayable body is an `httpx.ByteStream` to the renewauth flows and the fork's own
    # `ByteStream` to the fork's transports: a class that is both.
    class Replayable(flavour.byte_stream, httpx.ByteStream):  # type: ignore[misc, name-defined]
        pass

    def replayable(request: Any) -> None:
        stream: Any = request.stream
        if isinstance(stream, flavour.byte_stream) and not isinstance(stream, httpx.ByteStream):
            request.stream = Replayable(b"".join(cast("Iterable[bytes]", stream)))

    class Signed(flavour.auth_base):  # type: ignore[misc, name-defined]
        def __init__(self, auth: TokenAuth) -> None:
            self._auth = auth

        def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            replayable(request)
            yield from self._auth.sync_auth_flow(request)

        async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            replayable(request)
            flow = self._auth.async_auth_flow(request)
            try:
                outgoing = await flow.__anext__()
                while True:
                    response = yield outgoing
                    outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return

    return Signed


def _request_body(request: Any) -> bytes | None:
    try:
        return bytes(request.content)
    except Exception:  # a streamed body not read yet (RequestNotRead): no token request
        return None


class _Sending:
    """An httpx request about to be sent, with the arguments it is sent with: what the gate
    sees (`Outgoing`), and the arguments its verdict calls for."""

    def __init__(
        self, flavour: Flavour, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.flavour = flavour
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.request = args[0] if args else kwargs["request"]
        self.url = str(self.request.url)
        self.own_name: str | None = None
        self.function: Callable[[Any], Any] | None = None
        self.ran = False  # the caller's callable ran here: httpx must not run it again

    def seen(self, route: Route) -> Seen:
        request = self.request
        given = self.kwargs.get("auth", self.flavour.client_default)
        # httpx's module functions pass `auth=None` down: that is no auth of their own.
        own = self.instance.auth if given is self.flavour.client_default else given
        self.own_name, self.function = self.flavour.own_auth(own)
        screened = Seen(
            method=request.method,
            content_type=request.headers.get("Content-Type", ""),
            body=_request_body(request) if request.method == "POST" else None,
        )
        if self.function is not None:
            return replace(screened, own_auth_pending=True)
        if self.own_name is not None:
            return replace(screened, opaque_auth=self.own_name)
        return self._carried(screened)

    def run_own_auth(self) -> Seen:
        assert self.function is not None  # asked only when `seen` said one is pending
        result = self.function(self.request)  # once, here: the result is looked at
        self.ran = True
        if result is not None and result is not self.request:
            self.request = result
            if self.args:
                self.args = (result, *self.args[1:])
            else:
                self.kwargs = {**self.kwargs, "request": result}
        return self._carried(Seen())

    def _carried(self, seen: Seen) -> Seen:
        """`seen` with what the request carries as httpx is about to send it."""
        url = self.request.url
        userinfo = bool(url.username or url.password)
        return replace(
            seen,
            authorization=self.request.headers.get("Authorization"),
            own_auth=self.own_name,
            userinfo=userinfo,
            basic_from_url=userinfo,  # httpx adds Basic from the URL itself
        )

    def planned(self, verdict: Verdict) -> _Plan:
        """How to send the request, as `verdict` says."""
        route, kwargs = verdict.route, self.kwargs
        if verdict.action is Action.SIGN:
            self.request.headers.pop("Authorization", None)
            return _Plan(verdict, self.args, {**kwargs, "auth": self.flavour.signed(route)}, True)
        if verdict.action is Action.KEEP_UNTIL_REJECTED:  # resent with ours after a 401
            keep = self.flavour.keep_class(route)
            return _Plan(verdict, self.args, {**kwargs, "auth": keep}, True)
        if self.ran:
            kwargs = {**kwargs, "auth": self.flavour.unchanged}
        return _Plan(verdict, self.args, kwargs, False)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How an httpx request under a route is sent: with these arguments; `signed` when a
    renewauth token may go with it."""

    verdict: Verdict
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    signed: bool

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Around the sending: a token failure of a signed request is reported."""
        with reporting(self.verdict.route) if self.signed else contextlib.nullcontext():
            yield

    def answered(self, response: Any) -> Any:
        """After the answer: a signed request ends a run of failures, and a request left
        alone that came back 401 is warned about."""
        if self.signed:
            report_success(self.verdict.route)
        answered(self.verdict, response.status_code)
        return response


def _plan(
    flavour: Flavour, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Plan | None:
    """How to send the request, or None to send it as the caller asked and look no further."""
    if isinstance(instance, TokenClients):  # renewauth's own token requests
        return None
    sending = _Sending(flavour, instance, args, kwargs)
    verdict = judge(sending)
    return None if verdict is None else sending.planned(verdict)


def targets(module: ModuleType) -> list[tuple[type, str, Any]]:
    """The methods of httpx (or a fork) to wrap, each with its wrapper."""
    flavour = Flavour(module)

    def send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = _plan(flavour, instance, args, kwargs)
        if plan is None:
            return wrapped(*args, **kwargs)
        with plan.reporting():
            response = wrapped(*plan.args, **plan.kwargs)
        return plan.answered(response)

    async def asend(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        plan = _plan(flavour, instance, args, kwargs)
        if plan is None:
            return await wrapped(*args, **kwargs)
        with plan.reporting():
            response = await wrapped(*plan.args, **plan.kwargs)
        return plan.answered(response)

    return [(module.Client, "send", send), (module.AsyncClient, "send", asend)]
