"""Retrofit: renewing tokens for `requests` and `httpx` calls in code that cannot change.

`patch({prefix: auth, …})` wraps, with `wrapt`, the one method each library sends through:
`requests.Session.send` (module-level functions and every session, even one made before the
patch) and `httpx.Client.send` / `httpx.AsyncClient.send` (module-level functions, every
client). A request whose URL falls under a prefix is sent with that prefix's auth object, with
renewal before expiry and after a 401 exactly as with `session.auth`.

Left alone, by rule:
- a call that brings its own auth (`auth=`, `session.auth`, `httpx.Client(auth=…)`);
- a request with an `Authorization` header other than `Bearer …` (Basic, Digest, an API
  scheme); a `Bearer …` header is taken for a stale token pasted into legacy code and is
  replaced;
- every URL that no prefix matches, and renewauth's own token requests.

A prefix matches URLs with the same scheme, host and port whose path starts at a segment
boundary (`https://api.example.com/v1/` matches `/v1/x` and `/v1`, not `/v10`); the longest
matching prefix wins.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
import wrapt

from ._urls import origin_of
from .auth import TokenAuth
from .errors import ConfigurationError
from .transports.httpx import TokenClients

__all__ = ["Patch", "patch", "patch_from_config", "unpatch"]


@dataclass(frozen=True, slots=True)
class _Route:
    origin: str
    path: str  # without a trailing slash ("" for the whole origin)
    auth: TokenAuth


_LOCK = threading.Lock()
_ROUTES: tuple[_Route, ...] = ()  # longest path first; swapped whole, read without a lock
_ORIGINALS: dict[tuple[type, str], Any] = {}
# Set while `requests.Session.request` runs a call that brought its own auth.
_OWN_AUTH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "renewauth_own_auth", default=False
)


def _route(prefix: str, auth: object) -> _Route:
    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"patch() prefix {prefix!r} must be an absolute http(s) URL such as "
            "'https://api.example.com/v1/'"
        )
    if not isinstance(auth, TokenAuth):
        raise ConfigurationError(
            f"patch() needs renewauth auth objects as values; {prefix!r} maps to "
            f"{type(auth).__name__}"
        )
    return _Route(origin_of(prefix), parts.path.rstrip("/"), auth)


def _auth_for(url: str) -> TokenAuth | None:
    """The auth object of the longest prefix that `url` falls under, or `None`."""
    routes = _ROUTES
    if not routes:
        return None
    origin = origin_of(url)
    path = urlsplit(url).path
    for route in routes:
        if route.origin == origin and (
            path == route.path or path.startswith(route.path + "/") or not route.path
        ):
            return route.auth
    return None


def _is_left_alone(authorization: str | None) -> bool:
    return authorization is not None and not authorization.lower().startswith("bearer ")


# --- the wrappers ----------------------------------------------------------------------------


def _requests_request(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # `auth` is the eighth positional parameter of Session.request.
    brings_auth = kwargs.get("auth") is not None or (len(args) > 7 and args[7] is not None)
    if not (brings_auth or instance.auth is not None):
        return wrapped(*args, **kwargs)
    token = _OWN_AUTH.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _OWN_AUTH.reset(token)


def _requests_send(
    wrapped: Any, instance: requests.Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request: requests.PreparedRequest = args[0] if args else kwargs["request"]
    auth = None if _OWN_AUTH.get() else _auth_for(request.url or "")
    if auth is not None and not _is_left_alone(request.headers.get("Authorization")):
        request.headers.pop("Authorization", None)
        auth(request)  # signs it and registers the 401 hook that send() dispatches
    return wrapped(*args, **kwargs)


def _httpx_send(
    wrapped: Any,
    instance: httpx.Client | httpx.AsyncClient,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    request: httpx.Request = args[0] if args else kwargs["request"]
    if (
        isinstance(instance, TokenClients)  # renewauth's own token requests
        or instance.auth is not None
        # httpx's module functions pass `auth=None` down: that is no auth of their own.
        or kwargs.get("auth") not in (None, httpx.USE_CLIENT_DEFAULT)
        or _is_left_alone(request.headers.get("Authorization"))
    ):
        return wrapped(*args, **kwargs)
    auth = _auth_for(str(request.url))
    if auth is None:
        return wrapped(*args, **kwargs)
    request.headers.pop("Authorization", None)
    return wrapped(*args, **{**kwargs, "auth": auth})


_TARGETS: tuple[tuple[type, str, Any], ...] = (
    (requests.Session, "request", _requests_request),
    (requests.Session, "send", _requests_send),
    (httpx.Client, "send", _httpx_send),
    (httpx.AsyncClient, "send", _httpx_send),
)


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


def patch(routes: Mapping[str, TokenAuth]) -> Patch:
    """Attach auth objects to every `requests` and `httpx` call under the given URL prefixes.

    Patching again adds to (or replaces, for the same prefix) the routes already in place;
    it never wraps twice. Thread-safe.

    Args:
        routes: URL prefix → auth object (any renewauth auth class).

    Returns:
        A context manager that calls `unpatch()` on exit.

    Raises:
        ConfigurationError: a prefix that is not an absolute http(s) URL, or a value that is
            not a renewauth auth object.
    """
    global _ROUTES  # noqa: PLW0603 - the one table every wrapper reads
    new_routes = [_route(prefix, auth) for prefix, auth in routes.items()]
    with _LOCK:
        kept = [
            route
            for route in _ROUTES
            if all((route.origin, route.path) != (new.origin, new.path) for new in new_routes)
        ]
        _ROUTES = tuple(sorted([*kept, *new_routes], key=lambda route: -len(route.path)))
        for owner, name, wrapper in _TARGETS:
            if (owner, name) not in _ORIGINALS:
                original = owner.__dict__[name]
                _ORIGINALS[(owner, name)] = original
                setattr(owner, name, wrapt.FunctionWrapper(original, wrapper))
    return Patch()


def unpatch() -> None:
    """Remove every route and restore the original methods (the very same objects)."""
    global _ROUTES  # noqa: PLW0603
    with _LOCK:
        for (owner, name), original in _ORIGINALS.items():
            setattr(owner, name, original)
        _ORIGINALS.clear()
        _ROUTES = ()


def patch_from_config(path: str) -> Patch:
    """`patch()` with the prefixes and auth objects of a configuration file's entries.

    Entries share a `FileStore` unless they name another store, so every process that
    `renewauth run` starts makes one renewal between them.

    Raises:
        ConfigurationError: the file is missing, unreadable or wrong; the message says where.
    """
    from .config import load_config

    entries = load_config(path, default_store="file")
    return patch({prefix: entry.auth for entry in entries.values() for prefix in entry.prefixes})
