"""The time rules of a token: when it is renewed, when it is spent, when its refresh token ends.

Pure functions of tokens and instants: no I/O, no clock of their own (the caller passes
`now`), no state. The manager and the renewal steps ask these; `renewauth check` and
`keepalive` too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import cast

from . import events
from .token import Token

__all__ = [
    "ARRIVAL_MARGIN",
    "KEEPALIVE_SHARE",
    "REFRESH_WARNING_MAX",
    "REFRESH_WARNING_SHARE",
    "RefreshWarning",
    "continued",
    "departing_token",
    "duration",
    "further_along",
    "is_spent",
    "keepalive_due",
    "needs_renewal",
    "refresh_warning_at",
    "renew_at",
    "spent_at",
]

logger = logging.getLogger("renewauth.manager")

ARRIVAL_MARGIN = 0.5  # seconds a token must have left when a request leaves (at most)
_SAME_END = 2.0  # seconds two stated refresh-token ends may differ and still be one end
REFRESH_WARNING_SHARE = 0.2
"""A refresh token is warned about in the last this share of its life..."""
REFRESH_WARNING_MAX = 7 * 86400.0
"""...or in its last these seconds (7 days), whichever window is shorter."""
KEEPALIVE_SHARE = 0.5
"""`keepalive()` renews once this share of a refresh token's life (from its last use to its
end) has passed."""


def spent_at(token: Token) -> float:
    """When a token stops being sent: its expiry, less the time a request needs to arrive.

    A request that leaves with a token whose last milliseconds are running reaches the API
    with an expired one. The margin is `ARRIVAL_MARGIN`, or a tenth of a short token's life.
    """
    if token.expires_at is None:
        return math.inf
    lifetime = token.lifetime
    margin = ARRIVAL_MARGIN if lifetime is None else min(ARRIVAL_MARGIN, lifetime / 10)
    return token.expires_at - margin


def is_spent(token: Token, now: float) -> bool:
    """Whether `token` is too close to its expiry to be sent at `now`."""
    return now >= spent_at(token)


def renew_at(token: Token, leeway: float, *, renewed_elsewhere: bool = False) -> float:
    """When the soft window of `token` opens: `leeway` before expiry, and never after it is
    spent.

    For a process that did not renew `token` itself (another process of a shared store did,
    `renewed_elsewhere`), halfway into that window: the process that renewed it renews it
    first, and the others then find its successor in the store for one read each, instead of
    all trying the lock at once. Should it fail (or be gone), they renew with half the soft
    window left.
    """
    opens = min(token.renew_at(leeway), spent_at(token))
    if renewed_elsewhere and math.isfinite(opens):
        return opens + (spent_at(token) - opens) / 2
    return opens


def _refresh_life(
    token: Token, idle_timeout: float | None, *, whole: bool = False
) -> tuple[float, float] | None:
    """A refresh token's life, `(start, end)`; `None` if its end is unknown.

    The end is the earlier of its stated expiry and its idle end (last use plus
    `idle_timeout`). An idle end starts its life at the last use; a stated end, with `whole`,
    when the refresh token was first seen: a server that keeps one refresh token until a
    fixed time says so by counting `refresh_expires_in` down, and each use must not make
    that life look new again.
    """
    end = token.refresh_ends_at(idle_timeout)
    if end is None:
        return None
    start = token.refresh_used_at if token.refresh_used_at is not None else token.issued_at
    stated = token.refresh_expires_at
    if whole and stated is not None and end >= stated and token.refresh_seen_at is not None:
        start = token.refresh_seen_at
    return (end if start is None else min(start, end)), end


def continued(token: Token, base: Token | None) -> Token:
    """`token`, just fetched by renewing `base`, placed on its chain.

    Its `sequence` is one past `base`'s. Its refresh token's `refresh_seen_at` is kept from
    `base` when it is the same refresh token, or one that ends when `base`'s did (a session
    that ends at a fixed time, its refresh tokens rotating); else it is new now.
    """
    seen: float | None = None
    if token.refresh_token is not None:
        seen = token.refresh_used_at if token.refresh_used_at is not None else token.issued_at
        if base is not None and base.refresh_token is not None and base.refresh_seen_at:
            same_end = (
                token.refresh_expires_at is not None
                and base.refresh_expires_at is not None
                and abs(token.refresh_expires_at - base.refresh_expires_at) <= _SAME_END
            )
            if token.refresh_token == base.refresh_token or same_end:
                seen = base.refresh_seen_at
    return replace(
        token, sequence=(base.sequence if base is not None else 0) + 1, refresh_seen_at=seen
    )


def refresh_warning_at(token: Token, idle_timeout: float | None) -> float | None:
    """When the warning window of `token`'s refresh token opens, or `None` if it never does:
    the last `REFRESH_WARNING_SHARE` of its life (counted from when it was first seen, when
    it ends at a stated time), or its last `REFRESH_WARNING_MAX` seconds, whichever begins
    later."""
    life = _refresh_life(token, idle_timeout, whole=True)
    if life is None:
        return None
    start, end = life
    return end - min(REFRESH_WARNING_SHARE * (end - start), REFRESH_WARNING_MAX)


def keepalive_due(token: Token | None, idle_timeout: float | None, now: float) -> bool:
    """Whether `keepalive()` renews: no token yet, or `KEEPALIVE_SHARE` of its refresh
    token's life has passed. A token without a refresh token, or whose refresh token has no
    known end, is left alone."""
    if token is None:
        return True
    life = _refresh_life(token, idle_timeout)
    if life is None:
        return False
    start, end = life
    return now >= start + KEEPALIVE_SHARE * (end - start)


def departing_token(signed: Token, cached: Token | None, now: float) -> Token | None:
    """What a leaving request can take without I/O: the cached token while it can be sent,
    else `signed` while it can, else `None` (only a renewal gives one)."""
    if cached is not None and not is_spent(cached, now):
        return cached
    return None if is_spent(signed, now) else signed


def needs_renewal(current: Token | None, stale: Token | None, now: float) -> bool:
    """Whether the leader must call the token endpoint, given what the store holds now.

    `stale` is the token that made the caller ask (expired, in its soft window, or rejected
    by the API). If the store holds anything else that is still valid, someone renewed while
    the caller queued for the lock: adopt that instead of renewing twice.
    """
    if current is None or is_spent(current, now):
        return True
    return stale is not None and current.is_same_grant(stale)


def further_along(refused: Token | None, *found: Token | None) -> Token | None:
    """The token of `found` furthest along the chain past `refused` (which the server
    refused), with a refresh token to continue from; `None` if none is."""
    base = -1 if refused is None else refused.sequence
    best: Token | None = None
    for candidate in found:
        if (
            candidate is not None
            and candidate.refresh_token is not None
            and candidate.sequence > base
            and (best is None or candidate.sequence > best.sequence)
        ):
            best = candidate
    return best


def duration(seconds: float) -> str:
    """Seconds as a short human duration: "3 d 4 h", "12 min", "40 s"."""
    if seconds >= 86400:
        return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{seconds:.0f} s"


class RefreshWarning:
    """One WARNING per refresh token once it is inside its warning window.

    Asked only when a token is adopted, kept alive or checked: never on the hot path.
    """

    __slots__ = ("key", "on_event", "origin", "warned")

    def __init__(self, origin: str, key: str, on_event: events.OnEvent | None) -> None:
        self.origin = origin
        self.key = key
        self.on_event = on_event
        self.warned: str | None = None  # the refresh token last warned about

    def check(self, token: Token, idle_timeout: float | None, now: float) -> None:
        """Warn about `token`'s refresh token, once, if its end is near."""
        if token.refresh_token is None or token.refresh_token == self.warned:
            return
        warning_at = refresh_warning_at(token, idle_timeout)
        if warning_at is None or now < warning_at:
            return
        self.warned = token.refresh_token
        end = cast(float, token.refresh_ends_at(idle_timeout))  # known: a warning time is
        idle = token.refresh_expires_at is None or end < token.refresh_expires_at
        logger.warning(
            "the refresh token for %s (store key %s) ends in %s (%s); run auth.keepalive() "
            "or `renewauth keepalive` more often than that, or issue a new refresh token "
            "for this technical user before then",
            self.origin,
            self.key[:12],
            duration(max(end - now, 0.0)),
            "unused past refresh_idle_timeout" if idle else "its stated expiry",
        )
        events.emit(
            events.RefreshTokenExpiring(
                origin=self.origin, ends_at=end, ends_in=max(end - now, 0.0), idle=idle
            ),
            self.on_event,
        )
