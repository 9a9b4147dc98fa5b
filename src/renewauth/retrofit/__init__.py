"""Retrofit: renewing tokens for `requests`, `httpx`, `httpx2` and `aiohttp` calls in code that
cannot change.

`patch({prefix: auth, …})` wraps, with `wrapt`, the one method each library sends through:
`requests.Session.send` (module-level functions and every session, even one made before the
patch, and every subclass) and `httpx.Client.send` / `httpx.AsyncClient.send` (module-level
functions, every client), the same methods of an httpx fork with httpx's API (`httpx2`), and
`aiohttp.ClientSession._request` (every session; aiohttp >= 3.12), these last two as soon as
the program imports them. A request whose URL falls under a prefix is sent with that prefix's
auth object, with renewal before expiry and after a 401 exactly as with `session.auth`.

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

The parts, one job each: `renewauth._routing` holds the route table (`config` checks prefixes
with it too); `_gate` runs the one sequence every request goes through (route → facts →
`_plan.plan`, which decides without I/O → explain → warn); `_diagnostics` writes every line;
`_requests`, `_httpx` (httpx and its forks) and `_aiohttp` are the adapters: each shows its
library's request to the gate and carries out the verdict. This module wraps their methods
and holds the public face. A new HTTP library is one more adapter module with a `targets()`,
listed in `_TARGETS`, or, for an optional library, in `_LATER`: its methods are wrapped by a
post-import hook once the program imports it, and the library is never imported here.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from types import ModuleType, TracebackType
from typing import Any

import httpx
import wrapt

from .._routing import (
    DEFAULT_EXISTING_BEARER,
    EXISTING_BEARER_CHOICES,
    TABLE,
    ExistingBearer,
    Route,
    existing_bearer_of,
    prefix_parts,
)
from ..auth import TokenAuth
from ..errors import ConfigurationError
from ..transports.httpx import HTTPX_FORKS  # patched as httpx is, once imported
from . import _aiohttp, _httpx, _requests
from ._diagnostics import logger

__all__ = [
    "DEFAULT_EXISTING_BEARER",
    "EXISTING_BEARER_CHOICES",
    "HTTPX_FORKS",
    "PATCHED_ON_IMPORT",
    "ExistingBearer",
    "Patch",
    "patch",
    "patch_from_config",
    "unpatch",
]

#: The optional libraries, patched once the program imports them (never imported here). The
#: `renewauth run` bootstrap keeps the same list: it must not import renewauth early.
PATCHED_ON_IMPORT = (*HTTPX_FORKS, "aiohttp")


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
    """Attach auth objects to every `requests`, `httpx`, `httpx2` and `aiohttp` call under the
    given URL prefixes.

    A request is signed when, after the caller's own auth has run, it carries no
    `Authorization` header; one with another scheme (Basic, Digest, …) is left alone.
    Patching again adds to (or replaces, for the same prefix) the routes already in place;
    it never wraps twice. Thread-safe. The libraries in `PATCHED_ON_IMPORT` (httpx forks,
    aiohttp >= 3.12) are patched too, now or when they are imported.

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
       `existing_bearer` and `explain`; a no-op auth of the caller's no longer stops signing;
       aiohttp's `ClientSession` is patched too.
    """
    mode = existing_bearer_of(existing_bearer)
    if mode is None:
        raise ConfigurationError(
            "patch(): existing_bearer must be one of 'keep-until-401' (the default), 'keep' "
            f"or 'replace', got {existing_bearer!r}"
        )
    return _install([_route(prefix, auth, mode) for prefix, auth in routes.items()], explain)


def unpatch() -> None:
    """Remove every route and restore the original methods (the very same objects)."""
    with _WRAPPING.lock:
        _WRAPPING.restore()
        TABLE.clear()


def patch_from_config(path: str, *, explain: bool = False) -> Patch:
    """`patch()` with the prefixes, auth objects and `existing_bearer` of a configuration
    file's entries.

    Entries share a `FileStore` unless they name another store, so every process that
    `renewauth run` starts makes one renewal between them.

    Raises:
        ConfigurationError: the file is missing, unreadable or wrong; the message says where.
    """
    from ..config import load_config

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


# --- routes and wrapped methods ----------------------------------------------------------------


def _route(
    prefix: str,
    auth: object,
    existing_bearer: ExistingBearer,
    *,
    label: str | None = None,
    setting: str | None = None,
) -> Route:
    parts = prefix_parts(prefix)
    if parts is None:
        raise ConfigurationError(
            f"patch() prefix {prefix!r} must be an absolute http(s) URL such as "
            "'https://api.example.com/v1/'"
        )
    if not isinstance(auth, TokenAuth):
        raise ConfigurationError(
            f"patch() needs renewauth auth objects as values; {prefix!r} maps to "
            f"{type(auth).__name__}"
        )
    return Route.build(prefix, parts, auth, existing_bearer, label=label, setting=setting)


def _install(new_routes: list[Route], explain: bool) -> Patch:
    with _WRAPPING.lock:
        TABLE.add(new_routes, explain=explain)
        _WRAPPING.wrap(_TARGETS)
        for name, hook in _LATER.items():
            if name in sys.modules:
                hook(sys.modules[name])
            elif name not in _WRAPPING.awaited:
                _WRAPPING.awaited.add(name)
                wrapt.register_post_import_hook(hook, name)
    return Patch()


_Target = tuple[type, str, Any]  # a class, the name of the method to wrap, the wrapper
# Every library's adapter names what it wraps; a new library is one more adapter here.
_TARGETS: tuple[_Target, ...] = (*_requests.targets(), *_httpx.targets(httpx))


class _Wrapping:
    """The methods wrapped, with their originals, and the libraries whose import is awaited."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # reentrant: a post-import hook may fire inside patch()
        self.originals: dict[tuple[type, str], Any] = {}
        self.awaited: set[str] = set()

    def wrap(self, targets: Iterable[_Target]) -> None:
        """Wrap each target's method, once."""
        for owner, name, wrapper in targets:
            if (owner, name) not in self.originals:
                original = owner.__dict__[name]
                self.originals[(owner, name)] = original
                setattr(owner, name, wrapt.FunctionWrapper(original, wrapper))

    def restore(self) -> None:
        """Put every original method back (the very same objects)."""
        for (owner, name), original in self.originals.items():
            setattr(owner, name, original)
        self.originals.clear()


_WRAPPING = _Wrapping()


def _patch_fork(module: ModuleType) -> None:
    """Post-import hook: wrap a fork's clients as httpx's are, while a patch is in place."""
    with _WRAPPING.lock:
        # wrapt runs a hook once: the next patch() renews it
        _WRAPPING.awaited.discard(module.__name__)
        if not _WRAPPING.originals:  # imported after unpatch()
            return
        if not _httpx.is_httpx_fork(module):
            logger.warning("%s does not have httpx's API; its calls get no tokens", module.__name__)
            return
        if (module.Client, "send") in _WRAPPING.originals:
            return
        try:
            targets = _httpx.targets(module)
        except Exception as exc:  # a failing hook would fail the program's import
            logger.warning(
                "%s looks like httpx but cannot be patched (%s); its calls get no tokens",
                module.__name__,
                type(exc).__name__,
            )
            return
        _WRAPPING.wrap(targets)
        logger.debug("%s patched as httpx is", module.__name__)


def _patch_aiohttp(module: ModuleType) -> None:
    """Post-import hook: wrap aiohttp's `ClientSession`, while a patch is in place."""
    with _WRAPPING.lock:
        _WRAPPING.awaited.discard(module.__name__)  # as for a fork: the next patch() renews it
        if not _WRAPPING.originals or (module.ClientSession, "_request") in _WRAPPING.originals:
            return
        try:
            targets = _aiohttp.targets(module)
        except _aiohttp.Unsupported as exc:
            logger.warning("%s; its calls get no tokens (pip install 'aiohttp>=3.12')", exc)
            return
        except Exception as exc:  # a failing hook would fail the program's import
            logger.warning(
                "aiohttp cannot be patched (%s); its calls get no tokens", type(exc).__name__
            )
            return
        _WRAPPING.wrap(targets)
        logger.debug("aiohttp patched")


# The optional libraries, each patched by its hook once imported.
_LATER = {**dict.fromkeys(HTTPX_FORKS, _patch_fork), "aiohttp": _patch_aiohttp}
