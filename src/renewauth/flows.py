"""Sans-IO grant flows: pure generators that say what to send to a token endpoint.

A flow yields a `TokenRequest`, receives the `TokenResponse` through `send()`, may yield again
(a refresh refused, then a password login) and returns the `Token`. Flows hold no lock, read
no clock and do no I/O: the manager drives them, and its drivers in `transports/` are the only
code that sends. That makes every flow testable by feeding it responses by hand.

Nothing here imports requests or httpx.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from ._urls import origin_of
from .token import Token

__all__ = [
    "ChainGrant",
    "Flow",
    "Grant",
    "RestartingChain",
    "RetryHint",
    "StaticGrant",
    "TokenRequest",
    "TokenResponse",
    "WrappingGrant",
    "chain_grant",
]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequest:
    """One HTTP request to a token endpoint, described but not sent.

    Args:
        url: the token endpoint.
        body: the encoded body (it holds credentials: never logged or shown).
        headers: request headers (may hold `Authorization: Basic …`: never shown).
        grant: the grant's name for logs and errors (`"password"`, `"refresh_token"`, …).
        method: the HTTP method, `POST` for every OAuth 2 grant.
        retryable: whether a 5xx or 429 answer is tried again before the flow sees it;
            `False` when the flow has a better fallback (Vendorlink: ExtendToken → Login).
        again: makes this request afresh for such a retry, when it carries something a
            server accepts only once or only briefly (a client assertion, a DPoP proof: each
            has a `jti` and an `iat`); without it the retry sends the same bytes.
    """

    url: str
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS, repr=False)
    grant: str = "unknown"
    method: str = "POST"
    retryable: bool = True
    again: Callable[[], TokenRequest] | None = field(default=None, repr=False, compare=False)

    @property
    def origin(self) -> str:
        """Scheme, host and port of the endpoint: the part that is safe to log."""
        return origin_of(self.url)

    def retry(self) -> TokenRequest:
        """The request to send when this one is tried again: made afresh, if it can be."""
        return self.again() if self.again is not None else self


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenResponse:
    """What a token endpoint answered, stamped by the driver with the times it saw.

    Args:
        status: the HTTP status code.
        headers: response headers, names in lower case.
        body: the raw body (holds tokens: never logged or shown).
        url: the URL the request went to.
        sent_at: clock time just before the request was sent; a token's life starts here.
        received_at: clock time the answer arrived.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS, repr=False)
    body: bytes = field(default=b"", repr=False)
    url: str = ""
    sent_at: float = 0.0
    received_at: float = 0.0

    @property
    def origin(self) -> str:
        """Scheme, host and port of the endpoint: the part that is safe to log."""
        return origin_of(self.url)

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (`""` if none was sent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json_object(self) -> Mapping[str, object] | None:
        """The body as a JSON object, or `None` if it is not one (HTML, garbage, a list)."""
        try:
            data = json.loads(self.body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        return data if isinstance(data, dict) else None


Flow = Generator[TokenRequest, TokenResponse, Token]
"""A grant in motion: yields requests, receives responses, returns the token."""


class Grant(Protocol):
    """What a provider gives the manager: where tokens come from and how to get one.

    Implementations are frozen values; `fetch` returns a fresh generator on every call.

    A grant may also define `retry_after(response) -> float | None`: how long a throttled
    token endpoint asked to wait when it says so in the body rather than in `Retry-After`
    (Shopware). It is optional, so it is described by `RetryHint`, not required here.
    """

    @property
    def token_url(self) -> str:
        """The token endpoint, checked for https and shown (as an origin) in errors."""
        ...

    @property
    def can_renew(self) -> bool:
        """Whether `fetch` can produce a new token (a static token cannot)."""
        ...

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What identifies these credentials: public parts, then secrets (hashed, never kept)."""
        ...

    def fetch(self, current: Token | None) -> Flow:
        """A flow that obtains a new token, renewing `current` when it can."""
        ...


@runtime_checkable
class RetryHint(Protocol):
    """The optional part of a `Grant`: a wait read from a throttled answer's body."""

    def retry_after(self, response: TokenResponse) -> float | None:
        """Seconds the endpoint asked to wait, or `None` if this answer does not say."""
        ...


@runtime_checkable
class ChainGrant(Protocol):
    """The optional part of a `Grant` whose only credential is the refresh token of its last
    token: its *chain* (`OAuth2RefreshToken`, a Keycloak technical user).

    Nothing in the configuration can start such a chain again once its newest refresh token
    is lost, so the manager keeps it durably (a store on disk by default, and a spare copy on
    this machine), never renews it without the store's lock, and pauses only the refresh
    token that the server refused, not a newer one of the same chain.
    """

    def presents(self, current: Token | None) -> str:
        """The refresh token that `fetch(current)` sends."""
        ...


@runtime_checkable
class RestartingChain(Protocol):
    """The optional part of a `ChainGrant` that a person can start again (a login): while
    `restarting()` is true, a renewal calls the token endpoint whatever the store holds, for
    its token replaces the chain instead of continuing it."""

    def restarting(self) -> bool:
        """Whether the next renewal starts the chain again."""
        ...


@runtime_checkable
class WrappingGrant(Protocol):
    """The optional part of a `Grant` that adds something to another grant (discovery, DPoP):
    `wrapped` is that grant, so that what it is (a `ChainGrant`) can be seen through it."""

    @property
    def wrapped(self) -> Grant:
        """The grant this one wraps."""
        ...


def chain_grant(grant: Grant) -> ChainGrant | None:
    """`grant` (or the grant it wraps) when its chain cannot be made again, else `None`."""
    for _ in range(8):  # wrappers nest a few deep at most (discovery inside DPoP)
        if isinstance(grant, ChainGrant):
            return grant
        if not isinstance(grant, WrappingGrant):
            return None
        grant = grant.wrapped
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticGrant:
    """A token that is given, never fetched: `BearerToken`'s grant."""

    token: Token = field(repr=False)
    token_url: str = "static:"
    can_renew: bool = False

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("static",), (self.token.access_token,)

    def fetch(self, current: Token | None) -> Flow:
        return self.token
        yield  # a generator that yields nothing and returns the token at once
