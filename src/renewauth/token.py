"""The `Token` value: what a token endpoint granted, frozen.

A `Token` never changes once built; a rotated refresh token or an invalidation makes a new one
with `dataclasses.replace`. That is what lets the manager ask "is the token that got the 401
still the current one?" with a plain comparison. Times are seconds on the manager's clock
(`time.time` unless one is injected), so a token read from a shared store means the same in
every process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from types import MappingProxyType

__all__ = ["Token"]

_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """An access token, with what is known about its lifetime and its refresh token.

    Args:
        access_token: the value sent after the token type in the `Authorization` header.
        token_type: the scheme, `"Bearer"` in practice; compared case-insensitively.
        expires_at: when the access token expires (seconds, the manager's clock), or `None`
            when nothing says so: such a token is used until the API rejects it.
        issued_at: when the request that produced it was sent; the start of its lifetime.
        refresh_token: the token that renews it, if the server issued one.
        refresh_expires_at: when the refresh token expires, or `None` when the server stated
            no expiry (Keycloak's `refresh_expires_in: 0`, or nothing at all).
        refresh_used_at: when the refresh token was last used or issued (the request's send
            time), or `None` when unknown: the start of its idle window.
        refresh_seen_at: when this refresh token was first seen (the send time of the call
            that issued it), or `None` when unknown: the start of a life that ends at a fixed
            time, however often the token is used meanwhile.
        sequence: how many renewals lead from the first token of this credential's chain to
            this one (the manager counts them). It orders the tokens of one credential
            wherever they were kept (a store, a process, a spare copy), whatever the clocks
            of the machines involved say.
        scope: the granted scope as the server wrote it, if it did.
        api_origin: the origin the server assigned for API calls (Vendorlink names another
            server at login), or `None`: requests to the configured origin go there instead.
        raw: every field of the token response, read-only (it may hold secrets: never logged).

    Raises:
        ValueError: an empty access token or token type, or an expiry before the issue time.
    """

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    issued_at: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    refresh_used_at: float | None = None
    refresh_seen_at: float | None = None
    scope: str | None = None
    api_origin: str | None = None
    raw: Mapping[str, object] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    sequence: int = field(default=0, compare=False)
    authorization: str = field(init=False, repr=False, compare=False)
    """The `Authorization` header value, built once: the hot path only reads it."""

    def __post_init__(self) -> None:
        if not self.access_token:
            raise ValueError("Token.access_token must not be empty")
        if not self.token_type or not self.token_type.strip():
            raise ValueError("Token.token_type must not be empty")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise ValueError("Token.sequence must be a whole number")
        if (
            self.expires_at is not None
            and self.issued_at is not None
            and self.expires_at < self.issued_at
        ):
            raise ValueError("Token.expires_at must not be earlier than Token.issued_at")
        if not isinstance(self.raw, MappingProxyType):
            object.__setattr__(self, "raw", MappingProxyType(dict(self.raw)))
        # RFC 6750 names the scheme "Bearer"; servers write "bearer" too (RFC 6749 §5.1 says
        # token_type is case-insensitive), and some APIs reject the lower-case scheme.
        scheme = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        object.__setattr__(self, "authorization", f"{scheme} {self.access_token}")

    @property
    def lifetime(self) -> float | None:
        """Seconds from issue to expiry, or `None` when either end is unknown."""
        if self.expires_at is None or self.issued_at is None:
            return None
        return self.expires_at - self.issued_at

    def is_expired(self, now: float) -> bool:
        """Whether the access token is past its expiry at `now` (never, if it has none)."""
        return self.expires_at is not None and now >= self.expires_at

    def renew_at(self, leeway: float) -> float:
        """When renewal should start: `leeway` seconds before expiry, or at half its life.

        A token that lives less than `2 × leeway` renews at half its life, so a short-lived
        token is still used for a while before it is replaced. A token without an expiry is
        never renewed proactively (`inf`).
        """
        if self.expires_at is None:
            return math.inf
        lifetime = self.lifetime
        if lifetime is not None and lifetime < 2 * leeway:
            return self.expires_at - lifetime / 2
        return self.expires_at - leeway

    def refresh_ends_at(self, idle_timeout: float | None = None) -> float | None:
        """When the refresh token stops working, as far as anyone said; `None` if unknown.

        The earlier of its stated expiry and, with `idle_timeout` (seconds a refresh token
        survives unused), its last use (or issue) plus that timeout.

        .. versionadded:: 0.2
        """
        if not self.refresh_token:
            return None
        end = self.refresh_expires_at
        start = self.refresh_used_at if self.refresh_used_at is not None else self.issued_at
        if idle_timeout is not None and start is not None:
            idle_end = start + idle_timeout
            end = idle_end if end is None else min(end, idle_end)
        return end

    def is_same_grant(self, other: Token | None) -> bool:
        """Whether `other` carries the same access token (so it is the same grant)."""
        return other is not None and other.access_token == self.access_token

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping for stores that serialise (holds secrets: store it 0600)."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "refresh_token": self.refresh_token,
            "refresh_expires_at": self.refresh_expires_at,
            "refresh_used_at": self.refresh_used_at,
            "refresh_seen_at": self.refresh_seen_at,
            "scope": self.scope,
            "api_origin": self.api_origin,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Token:
        """Rebuild a token written by `to_dict`.

        Raises:
            ValueError: a field is missing or of the wrong type.
        """

        def text(name: str, *, required: bool = False) -> str | None:
            value = data.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise ValueError(f"stored token field {name!r} is not a string")
            return value

        def number(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"stored token field {name!r} is not a number")
            try:
                number = float(value)
            except OverflowError:
                raise ValueError(f"stored token field {name!r} is out of range") from None
            if not math.isfinite(number):
                raise ValueError(f"stored token field {name!r} is not finite")
            return number

        sequence = data.get("sequence", 0)
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
            raise ValueError("stored token field 'sequence' is not a whole number")
        return cls(
            access_token=text("access_token", required=True) or "",
            token_type=text("token_type") or "Bearer",
            expires_at=number("expires_at"),
            issued_at=number("issued_at"),
            refresh_token=text("refresh_token"),
            refresh_expires_at=number("refresh_expires_at"),
            refresh_used_at=number("refresh_used_at"),
            refresh_seen_at=number("refresh_seen_at"),
            scope=text("scope"),
            api_origin=text("api_origin"),
            sequence=sequence,
        )

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled and deep-copied through the constructor, from every field it takes (those
        added later too): pickle refuses the read-only `raw`, which travels as a plain dict
        and is made read-only again by `__post_init__`, as is everything derived."""
        values = {item.name: getattr(self, item.name) for item in fields(self) if item.init}
        for name, value in values.items():
            if isinstance(value, MappingProxyType):
                values[name] = dict(value)
        return partial(type(self), **values), ()
