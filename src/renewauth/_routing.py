"""Retrofit's routes: which auth object serves which URL prefix, and what a route may be.

`config` checks a file's `prefixes` and `existing_bearer` with the same rules that `patch()`
applies, and `retrofit` matches every request against the one `RouteTable` of the process,
`TABLE`. Nothing here patches, sends or logs; `config` and `retrofit` both import this module
and neither imports the other for it.

A prefix matches URLs with the same scheme, host and port whose path starts at a segment
boundary (`https://api.example.com/v1/` matches `/v1/x` and `/v1`, not `/v10`); the longest
matching prefix wins.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast, get_args
from urllib.parse import SplitResult, urlsplit

from ._urls import origin_of
from .auth import TokenAuth

__all__ = [
    "DEFAULT_EXISTING_BEARER",
    "EXISTING_BEARER_CHOICES",
    "TABLE",
    "ExistingBearer",
    "Route",
    "RouteState",
    "RouteTable",
    "existing_bearer_of",
    "prefix_parts",
]

ExistingBearer = Literal["replace", "keep", "keep-until-401"]
#: Never changes the principal an API sees while the API accepts the program's own token,
#: and still rescues a stale token pasted into a legacy script (the API rejects it).
DEFAULT_EXISTING_BEARER: ExistingBearer = "keep-until-401"
EXISTING_BEARER_CHOICES: tuple[str, ...] = get_args(ExistingBearer)

_MAX_REMEMBERED = 4096  # explained (origin, reason) pairs
_MAX_REJECTED = 64  # rejected tokens per route


def existing_bearer_of(value: object) -> ExistingBearer | None:
    """`value` if it is one of the `existing_bearer` choices, else None (the caller says
    where the value came from in its error)."""
    return cast(ExistingBearer, value) if value in EXISTING_BEARER_CHOICES else None


def prefix_parts(prefix: object) -> SplitResult | None:
    """The parts of `prefix` if it is an absolute http(s) URL with a host, else None."""
    if not isinstance(prefix, str):
        return None
    try:
        parts = urlsplit(prefix)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return None
    return parts if valid else None


class RouteState:
    """What a route remembers between requests: warnings given, tokens the API rejected
    (as digests, never the token), and the failure last reported at ERROR."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warned: set[tuple[str, str]] = set()
        self.rejected: dict[bytes, None] = {}  # insertion-ordered: the oldest goes first
        self.failure: tuple[str, str] | None = None

    def first_time(self, origin: str, kind: str) -> bool:
        """Whether a warning of `kind` about `origin` is due: True once, then False."""
        with self.lock:
            if (origin, kind) in self.warned:
                return False
            self.warned.add((origin, kind))
            return True

    def reject(self, authorization: str) -> None:
        """Remember that the API rejected this header value."""
        with self.lock:
            self.rejected[_digest(authorization)] = None
            while len(self.rejected) > _MAX_REJECTED:
                del self.rejected[next(iter(self.rejected))]

    def was_rejected(self, authorization: str) -> bool:
        """Whether the API rejected this header value before."""
        return bool(self.rejected) and _digest(authorization) in self.rejected


def _digest(authorization: str) -> bytes:
    return hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Route:
    """One prefix and the auth object that serves it."""

    origin: str
    path: str  # without a trailing slash ("" for the whole origin)
    prefix: str  # as log lines show it: origin and path
    auth: TokenAuth
    existing_bearer: ExistingBearer
    label: str  # "[auth.NAME]" for a configuration entry, "prefix '…'" for patch()
    setting: str  # how to choose another existing_bearer, in the route's own terms
    state: RouteState = field(default_factory=RouteState, compare=False)

    @classmethod
    def build(
        cls,
        prefix: str,
        parts: SplitResult,
        auth: TokenAuth,
        existing_bearer: ExistingBearer,
        *,
        label: str | None,
        setting: str | None,
    ) -> Route:
        """The route of a prefix already checked by `prefix_parts` (which gave `parts`)."""
        shown = origin_of(prefix) + parts.path  # for log lines: no user:password, no query
        return cls(
            origin=origin_of(prefix),
            path=parts.path.rstrip("/"),
            prefix=shown,
            auth=auth,
            existing_bearer=existing_bearer,
            label=label or f"prefix '{shown}'",
            setting=setting or "patch(…, existing_bearer='{mode}')",
        )

    def covers(self, path: str) -> bool:
        """Whether `path`, on this route's origin, is under its prefix."""
        return not self.path or path == self.path or path.startswith(self.path + "/")


class RouteTable:
    """The routes in place, longest path first, and the explanations given: what every
    retrofit wrapper reads. `routes` is a tuple swapped whole, so requests read it without
    the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: tuple[Route, ...] = ()
        self.explain = False  # explanations at INFO (else at DEBUG)
        self.explained: set[tuple[str, str]] = set()

    def route_for(self, url: str) -> Route | None:
        """The route of the longest prefix that `url` falls under, or `None`."""
        routes = self.routes
        if not routes:
            return None
        origin = origin_of(url)
        path = urlsplit(url).path
        for route in routes:
            if route.origin == origin and route.covers(path):
                return route
        return None

    def add(self, routes: Iterable[Route], *, explain: bool) -> None:
        """Put `routes` in place, each replacing the route of the same prefix; `explain`
        turns explanations to INFO (and stays on until `clear`)."""
        new = list(routes)
        with self.lock:
            kept = [
                route
                for route in self.routes
                if all((route.origin, route.path) != (other.origin, other.path) for other in new)
            ]
            self.routes = tuple(sorted([*kept, *new], key=lambda route: -len(route.path)))
            self.explain = self.explain or bool(explain)

    def clear(self) -> None:
        """No routes, nothing explained."""
        with self.lock:
            self.routes = ()
            self.explain = False
            self.explained.clear()

    def first_explanation(self, origin: str, reason: str) -> bool:
        """Whether `reason` is due for `origin`: True once per pair, for a bounded number of
        pairs (a program calling many hosts must not grow this without end)."""
        if (origin, reason) in self.explained:
            return False
        with self.lock:
            if (origin, reason) in self.explained or len(self.explained) >= _MAX_REMEMBERED:
                return False
            self.explained.add((origin, reason))
        return True


#: The routes of this process: `patch()` fills it, every wrapper reads it.
TABLE = RouteTable()
