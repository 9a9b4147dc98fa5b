"""The requests adapter: `Session.request` notes what the caller brought, `Session.send` asks
the gate and carries out its verdict.

requests runs the caller's auth while it prepares the request, before `send`; what the caller
passed (an auth, an `Authorization` header) is known only to `Session.request`, which hands it
to the `send` calls it makes through a context variable. A request sent directly has no such
note, and what it brought is then unknown.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.cookies import extract_cookies_to_jar
from requests.hooks import default_hooks
from requests.utils import rewind_body

from .._routing import Route
from .._urls import origin_of
from ..transports.requests import is_replayable
from ._diagnostics import report_success, reporting
from ._gate import answered, judge, resend_after_rejection
from ._plan import Action, Seen, is_signature, name_of

__all__ = ["targets"]


@dataclass(frozen=True, slots=True)
class _Call:
    """What `requests.Session.request` knew before preparing the request."""

    own_auth: str | None  # a name for the auth the call or session brought
    header_given: bool  # an Authorization header among the call's or the session's headers


# Set while `requests.Session.request` runs, for the `send` calls it makes.
_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("renewauth_call", default=None)
# The attribute that marks a request whose own Bearer token is kept until the API rejects it.
_KEEP = "_renewauth_keep_until_rejected"


def _has_authorization(headers: object) -> bool:
    return isinstance(headers, Mapping) and any(
        isinstance(key, str) and key.lower() == "authorization" for key in headers
    )


def _request(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # `headers` and `auth` are the fifth and eighth positional parameters of Session.request.
    auth = kwargs.get("auth", args[7] if len(args) > 7 else None)
    if auth is None:
        auth = instance.auth
    headers = kwargs.get("headers", args[4] if len(args) > 4 else None)
    call = _Call(
        own_auth=None if auth is None else name_of(auth),
        header_given=_has_authorization(headers) or _has_authorization(instance.headers),
    )
    token = _CALL.set(call)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _CALL.reset(token)


def _hook_owners(request: requests.PreparedRequest) -> list[object]:
    """The objects whose methods are the request's response hooks."""
    hooks = request.hooks.get("response") or ()
    return [getattr(hook, "__self__", None) for hook in (hooks if isinstance(hooks, list) else ())]


def _answers_challenges(owners: list[object], route: Route) -> str | None:
    """The name of the caller's auth when it registered a response hook (Digest, a renewauth
    object): such an auth adds its header only after a challenge, so it is not a no-op."""
    for owner in owners:
        if isinstance(owner, requests.auth.AuthBase) and owner is not route.auth:
            return type(owner).__qualname__
    return None


class _Prepared:
    """A prepared request about to be sent, as the gate sees it (`Outgoing`)."""

    def __init__(self, request: requests.PreparedRequest) -> None:
        self.request = request
        self.url = request.url or ""

    def seen(self, route: Route) -> Seen:
        request = self.request
        hooks = request.hooks.get("response") or ()
        # The objects whose methods are the request's response hooks.
        owners = [
            getattr(hook, "__self__", None) for hook in (hooks if isinstance(hooks, list) else ())
        ]
        authorization = request.headers.get("Authorization")
        call = _CALL.get()
        return Seen(
            method=request.method or "",
            content_type=request.headers.get("Content-Type", ""),
            body=request.body,
            answering_auth=_answers_challenges(owners, route),
            # Signed by this route already, its 401 hook in place (a prepared request sent
            # again, a same-origin redirect whose copy shares the hooks): the transport
            # checks the token again as the header is written.
            signed_here=is_signature(authorization)
            and any(owner is route.auth for owner in owners),
            authorization=authorization,
            own_auth=None if call is None else call.own_auth,
            header_given=None if call is None else call.header_given,
            userinfo=bool(urlsplit(self.url).username),
        )

    def run_own_auth(self) -> Seen:  # pragma: no cover - requests ran it in prepare()
        raise AssertionError("requests runs the caller's auth before send()")


def _send(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request: requests.PreparedRequest = args[0] if args else kwargs["request"]
    verdict = judge(_Prepared(request))
    if verdict is None:
        return wrapped(*args, **kwargs)
    route = verdict.route
    if verdict.action is Action.SIGN:
        request.headers.pop("Authorization", None)
        with reporting(route):
            route.auth(request)  # signs it and registers the 401 hook that send() dispatches
        report_success(route)
    elif verdict.action is Action.KEEP_UNTIL_REJECTED:
        setattr(request, _KEEP, route)
        hooks = request.hooks.setdefault("response", [])
        if _replace_rejected_bearer not in hooks:
            hooks.append(_replace_rejected_bearer)
    response = wrapped(*args, **kwargs)
    answered(verdict, response.status_code)
    return response


def _replace_rejected_bearer(response: requests.Response, **send_options: Any) -> requests.Response:
    """The response hook of `keep-until-401`: when the API rejects the program's own Bearer
    token, remember it as rejected and resend once with the route's token."""
    request = response.request
    route: Route | None = getattr(request, _KEEP, None)
    if route is None or response.status_code not in route.auth.retry_statuses:
        return response
    authorization = request.headers.get("Authorization")
    if authorization is None:
        return response
    origin = origin_of(request.url or "")
    replayable = is_replayable(request)
    if not resend_after_rejection(
        route,
        origin,
        authorization,
        response.status_code,
        replayable=replayable,
        challenge=response.headers.get("WWW-Authenticate"),
    ):
        return response
    response.content  # noqa: B018 - read and release the rejected answer
    response.close()
    if request.body is not None and not isinstance(request.body, bytes | str):
        rewind_body(request)
    resend = request.copy()
    resend.hooks = default_hooks()  # the copy shares the list that is being dispatched
    resend.headers.pop("Authorization", None)
    jar = resend._cookies  # type: ignore[attr-defined]  # requests keeps the jar private
    extract_cookies_to_jar(jar, request, response.raw)  # type: ignore[no-untyped-call]
    resend.prepare_cookies(jar)
    with reporting(route):
        route.auth(resend)
    retried: requests.Response = response.connection.send(resend, **send_options)
    retried.history.append(response)
    retried.request = resend
    return retried


def targets() -> list[tuple[type, str, Any]]:
    """The methods to wrap, each with its wrapper."""
    return [(requests.Session, "request", _request), (requests.Session, "send", _send)]
