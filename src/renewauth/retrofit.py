"""Retrofit: renewing tokens for `requests` and `httpx` calls in code that cannot change.

`patch({prefix: auth, …})` wraps, with `wrapt`, the one method each library sends through:
`requests.Session.send` (module-level functions and every session, even one made before the
patch, and every subclass) and `httpx.Client.send` / `httpx.AsyncClient.send` (module-level
functions, every client), and the same methods of an httpx fork with httpx's API (`httpx2`)
when it is imported. A request whose URL falls under a prefix is sent with that prefix's auth
object, with renewal before expiry and after a 401 exactly as with `session.auth`.

What decides is what the request carries once the caller's own auth has run:
- no `Authorization` header: signed, even when the caller's auth ran and added nothing
  (SDKs set `session.auth = lambda r: r` only to stop requests reading `~/.netrc`);
- an `Authorization` other than `Bearer …` (Basic, Digest, an API scheme, Basic that requests
  took from `~/.netrc` or from the URL), or an auth that answers challenges itself (Digest, a
  renewauth object): left alone;
- a `Bearer …` token of the program's own: `existing_bearer` decides, per route:
  `"keep-until-401"` (the default: sent as it is until the API rejects it, then replaced),
  `"keep"` or `"replace"`. The first time a route meets such a token on an origin, a WARNING
  says what was done and how to choose otherwise; the API never sees another principal
  without a line saying so;
- every URL that no prefix matches, and renewauth's own token requests: left alone.

A prefix matches URLs with the same scheme, host and port whose path starts at a segment
boundary (`https://api.example.com/v1/` matches `/v1/x` and `/v1`, not `/v10`); the longest
matching prefix wins. With `explain=True` (`renewauth run --explain`) every distinct reason
is logged once per origin at INFO, and at DEBUG otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib
import json
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

import httpx
import requests
import wrapt
from requests.cookies import extract_cookies_to_jar
from requests.hooks import default_hooks
from requests.utils import rewind_body

from ._urls import is_loopback_host, origin_of
from .auth import TokenAuth
from .errors import AuthError, ConfigurationError
from .token import Token
from .transports.httpx import TokenClients

__all__ = [
    "DEFAULT_EXISTING_BEARER",
    "EXISTING_BEARER_CHOICES",
    "HTTPX_FORKS",
    "ExistingBearer",
    "Patch",
    "patch",
    "patch_from_config",
    "unpatch",
]

logger = logging.getLogger(__name__)

ExistingBearer = Literal["replace", "keep", "keep-until-401"]
#: Never changes the principal an API sees while the API accepts the program's own token,
#: and still rescues a stale token pasted into a legacy script (the API rejects it).
DEFAULT_EXISTING_BEARER: ExistingBearer = "keep-until-401"
EXISTING_BEARER_CHOICES: tuple[str, ...] = get_args(ExistingBearer)
#: Top-level modules that are renamed copies of httpx, patched as httpx is once imported.
#: (The `renewauth run` bootstrap keeps the same list: it must not import renewauth early.)
HTTPX_FORKS = ("httpx2",)

_SIGN, _LEAVE, _KEEP_UNTIL_REJECTED = "sign", "leave", "keep-until-401"
_MAX_REMEMBERED = 4096  # explained (origin, reason) pairs; rejected tokens per route: 64
# The IANA HTTP authentication scheme registry, and schemes APIs commonly use.
_KNOWN_SCHEMES = {
    name.lower(): name
    for name in (
        "Basic", "Bearer", "Concealed", "Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate",
        "OAuth", "PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid", "NTLM", "Token",
        "ApiKey", "Api-Key", "SSWS", "GenieKey", "Splunk", "Hawk", "MAC", "JWT", "AWS4-HMAC-SHA256",
        "SharedKey", "SharedAccessSignature", "Key", "Session",
    )
}  # fmt: skip


class _RouteState:
    """What a route remembers between requests: warnings given, tokens the API rejected
    (as digests, never the token), and the failure last reported at ERROR."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warned: set[tuple[str, str]] = set()
        self.rejected: dict[bytes, None] = {}  # insertion-ordered: the oldest goes first
        self.failure: tuple[str, str] | None = None

    def first_time(self, origin: str, kind: str) -> bool:
        with self.lock:
            if (origin, kind) in self.warned:
                return False
            self.warned.add((origin, kind))
            return True

    def reject(self, authorization: str) -> None:
        with self.lock:
            self.rejected[_digest(authorization)] = None
            while len(self.rejected) > 64:
                del self.rejected[next(iter(self.rejected))]

    def was_rejected(self, authorization: str) -> bool:
        return bool(self.rejected) and _digest(authorization) in self.rejected


def _digest(authorization: str) -> bytes:
    return hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class _Route:
    origin: str
    path: str  # without a trailing slash ("" for the whole origin)
    prefix: str  # as log lines show it: origin and path
    auth: TokenAuth
    existing_bearer: ExistingBearer
    label: str  # "[auth.NAME]" for a configuration entry, "prefix '…'" for patch()
    setting: str  # how to choose another existing_bearer, in the route's own terms
    state: _RouteState = field(default_factory=_RouteState, compare=False)


@dataclass(frozen=True, slots=True)
class _Decision:
    action: str  # _SIGN, _LEAVE or _KEEP_UNTIL_REJECTED
    reason: str
    existing: bool = False  # the program's own Bearer token is what `existing_bearer` decided


_LOCK = threading.RLock()  # reentrant: a post-import hook may fire inside patch()
_ROUTES: tuple[_Route, ...] = ()  # longest path first; swapped whole, read without a lock
_ORIGINALS: dict[tuple[type, str], Any] = {}
_EXPLAIN = False
_EXPLAINED: set[tuple[str, str]] = set()
_FORK_HOOKS: set[str] = set()


@dataclass(frozen=True, slots=True)
class _Call:
    """What `requests.Session.request` knew before preparing the request."""

    own_auth: str | None  # a name for the auth the call or session brought
    header_given: bool  # an Authorization header among the call's or the session's headers


# Set while `requests.Session.request` runs, for the `send` calls it makes.
_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("renewauth_call", default=None)


def _check_existing_bearer(value: object, where: str) -> ExistingBearer:
    if value not in EXISTING_BEARER_CHOICES:
        raise ConfigurationError(
            f"{where} existing_bearer must be one of 'keep-until-401' (the default), 'keep' "
            f"or 'replace', got {value!r}"
        )
    return cast(ExistingBearer, value)


def _route(
    prefix: str,
    auth: object,
    existing_bearer: ExistingBearer,
    *,
    label: str | None = None,
    setting: str | None = None,
) -> _Route:
    try:
        parts = urlsplit(prefix) if isinstance(prefix, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        parts, valid = None, False
    if not valid or parts is None:
        raise ConfigurationError(
            f"patch() prefix {prefix!r} must be an absolute http(s) URL such as "
            "'https://api.example.com/v1/'"
        )
    if not isinstance(auth, TokenAuth):
        raise ConfigurationError(
            f"patch() needs renewauth auth objects as values; {prefix!r} maps to "
            f"{type(auth).__name__}"
        )
    shown = origin_of(prefix) + parts.path  # for log lines: no user:password, no query
    return _Route(
        origin=origin_of(prefix),
        path=parts.path.rstrip("/"),
        prefix=shown,
        auth=auth,
        existing_bearer=existing_bearer,
        label=label or f"prefix '{shown}'",
        setting=setting or "patch(…, existing_bearer='{mode}')",
    )


def _route_for(url: str) -> _Route | None:
    """The route of the longest prefix that `url` falls under, or `None`."""
    routes = _ROUTES
    if not routes:
        return None
    origin = origin_of(url)
    path = urlsplit(url).path
    for route in routes:
        if route.origin == origin and (
            not route.path or path == route.path or path.startswith(route.path + "/")
        ):
            return route
    return None


# --- the decision, made once for requests and httpx -----------------------------------------


def _scheme_of(authorization: str) -> str:
    """The scheme of an Authorization header, safe to log: only a registered or well-known
    scheme is named, since the first word of a header without one may be a secret."""
    scheme, space, _ = authorization.strip().partition(" ")
    if not space:
        return "a value without a scheme"
    return _KNOWN_SCHEMES.get(scheme.lower(), "a scheme of its own")


def _is_signature(authorization: str | None) -> bool:
    """Whether a header value was set by a renewauth object: the requests transport sets a
    `str` that also carries its `Token` (and writes the current one when the header leaves)."""
    return isinstance(getattr(authorization, "token", None), Token)


_TOKEN_BODY_LIMIT = 8192  # bytes: a token request is small; a larger body is never one


@functools.lru_cache(maxsize=64)
def _endpoint(url: str) -> str:
    """Origin and path of `url`: what two URLs of one endpoint share."""
    return origin_of(url) + urlsplit(url).path


def _names_a_grant(content_type: str, body: object) -> bool:
    """Whether a small form or JSON body has a top-level `grant_type` (RFC 6749 §4)."""
    if isinstance(body, str):
        body = body[: _TOKEN_BODY_LIMIT + 1].encode("utf-8", "replace")
    if not isinstance(body, bytes) or not body or len(body) > _TOKEN_BODY_LIMIT:
        return False
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return any(field.partition(b"=")[0] == b"grant_type" for field in body.split(b"&"))
    if media == "application/json" or media.endswith("+json"):
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return False
        return isinstance(fields, dict) and isinstance(fields.get("grant_type"), str)
    return False


def _token_url_of(route: _Route) -> str | None:
    try:
        return str(route.auth._manager.grant.token_url)
    except Exception:  # a grant of the user's own that cannot say: it matches nothing
        return None


def _token_request(method: str, url: str, content_type: str, body: object) -> str | None:
    """Why a request is a token request, not an API call, or None: a POST to the token
    endpoint of a route's auth, or a POST whose small form or JSON body has a top-level
    `grant_type`. A program's own token request must never carry a renewauth token."""
    if method.upper() != "POST":
        return None
    target = _endpoint(url)
    for route in _ROUTES:
        token_url = _token_url_of(route)
        if token_url is not None and _endpoint(token_url) == target:
            return f"left alone: a request to the token endpoint of {route.label}"
    if _names_a_grant(content_type, body):
        return "left alone: a token request of the program's own (its body names a grant_type)"
    return None


def _decide(
    route: _Route,
    authorization: str | None,
    *,
    own_auth: str | None,
    header_given: bool | None,
    userinfo: bool,
) -> _Decision:
    """What to do with a request under `route`, from what it carries after the caller's auth.

    `header_given` is None when it is unknown (a prepared request sent directly).
    """
    if authorization is None:
        if own_auth is None:
            return _Decision(_SIGN, f"signed by {route.label}")
        return _Decision(
            _SIGN,
            f"signed by {route.label}: its own auth ({own_auth}) added no Authorization header",
        )
    scheme = _scheme_of(authorization)
    if scheme.lower() != "bearer":
        if own_auth is not None and not header_given:
            return _Decision(
                _LEAVE,
                f"left alone: brings its own auth ({own_auth}), which set a non-Bearer "
                f"Authorization (scheme: {scheme})",
            )
        if userinfo:
            return _Decision(
                _LEAVE,
                f"left alone: carries an Authorization ({scheme}) from the URL's user:password",
            )
        if header_given is False:
            return _Decision(
                _LEAVE,
                f"left alone: carries an Authorization ({scheme}) that requests took from ~/.netrc "
                "(set trust_env = False on the session, or drop the host from ~/.netrc, to have "
                "it signed)",
            )
        return _Decision(
            _LEAVE, f"left alone: carries a non-Bearer Authorization (scheme: {scheme})"
        )
    current = route.auth.token
    if _is_signature(authorization) or (
        current is not None and authorization == current.authorization
    ):
        return _Decision(_SIGN, f"signed by {route.label}")  # our own: a redirect or a reuse
    if route.state.was_rejected(authorization):
        return _Decision(
            _SIGN, f"signed by {route.label}, replacing a Bearer token the API rejected"
        )
    if route.existing_bearer == "replace":
        reason = f"its own Bearer token replaced by {route.label}'s (existing_bearer='replace')"
        return _Decision(_SIGN, reason, existing=True)
    if route.existing_bearer == "keep":
        reason = "left alone: its own Bearer token kept (existing_bearer='keep')"
        return _Decision(_LEAVE, reason, existing=True)
    reason = "its own Bearer token kept until the API rejects it (existing_bearer='keep-until-401')"
    return _Decision(_KEEP_UNTIL_REJECTED, reason, existing=True)


def _warn_about_existing_bearer(route: _Route, origin: str) -> None:
    """Say once per (route, origin) what happens to the program's own Bearer token."""
    if not route.state.first_time(origin, "existing"):
        return
    mode = route.existing_bearer
    if mode == "replace":
        what = (
            f"renewauth replaces it with the token of {route.label}, so the API sees that "
            "principal instead of the program's"
        )
        others = ("keep-until-401", "keep")
    elif mode == "keep":
        what = f"renewauth leaves it and never sends the token of {route.label}"
        others = ("keep-until-401", "replace")
    else:
        what = (
            "renewauth sends it as it is until the API rejects it, then resends once with the "
            f"token of {route.label} and sends that one in its place from then on"
        )
        others = ("keep", "replace")
    logger.warning(
        "requests to %s carry their own Bearer token; %s (existing_bearer=%r). "
        "To choose otherwise set %s or %s",
        origin,
        what,
        mode,
        route.setting.format(mode=others[0]),
        route.setting.format(mode=others[1]),
    )


def _warn_about_rejection(route: _Route, origin: str) -> None:
    if route.state.first_time(origin, "rejected"):
        logger.warning(
            "%s rejected the program's own Bearer token; renewauth resends with the token of "
            "%s and sends that one in place of the rejected token from now on "
            "(existing_bearer='keep-until-401'; to never replace it set %s)",
            origin,
            route.label,
            route.setting.format(mode="keep"),
        )


def _explain(origin: str, reason: str) -> None:
    """Log why a request was signed or left alone, once per (origin, reason)."""
    level = logging.INFO if _EXPLAIN else logging.DEBUG
    if not logger.isEnabledFor(level) or (origin, reason) in _EXPLAINED:
        return
    with _LOCK:
        if (origin, reason) in _EXPLAINED or len(_EXPLAINED) >= _MAX_REMEMBERED:
            return
        _EXPLAINED.add((origin, reason))
    logger.log(level, "%s: %s", origin, reason)


def _explain_unmatched(url: str) -> None:
    level = logging.INFO if _EXPLAIN else logging.DEBUG
    if not _ROUTES or not logger.isEnabledFor(level):
        return
    origin = origin_of(url)
    nearest = _nearest_prefix(url)
    reason = "left alone: matches no prefix"
    if nearest:
        reason += f"; nearest: {nearest}"
    _explain(origin, reason)


def _host_family(host: str) -> str:
    return "loopback" if is_loopback_host(host) else host.lower().strip("[]")


def _nearest_prefix(url: str) -> str | None:
    """A prefix that differs from `url` only in scheme, port or a loopback alias, or whose
    origin is the same but whose path does not cover it, described for a log line."""
    parts = urlsplit(url)
    origin = origin_of(url)
    for route in _ROUTES:
        target = urlsplit(route.prefix)
        named = route.label if route.label.startswith("prefix") else f"{route.label} {route.prefix}"
        if route.origin == origin:
            return f"{named}, which covers other paths on this origin"
        if _host_family(parts.hostname or "") != _host_family(target.hostname or ""):
            continue
        path = parts.path.rstrip("/")
        if route.path and not (path == route.path or path.startswith(route.path + "/")):
            continue
        differences = []
        if parts.scheme.lower() != target.scheme.lower():
            differences.append("scheme")
        if (parts.hostname or "").lower() != (target.hostname or "").lower():
            differences.append("host (another name for loopback)")
        if origin_of(f"x://h:{_port(parts)}") != origin_of(f"x://h:{_port(target)}"):
            differences.append("port")
        if differences:
            return f"{named}, which differs in {' and '.join(differences)}"
    return None


def _port(parts: Any) -> int:
    try:
        port = parts.port
    except ValueError:
        port = None
    return int(port if port is not None else {"http": 80, "https": 443}.get(parts.scheme, 0))


def _warn_if_rejected(route: _Route, origin: str, reason: str, status: int) -> None:
    """A request under a route that renewauth left alone came back 401: say once per (route,
    origin) why it was left alone, since the program will only see its 401s."""
    if status == 401 and route.state.first_time(origin, "left alone, rejected"):
        logger.warning(
            "%s answered 401 to a request under %s that renewauth did not sign: %s. "
            "`renewauth run --explain` lists every such decision",
            origin,
            route.label,
            reason.removeprefix("left alone: "),
        )


def _report_failure(route: _Route, exc: AuthError) -> None:
    """Log a token failure at ERROR once per distinct failure in a row: legacy code may wrap
    the exception in its own ("Can't connect to server") or swallow it."""
    failure = (type(exc).__name__, str(exc))
    with route.state.lock:
        if route.state.failure == failure:
            return
        route.state.failure = failure
    if route.label.startswith("prefix"):
        where, check = route.label, ""
    else:
        where, check = f"{route.prefix} ({route.label})", "; `renewauth check` tests the entry"
    logger.error("no token for requests under %s: %s: %s%s", where, *failure, check)


def _report_success(route: _Route) -> None:
    if route.state.failure is not None:
        with route.state.lock:
            route.state.failure = None


# --- requests ------------------------------------------------------------------------------


def _name_of(auth: object) -> str:
    """A name for the caller's auth in a log line: its function's or its class's name."""
    if isinstance(auth, tuple):
        return "a (user, password) tuple"
    name = getattr(auth, "__qualname__", None)  # a function; an instance has none of its own
    return name if isinstance(name, str) else type(auth).__qualname__


def _has_authorization(headers: object) -> bool:
    return isinstance(headers, Mapping) and any(
        isinstance(key, str) and key.lower() == "authorization" for key in headers
    )


def _requests_request(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # `headers` and `auth` are the fifth and eighth positional parameters of Session.request.
    auth = kwargs.get("auth", args[7] if len(args) > 7 else None)
    if auth is None:
        auth = instance.auth
    headers = kwargs.get("headers", args[4] if len(args) > 4 else None)
    call = _Call(
        own_auth=None if auth is None else _name_of(auth),
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


def _answers_challenges(owners: list[object], route: _Route) -> str | None:
    """The name of the caller's auth when it registered a response hook (Digest, a renewauth
    object): such an auth adds its header only after a challenge, so it is not a no-op."""
    for owner in owners:
        if isinstance(owner, requests.auth.AuthBase) and owner is not route.auth:
            return type(owner).__qualname__
    return None


_KEEP = "_renewauth_keep_until_rejected"


def _requests_send(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request: requests.PreparedRequest = args[0] if args else kwargs["request"]
    url = request.url or ""
    route = _route_for(url)
    if route is None:
        _explain_unmatched(url)
        return wrapped(*args, **kwargs)
    origin = origin_of(url)
    owners = _hook_owners(request)
    challenger = _answers_challenges(owners, route)
    if challenger is not None:
        _explain(origin, f"left alone: brings its own auth ({challenger})")
        return wrapped(*args, **kwargs)
    own_token_request = _token_request(
        request.method or "", url, request.headers.get("Content-Type", ""), request.body
    )
    if own_token_request is not None:
        _explain(origin, own_token_request)
        response = wrapped(*args, **kwargs)
        _warn_if_rejected(route, origin, own_token_request, response.status_code)
        return response
    call = _CALL.get()
    authorization = request.headers.get("Authorization")
    if _is_signature(authorization) and any(owner is route.auth for owner in owners):
        # Signed by this route already, its 401 hook in place (a prepared request sent again,
        # a same-origin redirect whose copy shares the hooks): the transport checks the token
        # again as the header is written.
        return wrapped(*args, **kwargs)
    decision = _decide(
        route,
        authorization,
        own_auth=None if call is None else call.own_auth,
        header_given=None if call is None else call.header_given,
        userinfo=bool(urlsplit(url).username),
    )
    _explain(origin, decision.reason)
    if decision.existing:
        _warn_about_existing_bearer(route, origin)
    if decision.action == _SIGN:
        request.headers.pop("Authorization", None)
        try:
            route.auth(request)  # signs it and registers the 401 hook that send() dispatches
        except AuthError as exc:
            _report_failure(route, exc)
            raise
        _report_success(route)
    elif decision.action == _KEEP_UNTIL_REJECTED:
        setattr(request, _KEEP, route)
        hooks = request.hooks.setdefault("response", [])
        if _replace_rejected_bearer not in hooks:
            hooks.append(_replace_rejected_bearer)
    elif not decision.existing:  # (a Bearer token kept on purpose was warned about above)
        response = wrapped(*args, **kwargs)
        _warn_if_rejected(route, origin, decision.reason, response.status_code)
        return response
    return wrapped(*args, **kwargs)


def _is_replayable(request: requests.PreparedRequest) -> bool:
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return True
    return isinstance(getattr(request, "_body_position", None), int)


def _replace_rejected_bearer(response: requests.Response, **send_options: Any) -> requests.Response:
    """The response hook of `keep-until-401`: when the API rejects the program's own Bearer
    token, remember it as rejected and resend once with the route's token."""
    request = response.request
    route: _Route | None = getattr(request, _KEEP, None)
    if route is None or response.status_code not in route.auth._retry_statuses:
        return response
    authorization = request.headers.get("Authorization")
    if authorization is None:
        return response
    origin = origin_of(request.url or "")
    route.state.reject(authorization)
    _warn_about_rejection(route, origin)
    if not _is_replayable(request):
        logger.warning(
            "%s answered %d; not resending: the request body is a stream that cannot be "
            "replayed (the next request is sent with the token of %s)",
            origin,
            response.status_code,
            route.label,
        )
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
    try:
        route.auth(resend)
    except AuthError as exc:
        _report_failure(route, exc)
        raise
    retried: requests.Response = response.connection.send(resend, **send_options)
    retried.history.append(response)
    retried.request = resend
    return retried


# --- httpx and its forks -------------------------------------------------------------------


class _Flavour:
    """httpx, or a fork of it with the same API: the classes the wrappers need, and the auth
    objects they hand to its clients (which accept only that module's `Auth`)."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.auth_base: type = module.Auth
        self.function_auth: type = _function_auth_of(module)
        self.byte_stream: type = module.ByteStream
        self.client_default: object = module.USE_CLIENT_DEFAULT
        self.is_httpx = module is httpx
        self.unchanged = module.Auth()  # the base Auth sends the request as it is
        self.keep_class = _keep_until_rejected_class(self)
        self.signed_class = None if self.is_httpx else _signed_class(self)

    def signed(self, route: _Route) -> Any:
        return route.auth if self.signed_class is None else self.signed_class(route.auth)

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
                return _name_of(function), function
            return type(auth).__qualname__, None
        if isinstance(auth, self.auth_base):
            kind = type(auth)
            if all(
                getattr(kind, name) is getattr(self.auth_base, name)
                for name in ("auth_flow", "sync_auth_flow", "async_auth_flow")
            ):
                return None, None  # httpx.Auth() itself, or a subclass that changes nothing
            return kind.__qualname__, None
        if callable(auth):
            return _name_of(auth), auth
        return type(auth).__qualname__, None


def _function_auth_of(module: ModuleType) -> type:
    """httpx's `FunctionAuth` (what a plain callable given as `auth=` becomes), not exported."""
    private = importlib.import_module(f"{module.__name__}._auth")
    return cast(type, private.FunctionAuth)


def _carried(route: _Route, request: Any, response: Any, authorization: str) -> bool:
    """Whether `response` is the API rejecting exactly the token this request carried."""
    return (
        response.status_code in route.auth._retry_statuses
        and origin_of(str(response.request.url)) == origin_of(str(request.url))
        and response.request.headers.get("Authorization") == authorization
    )


def _keep_until_rejected_class(flavour: _Flavour) -> type:
    class KeepUntilRejected(flavour.auth_base):  # type: ignore[misc, name-defined]
        """Sends the program's own Bearer token; after a rejection, once more with ours."""

        def __init__(self, route: _Route) -> None:
            self._route = route

        def _resend_needed(self, request: Any, response: Any, authorization: str) -> bool:
            route = self._route
            if not _carried(route, request, response, authorization):
                return False
            origin = origin_of(str(request.url))
            route.state.reject(authorization)
            _warn_about_rejection(route, origin)
            if not isinstance(request.stream, flavour.byte_stream):
                logger.warning(
                    "%s answered %d; not resending: the request body is a stream that cannot "
                    "be replayed (the next request is sent with the token of %s)",
                    origin,
                    response.status_code,
                    route.label,
                )
                return False
            request.headers.pop("Authorization", None)
            return True

        # The route's flow signs the one resend and sees its answer; a second resend it may
        # ask for is not sent (one resend per request).
        def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            authorization = request.headers["Authorization"]
            response = yield request
            if self._resend_needed(request, response, authorization):
                flow = flavour.signed(self._route).sync_auth_flow(request)
                try:
                    response = yield next(flow)
                    with contextlib.suppress(StopIteration):
                        flow.send(response)
                finally:
                    flow.close()

        async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            authorization = request.headers["Authorization"]
            response = yield request
            if self._resend_needed(request, response, authorization):
                flow = flavour.signed(self._route).async_auth_flow(request)
                try:
                    response = yield await flow.__anext__()
                    with contextlib.suppress(StopAsyncIteration):
                        await flow.asend(response)
                finally:
                    await flow.aclose()

    return KeepUntilRejected


def _signed_class(flavour: _Flavour) -> type:
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """How an httpx request under a route is sent, with these arguments: `signed` when a
    renewauth token may go with it; `left` says why it was left alone, for the warning when
    it comes back 401 (None for a Bearer token of the program's own kept on purpose)."""

    route: _Route
    origin: str  # the origin the caller addressed
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    signed: bool = False
    left: str | None = None


def _request_body(request: Any) -> bytes | None:
    try:
        return bytes(request.content)
    except Exception:  # a streamed body not read yet (RequestNotRead): no token request
        return None


def _plan_httpx(
    flavour: _Flavour, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Plan | None:
    """How to send the request, or None to send it as the caller asked and look no further."""
    if isinstance(instance, TokenClients):  # renewauth's own token requests
        return None
    request = args[0] if args else kwargs["request"]
    url = str(request.url)
    route = _route_for(url)
    if route is None:
        _explain_unmatched(url)
        return None
    origin = origin_of(url)
    body = _request_body(request) if request.method == "POST" else None
    content_type = request.headers.get("Content-Type", "")
    own_token_request = _token_request(request.method, url, content_type, body)
    if own_token_request is not None:
        _explain(origin, own_token_request)
        return _Plan(route, origin, args, kwargs, left=own_token_request)
    given = kwargs.get("auth", flavour.client_default)
    # httpx's module functions pass `auth=None` down: that is no auth of their own.
    own = instance.auth if given is flavour.client_default else given
    own_name, function = flavour.own_auth(own)
    if own_name is not None and function is None:
        reason = f"left alone: brings its own auth ({own_name})"
        _explain(origin, reason)
        return _Plan(route, origin, args, kwargs, left=reason)
    if function is not None:  # run the caller's callable now, once, and look at the result
        result = function(request)
        if result is not None and result is not request:
            request = result
            args, kwargs = ((request, *args[1:]), kwargs) if args else (args, kwargs)
            if not args:
                kwargs = {**kwargs, "request": request}
    userinfo = bool(request.url.username or request.url.password)
    authorization = request.headers.get("Authorization")
    decision = _decide(
        route, authorization, own_auth=own_name, header_given=None, userinfo=userinfo
    )
    if userinfo and authorization is None:  # httpx adds Basic from the URL itself
        decision = _Decision(
            _LEAVE, "left alone: carries an Authorization (Basic) from the URL's user:password"
        )
    _explain(origin, decision.reason)
    if decision.existing:
        _warn_about_existing_bearer(route, origin)
    if decision.action == _SIGN:
        request.headers.pop("Authorization", None)
        return _Plan(route, origin, args, {**kwargs, "auth": flavour.signed(route)}, signed=True)
    if decision.action == _KEEP_UNTIL_REJECTED:
        keep = {**kwargs, "auth": flavour.keep_class(route)}
        return _Plan(route, origin, args, keep, signed=True)  # resent with ours after a 401
    if function is not None:  # the callable ran already
        kwargs = {**kwargs, "auth": flavour.unchanged}
    # A Bearer token kept on purpose was warned about above; anything else left alone is
    # warned about if the API rejects it.
    return _Plan(route, origin, args, kwargs, left=None if decision.existing else decision.reason)


def _sent(plan: _Plan, response: Any) -> Any:
    if plan.signed:
        _report_success(plan.route)
    elif plan.left is not None:
        _warn_if_rejected(plan.route, plan.origin, plan.left, response.status_code)
    return response


def _httpx_wrappers(flavour: _Flavour) -> tuple[Any, Any]:
    def send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        plan = _plan_httpx(flavour, instance, args, kwargs)
        if plan is None:
            return wrapped(*args, **kwargs)
        try:
            response = wrapped(*plan.args, **plan.kwargs)
        except AuthError as exc:
            if plan.signed:
                _report_failure(plan.route, exc)
            raise
        return _sent(plan, response)

    async def asend(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        plan = _plan_httpx(flavour, instance, args, kwargs)
        if plan is None:
            return await wrapped(*args, **kwargs)
        try:
            response = await wrapped(*plan.args, **plan.kwargs)
        except AuthError as exc:
            if plan.signed:
                _report_failure(plan.route, exc)
            raise
        return _sent(plan, response)

    return send, asend


def _targets(flavour: _Flavour) -> list[tuple[type, str, Any]]:
    send, asend = _httpx_wrappers(flavour)
    return [(flavour.module.Client, "send", send), (flavour.module.AsyncClient, "send", asend)]


_TARGETS: tuple[tuple[type, str, Any], ...] = (
    (requests.Session, "request", _requests_request),
    (requests.Session, "send", _requests_send),
    *_targets(_Flavour(httpx)),
)


def _is_httpx_fork(module: ModuleType) -> bool:
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


def _wrap(targets: list[tuple[type, str, Any]] | tuple[tuple[type, str, Any], ...]) -> None:
    for owner, name, wrapper in targets:
        if (owner, name) not in _ORIGINALS:
            original = owner.__dict__[name]
            _ORIGINALS[(owner, name)] = original
            setattr(owner, name, wrapt.FunctionWrapper(original, wrapper))


def _patch_fork(module: ModuleType) -> None:
    """Post-import hook: wrap a fork's clients as httpx's are, while a patch is in place."""
    with _LOCK:
        _FORK_HOOKS.discard(module.__name__)  # wrapt runs a hook once: the next patch() renews it
        if not _ORIGINALS:  # imported after unpatch()
            return
        if not _is_httpx_fork(module):
            logger.warning("%s does not have httpx's API; its calls get no tokens", module.__name__)
            return
        if (module.Client, "send") in _ORIGINALS:
            return
        try:
            targets = _targets(_Flavour(module))
        except Exception as exc:  # a failing hook would fail the program's import
            logger.warning(
                "%s looks like httpx but cannot be patched (%s); its calls get no tokens",
                module.__name__,
                type(exc).__name__,
            )
            return
        _wrap(targets)
        logger.debug("%s patched as httpx is", module.__name__)


# --- the public face -------------------------------------------------------------------------


class Patch:
    """What `patch()` returns: `with renewauth.patch({...}):` unpatches on exit."""

    def __enter__(self) -> Patch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        unpatch()


def patch(
    routes: Mapping[str, TokenAuth],
    *,
    existing_bearer: ExistingBearer = DEFAULT_EXISTING_BEARER,
    explain: bool = False,
) -> Patch:
    """Attach auth objects to every `requests` and `httpx` call under the given URL prefixes.

    A request is signed when, after the caller's own auth has run, it carries no
    `Authorization` header; one with another scheme (Basic, Digest, …) is left alone.
    Patching again adds to (or replaces, for the same prefix) the routes already in place;
    it never wraps twice. Thread-safe. httpx forks in `HTTPX_FORKS` are patched too, now or
    when they are imported.

    Args:
        routes: URL prefix → auth object (any renewauth auth class).
        existing_bearer: what to do with a `Bearer` token the program sends itself:
            `"keep-until-401"` (send it until the API rejects it, then resend once with the
            route's token and use that one from then on), `"keep"` (never replace it) or
            `"replace"` (always send the route's token; right for a stale token pasted into
            a script, wrong for an SDK that manages its own). A WARNING, once per route and
            origin, says which applies.
        explain: log at INFO, once per origin and reason, why a request was signed or left
            alone (the same lines are at DEBUG otherwise).

    Returns:
        A context manager that calls `unpatch()` on exit.

    Raises:
        ConfigurationError: a prefix that is not an absolute http(s) URL, a value that is
            not a renewauth auth object, or an unknown `existing_bearer`.

    .. versionchanged:: 0.2
       `existing_bearer` and `explain`; a no-op auth of the caller's no longer stops signing.
    """
    mode = _check_existing_bearer(existing_bearer, "patch():")
    return _install([_route(prefix, auth, mode) for prefix, auth in routes.items()], explain)


def _install(new_routes: list[_Route], explain: bool) -> Patch:
    global _ROUTES, _EXPLAIN  # noqa: PLW0603 - the one table every wrapper reads
    with _LOCK:
        kept = [
            route
            for route in _ROUTES
            if all((route.origin, route.path) != (new.origin, new.path) for new in new_routes)
        ]
        _ROUTES = tuple(sorted([*kept, *new_routes], key=lambda route: -len(route.path)))
        _EXPLAIN = _EXPLAIN or bool(explain)
        _wrap(_TARGETS)
        for name in HTTPX_FORKS:
            if name in sys.modules:
                _patch_fork(sys.modules[name])
            elif name not in _FORK_HOOKS:
                _FORK_HOOKS.add(name)
                wrapt.register_post_import_hook(_patch_fork, name)
    return Patch()


def unpatch() -> None:
    """Remove every route and restore the original methods (the very same objects)."""
    global _ROUTES, _EXPLAIN  # noqa: PLW0603
    with _LOCK:
        for (owner, name), original in _ORIGINALS.items():
            setattr(owner, name, original)
        _ORIGINALS.clear()
        _ROUTES = ()
        _EXPLAIN = False
        _EXPLAINED.clear()


def patch_from_config(path: str, *, explain: bool = False) -> Patch:
    """`patch()` with the prefixes, auth objects and `existing_bearer` of a configuration
    file's entries.

    Entries share a `FileStore` unless they name another store, so every process that
    `renewauth run` starts makes one renewal between them.

    Raises:
        ConfigurationError: the file is missing, unreadable or wrong; the message says where.
    """
    from .config import load_config

    entries = load_config(path, default_store="file")
    return _install(
        [
            _route(
                prefix,
                entry.auth,
                entry.existing_bearer,
                label=f"[auth.{entry.name}]",
                setting=f"existing_bearer = '{{mode}}' in [auth.{entry.name}]",
            )
            for entry in entries.values()
            for prefix in entry.prefixes
        ],
        explain,
    )
