"""`TokenManager`: when to renew a token, and making sure it is renewed once.

The rules (DESIGN.md, "When a token is renewed"):

- **Fresh** (before `renew_at`): return the cached token. No lock, no store read: this is
  the hot path, one attribute read, one clock call and one comparison.
- **Soft window** (past `renew_at`, not expired): one caller renews; every other caller
  keeps the still-valid token and never waits. A failed renewal is logged and tried again
  after `min(30 s, half the time left)`; it is never raised.
- **Hard** (expired, or no token): callers wait for the one renewal in flight and share its
  token or its error.
- **Rejected** (the API answered 401): renew only if the rejected token is still the current
  one; otherwise another caller already renewed, and its token is returned. A token that a
  401 renewal produced and that no API answer has accepted yet is not renewed again for
  `REJECTION_INTERVAL` seconds: an API that rejects every token (a wrong audience, a missing
  role) costs one token call per interval, not one per request.
- **Departure**: a request is checked again when its headers are written (the transports
  hook the connection), so a token that aged while the request queued for a connection is
  replaced before it leaves. A token is sent only while more than `_ARRIVAL_MARGIN` seconds
  (a tenth of a short token's life) are left: that is when the soft window ends.

Single flight has three rings. In this process, `_flight` elects one leader per store and
credential key among all threads and tasks. Across processes, the leader holds the store's
`lock(key)` while it renews. And under that lock the leader reads the store again and renews
only if the token there is still the stale one — so a caller that arrives just after another
finished adopts the new token instead of renewing twice.

The manager sends nothing itself: a `TokenSender` from `transports/` does. It imports neither
requests nor httpx, and its clock, sleeps and randomness are injected.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import hashlib
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple, Protocol, cast

from . import _flight, events
from ._retry import MAX_RETRY_AFTER, backoff_delay, is_retryable_status, retry_after_seconds
from ._urls import origin_of
from .errors import (
    ConfigurationError,
    InvalidClient,
    InvalidGrant,
    StoreError,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from .flows import Flow, Grant, RetryHint, TokenRequest, TokenResponse, chain_grant
from .stores import (
    FencedStore,
    FileStore,
    MemoryStore,
    Pause,
    PauseStore,
    TokenStore,
    credential_key,
    default_store,
)
from .stores._durable import Spare, describe_store, fell_back_to_memory
from .token import Token

__all__ = [
    "KEEPALIVE_SHARE",
    "REFRESH_WARNING_MAX",
    "REFRESH_WARNING_SHARE",
    "HttpReply",
    "OnToken",
    "TokenManager",
    "TokenSender",
]

logger = logging.getLogger(__name__)

OnToken = Callable[[Token], None]
"""Called with every new token once the store has it (persist a rotated refresh token)."""

_SOFT_RETRY_CAP = 30.0  # seconds between failed renewals in the soft window, at most
_WAIT_MARGIN = 10.0  # seconds a waiter adds to the longest a renewal can take
_CREDENTIAL_PAUSE = 60.0  # seconds refused credentials are not sent again
_TAKEOVER_CHECK = 0.25  # seconds between a waiter's checks that its flight's leader still lives
_FLUSH_FIRST, _FLUSH_MAX = 0.02, 1.0  # seconds between tries of writing a kept token
_ARRIVAL_MARGIN = 0.5  # seconds a token must have left when a request leaves (at most)
_SAME_END = 2.0  # seconds two stated refresh-token ends may differ and still be one end
REFRESH_WARNING_SHARE = 0.2
"""A refresh token is warned about in the last this share of its life..."""
REFRESH_WARNING_MAX = 7 * 86400.0
"""...or in its last these seconds (7 days), whichever window is shorter."""
KEEPALIVE_SHARE = 0.5
"""`keepalive()` renews once this share of a refresh token's life (from its last use to its
end) has passed."""
REJECTION_INTERVAL = 10.0
"""Seconds during which a token that a 401 renewal produced, and that the API has not yet
accepted, is not renewed again when the API rejects it too."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A token endpoint's answer as a sender hands it over: status, headers, body."""

    status: int
    headers: MappingProxyType[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class TokenSender(Protocol):
    """Sends a `TokenRequest`: the one piece of I/O the manager needs, provided by a transport.

    Both methods raise `TokenEndpointUnavailable` for network errors and timeouts, and return
    every HTTP answer, whatever its status.
    """

    def send(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        """Send from a thread (blocking)."""
        ...

    async def asend(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        """Send from an asyncio task without blocking its loop."""
        ...


class _Cached(NamedTuple):
    """The current token and when to start renewing it: swapped as one reference."""

    token: Token
    renew_at: float


class _StoreDown(Exception):
    """The store failed before any token call was made: nothing can have been lost yet."""

    def __init__(self, error: StoreError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class _Kept:
    """A renewed token the store has not taken yet (a failed write), kept in memory.

    `generation` is the store's generation it is to be written over; `release` lets go of the
    store lock that keeps other processes from the old token until it is written (None when
    no lock could be taken); `busy` while a renewal runs from it (then it is not written).
    """

    token: Token
    generation: int
    release: Callable[[], None] | None
    loop: asyncio.AbstractEventLoop | None
    busy: bool = False


def _spent_at(token: Token) -> float:
    """When a token stops being sent: its expiry, less the time a request needs to arrive.

    A request that leaves with a token whose last milliseconds are running reaches the API
    with an expired one. The margin is `_ARRIVAL_MARGIN`, or a tenth of a short token's life.
    """
    if token.expires_at is None:
        return math.inf
    lifetime = token.lifetime
    margin = _ARRIVAL_MARGIN if lifetime is None else min(_ARRIVAL_MARGIN, lifetime / 10)
    return token.expires_at - margin


def _is_spent(token: Token, now: float) -> bool:
    """Whether `token` is too close to its expiry to be sent at `now`."""
    return now >= _spent_at(token)


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


def _continued(token: Token, base: Token | None) -> Token:
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


def _fingerprint(refresh_token: str) -> str:
    """What a shared pause records of a refused refresh token: a hash, never the token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


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


def _departing_token(signed: Token, cached: _Cached | None, now: float) -> Token | None:
    """What a leaving request can take without I/O: the cached token while it can be sent,
    else `signed` while it can, else `None` (only a renewal gives one)."""
    if cached is not None and not _is_spent(cached.token, now):
        return cached.token
    return None if _is_spent(signed, now) else signed


def _needs_renewal(current: Token | None, stale: Token | None, now: float) -> bool:
    """Whether the leader must call the token endpoint, given what the store holds now.

    `stale` is the token that made the caller ask (expired, in its soft window, or rejected
    by the API). If the store holds anything else that is still valid, someone renewed while
    the caller queued for the lock: adopt that instead of renewing twice.
    """
    if current is None or _is_spent(current, now):
        return True
    return stale is not None and current.is_same_grant(stale)


class TokenManager:
    """Keeps one credential set's token valid: cache, renewal windows, single flight.

    Args:
        grant: what to send to get a token (a provider's flow).
        store: where the token lives and how renewals are serialised across processes.
        sender: the transport that sends token requests.
        leeway: seconds before expiry at which the soft window opens.
        retries: extra tries of a token request on network errors, 5xx and 429.
        timeout: seconds for each token request.
        on_token: called with every new token after the store has it.
        refresh_idle_timeout: seconds a refresh token survives unused, for servers that
            state nothing (Keycloak's offline sessions: 30 days by default); `None`: unknown.
        on_event: called with every `renewauth.events` value of this manager.
        clock: seconds since the epoch; injected by tests.
        sleep: the wait between retries of a thread; injected by tests.
        async_sleep: the wait between retries of a task; injected by tests.
        uniform: the jitter of those waits; injected by tests.
    """

    def __init__(
        self,
        grant: Grant,
        *,
        store: TokenStore,
        sender: TokenSender,
        leeway: float = 30.0,
        retries: int = 2,
        timeout: float = 10.0,
        on_token: OnToken | None = None,
        refresh_idle_timeout: float | None = None,
        on_event: events.OnEvent | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.grant = grant
        self.store = store
        self.key = credential_key(*grant.identity())
        self.leeway = leeway
        self.retries = retries
        self.timeout = timeout
        self.on_token = on_token
        self.refresh_idle_timeout = refresh_idle_timeout
        self.on_event = on_event
        self._grant_used: str | None = None  # the grant of the leader's last token call
        self.origin = origin_of(grant.token_url) if grant.can_renew else "static"
        self._sender = sender
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._uniform = uniform
        self._flight_key = (id(store), self.key)
        self._cached: _Cached | None = None
        self._soft_retry_at = -math.inf
        # After the endpoint asked for a pause (429 or 503 with a wait longer than the retries
        # cover) or refused the credentials, no call before this time: a throttled login is
        # never hammered, and a wrong password is not sent until the account locks.
        self._paused_until = -math.inf
        self._pause_error: TokenRequestError | None = None
        # Pauses shared through the store (`PauseStore`), so that N processes make one call
        # per pause between them: the `until` of this process's pause when the store has it
        # too (written here or read), a pause read from the store and not reported yet, and
        # whether the last read under the lock found a record (which a success deletes).
        self._pauses: PauseStore | None = store if isinstance(store, PauseStore) else None
        self._shared_until: float | None = None
        self._learned: events.Paused | None = None
        self._pause_recorded = False
        # Fenced writes: the store's generation of the cached token, and a renewed token that
        # the store could not take (kept here and written by a background thread).
        self._fenced = isinstance(store, FencedStore)
        self._generation = 0
        self._kept: _Kept | None = None
        self._kept_lock = threading.Lock()  # guards `_kept` for a few instructions, no I/O
        self._warned_local = False
        # A chain (a refresh token is the only credential) cannot be made again: it gets a
        # spare copy on this machine beside any store but memory, this machine's lock beside
        # a store that is not itself a local file, and pauses about one refresh token only.
        self._chain = chain_grant(grant)
        self._spare = Spare() if self._chain is not None and not _in_memory(store) else None
        self._machine_lock = self._spare is not None and not isinstance(store, FileStore)
        self._presenting: str | None = None  # fingerprint of the refresh token being sent
        self._called = False  # whether the leader's renewal reached the token endpoint
        self._reraised: Exception | None = None  # the last pause error raised without a call
        self._paused_refresh: str | None = None  # ...and of the one the pause is about
        self._warned_memory = False
        # The token the last 401 renewal produced, until an API answer accepts it (see
        # `confirm`), and when that renewal was made: a bound on renewals after 401s.
        self.unproven: Token | None = None
        self._accepted: Token | None = None
        self._rejection_lock = threading.Lock()  # guards the three fields above, no I/O
        self._rejection_renewed_at = -math.inf
        self._warned_refresh: str | None = None  # the refresh token last warned about

    @property
    def token(self) -> Token | None:
        """The token this manager holds, or `None`; no I/O."""
        cached = self._cached
        return cached.token if cached is not None else None

    # --- the paths every request takes --------------------------------------------------

    def token_for_request(self) -> Token:
        """A token to send now: cached when fresh, else renewed as the rules say."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.renew_at:
            return cached.token
        return self._renew(cached.token if cached else None, now, rejected=False)

    async def atoken_for_request(self) -> Token:
        """`token_for_request` for asyncio: never blocks the event loop."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.renew_at:
            return cached.token
        return await self._arenew(cached.token if cached else None, now, rejected=False)

    def token_at_departure(self, signed: Token, *, may_wait: bool = True) -> Token:
        """The token a request signed with `signed` should leave with, now that it leaves.

        A request may wait for a pooled connection long after it was signed. If `signed` is
        still the current, fresh token it goes as it is (the common case: one clock call).
        A leaving request holds a connection (on HTTP/2 a stream id that others must not
        take meanwhile), so nothing slow happens here unless there is no token to send: a
        newer valid token is swapped in, a still-valid one leaves as it is (the requests
        signed after it lead its renewal, holding no connection), and only a spent one
        waits for the renewal in flight — when `may_wait`; else it leaves as it is, and
        the API's 401 renews and resends it. A token assigned to another server
        (`api_origin`) than the one the request was routed to is never swapped in.
        """
        cached = self._cached
        now = self._clock()
        if cached is not None and cached.token is signed and now < cached.renew_at:
            return signed
        token = _departing_token(signed, cached, now)
        if token is None:
            if not may_wait:
                return signed
            token = self.token_for_request()
        return token if token.api_origin == signed.api_origin else signed

    async def atoken_at_departure(self, signed: Token, *, may_wait: bool = True) -> Token:
        """`token_at_departure` for asyncio."""
        cached = self._cached
        now = self._clock()
        if cached is not None and cached.token is signed and now < cached.renew_at:
            return signed
        token = _departing_token(signed, cached, now)
        if token is None:
            if not may_wait:
                return signed
            token = await self.atoken_for_request()
        return token if token.api_origin == signed.api_origin else signed

    def confirm(self, token: Token) -> None:
        """Record that an API accepted `token` (called by transports only while `unproven`)."""
        with self._rejection_lock:  # a compare-and-set: a newer unproven token stays
            if token.is_same_grant(self.unproven):
                self.unproven, self._accepted = None, token

    def renew_rejected(self, rejected: Token) -> Token | None:
        """A token to resend with after the API rejected `rejected` (a 401), or `None`.

        If another caller already renewed, the resend is signed like any new request (so a
        newer token that is itself near its expiry starts its soft-window renewal); else
        `rejected` is renewed — unless `_declines_renewal` says that would be one renewal too
        many, and then `None` says "give the 401 back".
        """
        now = self._clock()
        newer = self._newer_than(rejected)
        if newer is None:
            if self._declines_renewal(rejected, now):
                # No token call; but another process may have stored a newer token.
                return self._other_valid(self._stored(), rejected, now)
            return self._renewed_after_rejection(self._renew(rejected, now, rejected=True), now)
        cached = self._cached
        if cached is not None and now < cached.renew_at:
            return cached.token
        # The newer token is due for renewal too. A request rejected once does not take the
        # soft window's "keep sending it" rule: a server that revokes the old access token
        # when it refreshes may already have revoked this one. Wait for (or lead) its renewal.
        return self._renew(newer, now, rejected=True)

    async def arenew_rejected(self, rejected: Token) -> Token | None:
        """`renew_rejected` for asyncio."""
        now = self._clock()
        newer = self._newer_than(rejected)
        if newer is None:
            if self._declines_renewal(rejected, now):
                return self._other_valid(await self._astored(), rejected, now)
            token = await self._arenew(rejected, now, rejected=True)
            return self._renewed_after_rejection(token, now)
        cached = self._cached
        if cached is not None and now < cached.renew_at:
            return cached.token
        return await self._arenew(newer, now, rejected=True)

    def keepalive(self) -> bool:
        """Renew when the refresh token is past `KEEPALIVE_SHARE` of its life; True if renewed.

        Reads the store first (another process may have renewed), then renews through the
        usual single flight and store lock, as a rejected token would be: a caller that finds
        the store already renewed adopts that token instead of making a second call.

        Raises:
            TokenRequestError: the renewal failed (a refused refresh token: issue a new one).
            StoreError: the store could not be read.
        """
        stale, due = self._keepalive_target(*self._read())
        if not due:
            return False
        return not self._renew(stale, self._clock(), rejected=True).is_same_grant(stale)

    async def akeepalive(self) -> bool:
        """`keepalive` for asyncio."""
        stale, due = self._keepalive_target(*(await self._aread()))
        if not due:
            return False
        token = await self._arenew(stale, self._clock(), rejected=True)
        return not token.is_same_grant(stale)

    def _keepalive_target(self, stored: Token | None, generation: int) -> tuple[Token | None, bool]:
        """The token keepalive would renew from, and whether it is due (see `keepalive_due`)."""
        if not self.grant.can_renew:
            return None, False
        current = self._current(stored, generation)
        return current, keepalive_due(current, self.refresh_idle_timeout, self._clock())

    def invalidate(self) -> None:
        """Expire the access token now, keeping its refresh token for the next renewal.

        It takes the renewal's place in the flight and the store's lock, so it never writes
        back a token that a concurrent renewal has just replaced (with a rotated refresh
        token that would otherwise be lost).
        """
        while True:
            flight, is_leader = _flight.begin(self._flight_key)
            if is_leader:
                break
            self._wait(flight)
        try:
            with self._kept_lock:
                kept = self._kept
            if kept is not None:
                # The store is behind and its lock is the writer's: expire the kept token,
                # which the next renewal renews from (and the writer writes its result).
                kept.token = self._adopt(
                    replace(kept.token, expires_at=kept.token.issued_at or 0.0)
                )
                return
            with self.store.lock(self.key):
                stored, generation = self._read()
                spare = self._spare.get(self.key) if self._spare is not None else None
                current = self._current(stored, generation, spare)
                if current is None:
                    return
                expired = replace(current, expires_at=current.issued_at or 0.0)
                self.store.set(self.key, expired)
                self._adopt(expired)
        finally:
            flight.finish(abandoned=True)  # waiters, if any, renew from the expired token
        logger.debug("token for %s invalidated", self.origin)

    def _newer_than(self, rejected: Token) -> Token | None:
        cached = self._cached
        if cached is None or cached.token.is_same_grant(rejected):
            return None
        if _is_spent(cached.token, self._clock()):
            return None
        return cached.token  # another caller renewed since this request was signed

    def _renewed_after_rejection(self, token: Token, now: float) -> Token:
        # Every caller that waited for this renewal records the same token and time; one
        # that wakes after an answer already accepted the token does not mark it again.
        with self._rejection_lock:
            if not token.is_same_grant(self._accepted):
                self.unproven, self._rejection_renewed_at = token, now
        return token

    def _stored(self) -> Token | None:
        try:
            return self.store.get(self.key)
        except StoreError:
            return None  # the 401 goes back; the store's own failure shows on the next renewal

    async def _astored(self) -> Token | None:
        try:
            return await self.store.aget(self.key)
        except StoreError:
            return None

    def _other_valid(self, stored: Token | None, rejected: Token, now: float) -> Token | None:
        """`stored`, adopted, if it is another token than `rejected` and still valid."""
        if stored is None or stored.is_same_grant(rejected) or _is_spent(stored, now):
            return None
        return self._adopt(stored)

    def _declines_renewal(self, rejected: Token, now: float) -> bool:
        """Whether a 401 for the current token `rejected` must not renew it.

        So when the token came from a 401 renewal less than `REJECTION_INTERVAL` ago and
        no API answer has accepted it since: the API rejects fresh tokens too, and renewing
        on every request would turn each of them into a token call. A token that has worked
        once (revoked later, say) is renewed at once, however soon.
        """
        unproven = self.unproven
        if (
            unproven is not None
            and unproven.is_same_grant(rejected)
            and now - self._rejection_renewed_at < REJECTION_INTERVAL
        ):
            logger.debug(
                "%s rejected a token renewed %.1f s ago after another rejection; not renewing "
                "again before %.0f s have passed",
                self.origin,
                now - self._rejection_renewed_at,
                REJECTION_INTERVAL,
            )
            return True
        return False

    def _adopt(self, token: Token) -> Token:
        self._cached = _Cached(token, min(token.renew_at(self.leeway), _spent_at(token)))
        if token.refresh_token is not None:
            self._warn_if_refresh_ends(token)
        return token

    def _warn_if_refresh_ends(self, token: Token) -> None:
        """One WARNING per refresh token once it is inside its warning window (never on the
        hot path: only when a token is adopted, kept alive or checked)."""
        if token.refresh_token == self._warned_refresh:
            return
        warning_at = refresh_warning_at(token, self.refresh_idle_timeout)
        now = self._clock()
        if warning_at is None or now < warning_at:
            return
        self._warned_refresh = token.refresh_token
        end = cast(float, token.refresh_ends_at(self.refresh_idle_timeout))
        idle = token.refresh_expires_at is None or end < token.refresh_expires_at
        logger.warning(
            "the refresh token for %s (store key %s) ends in %s (%s); run auth.keepalive() "
            "or `renewauth keepalive` more often than that, or issue a new refresh token "
            "for this technical user before then",
            self.origin,
            self.key[:12],
            _duration(max(end - now, 0.0)),
            "unused past refresh_idle_timeout" if idle else "its stated expiry",
        )
        events.emit(
            events.RefreshTokenExpiring(
                origin=self.origin, ends_at=end, ends_in=max(end - now, 0.0), idle=idle
            ),
            self.on_event,
        )

    def resent(self, origin: str, status: int) -> None:
        """Record that a transport resent a request to `origin` after `status`."""
        events.emit(events.Resent(origin=origin, status=status), self.on_event)

    def _renewed(self, token: Token, renewed: bool, started: float) -> None:
        """Tell `on_event` and the subscribers about a leader's new token (flight ended)."""
        now = self._clock()
        events.emit(
            events.Renewed(
                origin=self.origin,
                grant=self._grant_used if renewed else None,
                source="fetched" if renewed else "store",
                duration=max(now - started, 0.0),
                expires_in=None if token.expires_at is None else token.expires_at - now,
            ),
            self.on_event,
        )

    # --- renewal, sync ------------------------------------------------------------------

    def _renew(self, stale: Token | None, now: float, *, rejected: bool) -> Token:
        soft = not rejected and stale is not None and not _is_spent(stale, now)
        if soft and now < self._soft_retry_at:
            return cast(Token, stale)  # a soft renewal failed recently: wait before retrying
        while True:
            flight, is_leader = _flight.begin(self._flight_key)
            if is_leader:
                return self._lead(flight, stale, soft=soft)
            if soft:
                return cast(Token, stale)  # still valid: never wait in the soft window
            self._wait(flight)
            token = self._outcome(flight, stale, rejected=rejected)
            if token is not None:
                return token

    def _wait(self, flight: _flight.Flight) -> None:
        if _flight.would_deadlock(flight):
            raise ConfigurationError(
                "a blocking call (requests, httpx.Client, get_token()) needs the token that a "
                "task of this same event loop is renewing, and waiting would freeze the loop; "
                "use httpx.AsyncClient or await aget_token() in coroutines, or run the "
                "blocking call in a thread with asyncio.to_thread()"
            )
        deadline = time.monotonic() + self._wait_bound
        while not flight.wait(_TAKEOVER_CHECK):
            if flight.abandon_if_leader_gone():
                return  # its leader can no longer finish (a closed loop): take it over
            if time.monotonic() >= deadline:
                raise self._stuck()

    def _lead(self, flight: _flight.Flight, stale: Token | None, *, soft: bool) -> Token:
        # Re-checked as leader: a soft renewal may have failed since this caller looked.
        if soft and self._clock() < self._soft_retry_at:
            flight.finish(abandoned=True)
            return cast(Token, stale)
        started = self._clock()
        self._called = False
        try:
            token, renewed = self._renew_as_leader(stale)
        except Exception as exc:
            return self._fail(flight, stale, exc, soft=soft)
        except BaseException:
            flight.finish(abandoned=True)  # interrupted: a waiter takes over
            raise
        flight.finish(token=token)
        self._renewed(token, renewed, started)
        if renewed:
            self._notify(token)
        return token

    def _renew_as_leader(self, stale: Token | None) -> tuple[Token, bool]:
        """The new token, and whether it came from the token endpoint (else the store)."""
        kept = self._claim_kept()
        if kept is not None:
            return self._renew_kept(kept, stale)
        try:
            return self._renew_under_lock(stale)
        except _StoreDown as down:
            return self._renew_locally(down.error)

    def _renew_under_lock(self, stale: Token | None) -> tuple[Token, bool]:
        machine = self._take_machine_lock()
        try:
            held = self.store.lock(self.key)
            held.__enter__()
        except StoreError as exc:
            _release(machine)
            raise _StoreDown(exc) from None
        handed_over = False
        try:
            try:
                stored, generation = self._read()
            except StoreError as exc:
                raise _StoreDown(exc) from None
            # Another process, or a leader that finished just before us, may have renewed;
            # the store may have lost what was written (then ours or the spare is newer).
            spare = self._spare.get(self.key) if self._spare is not None else None
            current = self._current(stored, generation, spare)
            if not _needs_renewal(current, stale, self._clock()):
                return self._taken(cast(Token, current), stored, generation, spare), False
            self._load_pause()
            try:
                token, fetched, generation = self._fetch_chain(current, stale, generation)
            except TokenRequestError as exc:
                # Still under the lock: the next process sees the pause this error starts
                # (only an error of a call made now: a pause raised again is not renewed).
                if exc is not self._reraised:
                    self._share_pause(self._named_store(exc))
                raise
            if not fetched:
                return token, False
            self._end_pause()
            # The rotated refresh token is stored before the new access token is used (and
            # a chain's is in the spare copy already). If the store refuses it, it is kept
            # in memory and written by a thread that, for a chain, holds the locks until
            # then: the old refresh token is spent, this one must survive.
            try:
                written = self._write(token, generation)
                if written is None:
                    written = self._write_again(token, generation)
            except StoreError as exc:
                release = _both(_exiter(held), machine) if self._chain is not None else None
                handed_over = release is not None
                self._keep(token, generation, release, None, exc)
                return self._announce(token), True
            if written is None:
                return self._fenced_out(token, self._read_or_nothing()), True
            self._generation = written
        finally:
            if not handed_over:
                held.__exit__(None, None, None)
                _release(machine)
        return self._announce(token), True

    def _take_machine_lock(self) -> Callable[[], None] | None:
        """This machine's lock of a chain beside a store that is not a local file (see
        `Spare.lock`): how to let it go, or `None` where there is none."""
        spare = self._spare
        if spare is None or not self._machine_lock:
            return None
        held = spare.lock(self.key)
        held.__enter__()
        return _exiter(held)

    def _fetch_chain(
        self, current: Token | None, stale: Token | None, generation: int
    ) -> tuple[Token, bool, int]:
        """A token call renewing `current`: the token, whether it was fetched (else adopted)
        and the store generation to write over. A chain whose refresh token is refused
        continues from a newer token of it in the store (read again) or the spare copy: a
        process that held the lock when the store forgot it may have written since."""
        try:
            return self._fetch(current), True, generation
        except InvalidGrant:
            if self._chain is None:
                raise
            stored, generation = self._read_or_nothing()
            spare = self._spare.get(self.key) if self._spare is not None else None
            newer = self._newer_chain(current, stored, generation, spare)
            if newer is None:
                raise
        if not _needs_renewal(newer, stale, self._clock()):
            return self._taken(newer, stored, generation, None), False, generation
        return self._fetch(newer), True, generation

    def _fetch(self, current: Token | None) -> Token:
        """One token call renewing `current`, unless a pause stops it. A chain's new token
        goes to the spare copy at once, before anything else can fail or be cancelled: the
        server has spent `current`'s refresh token."""
        self._check_pause(current)  # a pause stops token calls, never a read of the store
        self._presenting, self._called = self._presented(current), True
        token = self._fetched(self._run_flow(self.grant.fetch(current)), current)
        if self._spare is not None:
            self._spare.put(self.key, token)
        return token

    def _taken(
        self, token: Token, stored: Token | None, generation: int, spare: Token | None
    ) -> Token:
        """Adopt a valid `token` found under the lock, giving it to the store if the store
        lost it, and to the spare copy if it is further along than the spare's."""
        restore, spare_it = self._taking(token, stored, generation, spare)
        if restore:
            with contextlib.suppress(StoreError):  # failing: the next renewal tries again
                self._written_back(self._write(token, generation))
        if spare_it:
            cast(Spare, self._spare).put(self.key, token)
        return self._adopt(token)

    def _taking(
        self, token: Token, stored: Token | None, generation: int, spare: Token | None
    ) -> tuple[bool, bool]:
        """What adopting `token` writes (`_taken`, `_ataken`): whether to the store (it lost
        `token` or never had it), and whether to the spare copy (`token` is further along)."""
        logger.debug("token for %s taken from the store", self.origin)
        self._generation = generation
        spare_it = self._spare is not None and (spare is None or token.sequence > spare.sequence)
        return token is not stored, spare_it

    def _written_back(self, written: int | None) -> None:
        if written is not None:
            self._generation = written
            logger.info(
                "the token store had lost the token for %s; it was written back", self.origin
            )

    def _write_again(self, token: Token, generation: int) -> int | None:
        """After a fenced write was refused: write again if the store went back (emptied, a
        Redis restarted without persistence, a deleted file) rather than moved on; `None`
        when another process really wrote after this one's lock ran out."""
        latest, latest_generation = self._read()
        if not self._went_back(token, generation, latest, latest_generation):
            return None
        return self._write(token, latest_generation)

    def _went_back(
        self, token: Token, generation: int, latest: Token | None, latest_generation: int
    ) -> bool:
        """Whether a store that refused our fenced write of `token` (over `generation`) went
        back (emptied, a Redis restarted without persistence, a deleted file) rather than
        moved on: then `token` is written again, and nobody else renewed. For a chain, a
        store that holds a token behind `token` on the chain went back too, whatever its
        generation says (a restarted Redis counts generations from 0 again)."""
        if (
            latest is not None
            and latest_generation > generation
            and (self._chain is None or latest.sequence >= token.sequence)
        ):
            return False  # another process wrote after this one's lock ran out
        logger.warning(
            "the token store lost the token for %s during its renewal (emptied, or restarted "
            "without persistence); the renewed token is written again",
            self.origin,
        )
        return True

    def _newer_chain(
        self, refused: Token | None, stored: Token | None, generation: int, spare: Token | None
    ) -> Token | None:
        """After a chain's refresh token was refused: a token of the same chain further
        along than `refused`, from the store (read again) or the spare copy, or `None`."""
        if self._chain is None:
            return None
        base = -1 if refused is None else refused.sequence
        best: Token | None = None
        for candidate in (stored, spare):
            if (
                candidate is not None
                and candidate.refresh_token is not None
                and candidate.sequence > base
                and (best is None or candidate.sequence > best.sequence)
            ):
                best = candidate
        if best is not None:
            self._generation = generation
            logger.info(
                "the refresh token for %s was refused, but the store holds a newer one of "
                "its chain: continuing from that",
                self.origin,
            )
        return best

    def _renew_kept(self, kept: _Kept, stale: Token | None) -> tuple[Token, bool]:
        """Renew from the kept token, which only this process holds (the store is behind).

        The writer holds the store's lock (and this machine's) meanwhile, for a chain. Should
        the server refuse the kept refresh token all the same (a store that lost that lock
        let another process continue from the spare copy), a newer token of the chain in the
        store or the spare copy is continued from."""
        try:
            if not _needs_renewal(kept.token, stale, self._clock()):
                return self._adopt(kept.token), False
            token, fetched, _ = self._fetch_chain(kept.token, stale, kept.generation)
            kept.token = token  # the writer thread writes this one now
            return (self._announce(token), True) if fetched else (token, False)
        finally:
            with self._kept_lock:
                kept.busy = False

    def _renew_locally(self, error: StoreError) -> tuple[Token, bool]:
        """Renew without the store, where that spends nothing another process needs."""
        self._require_local_renewal(error)
        self._check_pause(None)
        self._called = True
        token = self._fetched(self._run_flow(self.grant.fetch(None)), self.token)
        self._keep(token, self._generation, None, None, error, quiet=True)
        return self._announce(token), True

    def _run_flow(self, flow: Flow) -> Token:
        try:
            request = next(flow)
            while True:
                request = flow.send(self._send(request))
        except StopIteration as done:
            return cast(Token, done.value)
        finally:
            flow.close()

    def _send(self, request: TokenRequest) -> TokenResponse:
        attempt = 0
        while True:
            sent_at = self._clock()
            try:
                reply = self._sender.send(request, timeout=self.timeout)
            except TokenEndpointUnavailable as exc:
                failure, retry_after = exc, None
            else:
                response = self._response(request, reply, sent_at)
                if not request.retryable or not is_retryable_status(response.status):
                    return response
                failure, retry_after = self._unavailable(request, response)
            delay = self._next_delay(request, attempt, failure, retry_after)
            self._sleep(delay)
            request = request.retry()
            attempt += 1

    # --- renewal, async: the same decisions, awaited ------------------------------------

    async def _arenew(self, stale: Token | None, now: float, *, rejected: bool) -> Token:
        soft = not rejected and stale is not None and not _is_spent(stale, now)
        if soft and now < self._soft_retry_at:
            return cast(Token, stale)
        loop = asyncio.get_running_loop()
        while True:
            flight, is_leader = _flight.begin(self._flight_key, leader_loop=loop)
            if is_leader:
                # The renewal runs as a task of its own and the caller awaits it shielded: a
                # caller cancelled mid-renewal (a timeout around its request) must not cancel
                # a refresh the server has already answered, or the rotated refresh token in
                # that answer would be lost with it.
                renewal = loop.create_task(self._alead(flight, stale, soft=soft))
                return await asyncio.shield(renewal)
            if soft:
                return cast(Token, stale)
            await self._wait_async(flight, loop)
            token = self._outcome(flight, stale, rejected=rejected)
            if token is not None:
                return token

    async def _wait_async(self, flight: _flight.Flight, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self._wait_bound
        while True:
            try:
                # asyncio.timeout, not wait_for: no extra task per waiter (there may be 200).
                async with asyncio.timeout(_TAKEOVER_CHECK):
                    await flight.wait_async()
                return
            except TimeoutError:
                if flight.abandon_if_leader_gone():
                    return
                if loop.time() >= deadline:
                    raise self._stuck() from None

    async def _alead(self, flight: _flight.Flight, stale: Token | None, *, soft: bool) -> Token:
        if soft and self._clock() < self._soft_retry_at:
            flight.finish(abandoned=True)
            return cast(Token, stale)
        started = self._clock()
        self._called = False
        try:
            token, renewed = await self._arenew_as_leader(stale)
        except Exception as exc:
            return self._fail(flight, stale, exc, soft=soft)
        except BaseException:
            flight.finish(abandoned=True)
            raise
        flight.finish(token=token)
        self._renewed(token, renewed, started)
        if renewed:
            self._notify(token)
        return token

    async def _arenew_as_leader(self, stale: Token | None) -> tuple[Token, bool]:
        kept = self._claim_kept()
        if kept is not None:
            return await self._arenew_kept(kept, stale)
        try:
            return await self._arenew_under_lock(stale)
        except _StoreDown as down:
            self._require_local_renewal(down.error)
            self._check_pause(None)
            self._called = True
            token = self._fetched(await self._arun_flow(self.grant.fetch(None)), self.token)
            loop = asyncio.get_running_loop()
            self._keep(token, self._generation, None, loop, down.error, quiet=True)
            return self._announce(token), True

    async def _arenew_under_lock(self, stale: Token | None) -> tuple[Token, bool]:
        machine = None
        if self._spare is not None and self._machine_lock:
            # Waited for in a thread; released from there, or by the writer thread.
            machine = await asyncio.to_thread(self._take_machine_lock)
        try:
            release, handover = await self._atake_lock()
        except StoreError as exc:
            await _arelease(machine)
            raise _StoreDown(exc) from None
        handed_over = False
        try:
            try:
                stored, generation = await self._aread()
            except StoreError as exc:
                raise _StoreDown(exc) from None
            spare = await self._aspare()
            current = self._current(stored, generation, spare)
            if not _needs_renewal(current, stale, self._clock()):
                return await self._ataken(cast(Token, current), stored, generation, spare), False
            await self._aload_pause()
            try:
                token, fetched, generation = await self._afetch_chain(current, stale, generation)
            except TokenRequestError as exc:
                if exc is not self._reraised:
                    await self._ashare_pause(self._named_store(exc))
                raise
            if not fetched:
                return token, False
            await self._aend_pause()
            try:
                written = await self._awrite(token, generation)
                if written is None:
                    written = await self._awrite_again(token, generation)
            except StoreError as exc:
                handed_over = self._chain is not None
                loop = asyncio.get_running_loop()
                kept = _both(handover, machine) if handed_over else None
                self._keep(token, generation, kept, loop, exc)
                return self._announce(token), True
            if written is None:
                return self._fenced_out(token, await self._aread_or_nothing()), True
            self._generation = written
        finally:
            if not handed_over:
                await release()
                await _arelease(machine)
        return self._announce(token), True

    async def _aspare(self) -> Token | None:
        spare = self._spare
        return None if spare is None else await asyncio.to_thread(spare.get, self.key)

    async def _afetch_chain(
        self, current: Token | None, stale: Token | None, generation: int
    ) -> tuple[Token, bool, int]:
        try:
            return await self._afetch(current), True, generation
        except InvalidGrant:
            if self._chain is None:
                raise
            stored, generation = await self._aread_or_nothing()
            newer = self._newer_chain(current, stored, generation, await self._aspare())
            if newer is None:
                raise
        if not _needs_renewal(newer, stale, self._clock()):
            return await self._ataken(newer, stored, generation, None), False, generation
        return await self._afetch(newer), True, generation

    async def _afetch(self, current: Token | None) -> Token:
        if self._chain is not None:
            # A chain's call and its spare copy run in a thread: a task can be cancelled
            # (`asyncio.run` cancels what is left when its coroutine returns) after the
            # server rotated the refresh token, and the new one would be lost with it. A
            # thread runs on to the spare write, and `asyncio.run` waits for it.
            return await asyncio.to_thread(self._fetch, current)
        self._check_pause(current)
        self._presenting, self._called = self._presented(current), True
        return self._fetched(await self._arun_flow(self.grant.fetch(current)), current)

    async def _ataken(
        self, token: Token, stored: Token | None, generation: int, spare: Token | None
    ) -> Token:
        restore, spare_it = self._taking(token, stored, generation, spare)
        if restore:
            with contextlib.suppress(StoreError):
                self._written_back(await self._awrite(token, generation))
        if spare_it:
            await asyncio.to_thread(cast(Spare, self._spare).put, self.key, token)
        return self._adopt(token)

    async def _awrite_again(self, token: Token, generation: int) -> int | None:
        latest, latest_generation = await self._aread()
        if not self._went_back(token, generation, latest, latest_generation):
            return None
        return await self._awrite(token, latest_generation)

    async def _aread_or_nothing(self) -> tuple[Token | None, int]:
        try:
            return await self._aread()
        except StoreError:
            return None, self._generation

    async def _atake_lock(self) -> tuple[Callable[[], Awaitable[object]], Callable[[], None]]:
        """Take the store lock from a task: how to release it there, and from the writer thread.

        The sync lock, waited for in a worker thread, where the store has one: it can be
        handed to the writer thread and outlives this event loop (an async context manager
        would be closed with its loop's async generators). Else the store's async lock.
        """
        try:
            held = self.store.lock(self.key)
            await asyncio.to_thread(held.__enter__)
        except ConfigurationError:  # an asyncio-only store (a redis.asyncio client)
            aheld = self.store.alock(self.key)
            await aheld.__aenter__()
            return (lambda: aheld.__aexit__(None, None, None)), _releaser(
                aheld, asyncio.get_running_loop()
            )
        return (lambda: asyncio.to_thread(held.__exit__, None, None, None)), _exiter(held)

    async def _arenew_kept(self, kept: _Kept, stale: Token | None) -> tuple[Token, bool]:
        try:
            if not _needs_renewal(kept.token, stale, self._clock()):
                return self._adopt(kept.token), False
            token, fetched, _ = await self._afetch_chain(kept.token, stale, kept.generation)
            kept.token = token
            return (self._announce(token), True) if fetched else (token, False)
        finally:
            with self._kept_lock:
                kept.busy = False

    async def _arun_flow(self, flow: Flow) -> Token:
        try:
            request = next(flow)
            while True:
                request = flow.send(await self._asend(request))
        except StopIteration as done:
            return cast(Token, done.value)
        finally:
            flow.close()

    async def _asend(self, request: TokenRequest) -> TokenResponse:
        attempt = 0
        while True:
            sent_at = self._clock()
            try:
                reply = await self._sender.asend(request, timeout=self.timeout)
            except TokenEndpointUnavailable as exc:
                failure, retry_after = exc, None
            else:
                response = self._response(request, reply, sent_at)
                if not request.retryable or not is_retryable_status(response.status):
                    return response
                failure, retry_after = self._unavailable(request, response)
            delay = self._next_delay(request, attempt, failure, retry_after)
            await self._async_sleep(delay)
            request = request.retry()
            attempt += 1

    # --- shared by both drivers ---------------------------------------------------------

    def _read(self) -> tuple[Token | None, int]:
        if self._fenced:
            return cast(FencedStore, self.store).get_with_generation(self.key)
        return self.store.get(self.key), 0

    async def _aread(self) -> tuple[Token | None, int]:
        if self._fenced:
            return await cast(FencedStore, self.store).aget_with_generation(self.key)
        return await self.store.aget(self.key), 0

    def _write(self, token: Token, generation: int) -> int | None:
        """Write `token` over `generation`: the new generation, or `None` if fenced out."""
        if self._fenced:
            return cast(FencedStore, self.store).set_if_generation(self.key, token, generation)
        self.store.set(self.key, token)
        return generation + 1

    async def _awrite(self, token: Token, generation: int) -> int | None:
        if self._fenced:
            store = cast(FencedStore, self.store)
            return await store.aset_if_generation(self.key, token, generation)
        await self.store.aset(self.key, token)
        return generation + 1

    def _current(
        self, stored: Token | None, generation: int, spare: Token | None = None
    ) -> Token | None:
        """What to renew from: the store's token, unless the store lost what we wrote or a
        token further along the chain is held here (ours) or in the spare copy."""
        own = self.token
        best = stored
        if stored is None or (self._fenced and own is not None and generation < self._generation):
            # Nothing stored, or an older generation than we saw (a Redis restarted without
            # persistence): our own token is the newest there is.
            best = stored if own is None else own
        if self._chain is None:
            return best  # a grant that loses nothing trusts the store, as before
        for other in (own, spare):
            if other is not None and (best is None or other.sequence > best.sequence):
                best = other
        return best

    def _fenced_out(self, token: Token, latest: tuple[Token | None, int]) -> Token:
        """Our write was refused: another leader wrote after our lock ran out. Its token is
        the store's; ours stays valid for this process alone."""
        stored, generation = latest
        logger.warning(
            "the renewed token for %s was not written: another process renewed after this "
            "one's store lock ran out (the store keeps the newer token)",
            self.origin,
        )
        if stored is not None and not _is_spent(stored, self._clock()):
            self._generation = generation
            return self._announce(stored)
        return self._announce(token)

    def _require_local_renewal(self, error: StoreError) -> None:
        """Raise `error` unless this grant can renew without spending a shared refresh token."""
        if self._chain is not None:
            raise error  # a refresh token must never be spent twice: wait for the store
        if not self._warned_local:
            self._warned_local = True
            logger.warning(
                "the token store is unreachable (%s); renewing the token for %s in this "
                "process until it is back, then sharing it again",
                error,
                self.origin,
            )

    def _claim_kept(self) -> _Kept | None:
        with self._kept_lock:
            kept = self._kept
            if kept is not None:
                kept.busy = True
            return kept

    def _keep(
        self,
        token: Token,
        generation: int,
        release: Callable[[], None] | None,
        loop: asyncio.AbstractEventLoop | None,
        error: StoreError,
        *,
        quiet: bool = False,
    ) -> None:
        """Keep a renewed token the store refused, and write it as soon as the store can.

        `release` (the store lock, handed over) is given only where the lock protects a
        refresh token (a chain's): other processes then wait rather than present the spent
        one. Any other grant loses nothing if another process renews meanwhile, so its lock
        is let go at once and nobody waits for this write.
        """
        with self._kept_lock:
            self._kept = _Kept(token, generation, release, loop)
        _KEEPERS.add(self)
        if not quiet:  # a local renewal while the store is unreachable said so already
            logger.warning(
                "the renewed token for %s could not be stored (%s); it is kept in memory "
                "and written as soon as the store takes writes again",
                self.origin,
                error,
            )
        threading.Thread(
            target=self._write_kept, name="renewauth-store-writer", daemon=True
        ).start()

    def _write_kept(self) -> None:
        """The writer thread: retries until the store has the kept token (or a newer one).

        A chain's kept token is in the spare copy already (`_fetch` put it there), so that a
        process that exits (or is killed) before the store takes it leaves it where the next
        one finds it."""
        delay = _FLUSH_FIRST
        pause = threading.Event()
        while True:
            with self._kept_lock:
                kept = self._kept
                if kept is None:
                    return
                token, generation, busy = kept.token, kept.generation, kept.busy
            if busy:  # a renewal runs from it: write its result instead
                pause.wait(_FLUSH_FIRST)
                continue
            try:
                written, lost = self._write_kept_once(kept, token, generation)
            except Exception:  # the store is still down: try again, a little later each time
                pause.wait(delay)
                delay = min(delay * 2, _FLUSH_MAX)
                continue
            if lost:  # the store lost writes (emptied, restarted without persistence)
                stored_generation = self._read_generation_quietly()
                with self._kept_lock:
                    kept.generation = stored_generation
                continue
            with self._kept_lock:
                if kept.busy or kept.token is not token:
                    if written is not None:
                        kept.generation = written  # renewed meanwhile: write the newer one
                    continue
                self._kept = None
            self._kept_written(token, written)
            if kept.release is not None:
                try:
                    kept.release()
                except Exception as exc:
                    logger.warning("store lock for %s not released (%s)", self.origin, exc)
            return

    def _write_kept_once(
        self, kept: _Kept, token: Token, generation: int
    ) -> tuple[int | None, bool]:
        """One try of the writer: the generation written, or `None`; and whether the store
        lost writes (write again over what it holds now).

        A chain's store is read first: a token there at least as far along the chain as the
        kept one (written by this writer already, or renewed by a process that continued
        from the spare copy) wins, and the kept one is not written over it, whatever the
        generations say (a restarted Redis counts them from 0 again)."""
        if self._chain is not None:
            stored, stored_generation = self._read_from_thread(kept)
            if stored is not None and stored.sequence >= token.sequence:
                return None, False
            written = self._write_from_thread(kept, token, stored_generation)
            return written, written is None  # raced with another writer: look again
        written = self._write_from_thread(kept, token, generation)
        return written, written is None and self._read_from_thread(kept)[1] < generation

    def _in_store(self, kept: _Kept) -> bool:
        """Whether the store holds the kept token, or (for a chain) one further along."""
        try:
            stored, _ = self._read_from_thread(kept)
        except Exception:
            return False
        if stored is None:
            return False
        if self._chain is not None:
            return stored.sequence >= kept.token.sequence
        return stored.is_same_grant(kept.token)

    def _read_from_thread(self, kept: _Kept) -> tuple[Token | None, int]:
        try:
            return self._read()
        except ConfigurationError:  # an asyncio-only store: read on its loop
            loop = kept.loop
            if loop is None or not loop.is_running():
                raise
            future = asyncio.run_coroutine_threadsafe(self._aread(), loop)
            return future.result(timeout=self.timeout + _WAIT_MARGIN)

    def _flush_at_exit(self) -> None:
        """At interpreter exit: a kept token the store never took is written once more, else
        left in the spare copy for the next process of this machine, else an ERROR says
        that the chain breaks. Never a token in the message: its origin and store key."""
        with self._kept_lock:
            kept, self._kept = self._kept, None
        if kept is None:
            return
        try:
            written, _ = self._write_kept_once(kept, kept.token, kept.generation)
        except Exception:
            written = None
        if written is None and self._in_store(kept):
            written = -1  # the writer (or a process further along the chain) got there first
        if written is None and self._chain is not None:
            # The newest kept token (a renewal from a kept one replaces it), put again: a put
            # never takes the spare back along the chain, and says where the token is.
            spared = None if self._spare is None else self._spare.put(self.key, kept.token)
            if spared is not None:
                logger.warning(
                    "the token store never took the renewed token for %s (store key %s) "
                    "before this process exited; it is left in %s, where the next process "
                    "with this credential on this machine continues from it",
                    self.origin,
                    self.key[:12],
                    spared,
                )
            else:
                logger.error(
                    "the renewed token for %s (store key %s) could not be written to %s or "
                    "to a spare copy before this process exited: the server has spent the "
                    "refresh token the store still holds, so the chain breaks and the next "
                    "run is refused; free the store (disk space, Redis) and keep this "
                    "process running until it is written, or issue a new refresh token",
                    self.origin,
                    self.key[:12],
                    describe_store(self.store),
                )
        if kept.release is not None:
            with contextlib.suppress(Exception):
                kept.release()

    def _read_or_nothing(self) -> tuple[Token | None, int]:
        try:
            return self._read()
        except StoreError:
            return None, self._generation

    def _read_generation_quietly(self) -> int:
        try:
            return self._read()[1]
        except Exception:
            return 0

    def _write_from_thread(self, kept: _Kept, token: Token, generation: int) -> int | None:
        try:
            return self._write(token, generation)
        except ConfigurationError:  # an asyncio-only store: write on its loop
            loop = kept.loop
            if loop is None or not loop.is_running():
                raise
            future = asyncio.run_coroutine_threadsafe(self._awrite(token, generation), loop)
            return future.result(timeout=self.timeout + _WAIT_MARGIN)

    def _kept_written(self, token: Token, written: int | None) -> None:
        if written is not None:
            self._generation = written
            self._warned_local = False
            logger.info("the kept token for %s is in the store now", self.origin)
            return
        # Another process wrote meanwhile (it renewed while this one could not reach the
        # store): the store's token is the shared one again when it is valid.
        try:
            stored, generation = self._read()
        except Exception:
            return
        if stored is not None and not _is_spent(stored, self._clock()):
            self._generation = generation
            self._adopt(stored)
        self._warned_local = False

    def _response(self, request: TokenRequest, reply: HttpReply, sent_at: float) -> TokenResponse:
        self._grant_used = request.grant
        return TokenResponse(
            status=reply.status,
            headers=reply.headers,
            body=reply.body,
            url=request.url,
            sent_at=sent_at,
            received_at=self._clock(),
        )

    def _unavailable(
        self, request: TokenRequest, response: TokenResponse
    ) -> tuple[TokenEndpointUnavailable, float | None]:
        retry_after = retry_after_seconds(response.headers, self._clock())
        if retry_after is None and isinstance(self.grant, RetryHint):
            # A provider may say it in the body (Shopware: "Auth throttled for 30 seconds.").
            retry_after = self.grant.retry_after(response)
        failure = TokenEndpointUnavailable(
            f"token endpoint {response.origin} is unavailable (HTTP {response.status}) after "
            f"{self.retries + 1} tries; it may be overloaded or down: try again later, or "
            "raise retries=",
            status=response.status,
            origin=response.origin,
            retry_after=retry_after,
        )
        return failure, retry_after

    def _next_delay(
        self,
        request: TokenRequest,
        attempt: int,
        failure: TokenEndpointUnavailable,
        retry_after: float | None,
    ) -> float:
        """The wait before the next try, or raise `failure` when no try is left."""
        delay = backoff_delay(attempt, retry_after, self._uniform)
        if attempt >= self.retries or delay is None:
            raise failure
        logger.debug(
            "token request to %s failed (%s); try %d of %d in %.2f s",
            request.origin,
            failure.status or "network error",
            attempt + 2,
            self.retries + 1,
            delay,
        )
        return delay

    def _outcome(
        self, flight: _flight.Flight, stale: Token | None, *, rejected: bool
    ) -> Token | None:
        """What a waiter takes from a finished flight; `None` means "begin again"."""
        if flight.abandoned:
            return None  # its leader was cancelled or interrupted: a waiter takes over
        if flight.error is not None:
            # From the leader's own cause when it has one (a network error's low-level error),
            # so that every caller reads the same `__cause__`; else from the leader's error.
            raise _copy_of(flight.error) from (flight.error.__cause__ or flight.error)
        token = cast(Token, flight.token)
        if rejected and token.is_same_grant(stale):
            # That leader adopted the very token the API just rejected (it started from an
            # older stale token): renewing is still needed.
            return None
        cached = self._cached
        if (
            cached is not None
            and not cached.token.is_same_grant(stale)
            and not _is_spent(cached.token, self._clock())
        ):
            # Someone has replaced the token this waiter started from: this flight's leader,
            # or a later renewal. A waiter that resumes late must not put an older token
            # back (a server that revokes the old access token on refresh would reject it).
            return cached.token
        return self._adopt(token)

    def _fail(
        self, flight: _flight.Flight, stale: Token | None, exc: Exception, *, soft: bool
    ) -> Token:
        """End a failed renewal: back off and keep the token in the soft window, else raise."""
        now = self._clock()
        # Not the re-raised error of a running pause (a call past a pause about an older
        # refresh token of the chain was made, though).
        attempted = (now >= self._paused_until or self._called) and exc is not self._reraised
        paused: events.Paused | None = None
        if attempted:
            pause = _pause_for(exc, now)
            if pause is not None:
                until, reason = pause
                if self._shared_until is not None and self._shared_until > now:
                    until = self._shared_until  # the very `until` the other processes read
                self._pause_error, self._paused_until = cast(TokenRequestError, exc), until
                self._paused_refresh = self._refused_refresh(exc)
                paused = events.Paused(origin=self.origin, until=until, reason=reason)
        learned, self._learned = self._learned, None  # a pause read from the store
        next_try_in = self._paused_until - now if self._paused_until > now else None
        if soft and stale is not None and not stale.is_expired(now):
            left = (stale.expires_at or now) - now
            wait = max(min(_SOFT_RETRY_CAP, max(left / 2, 0.0)), self._paused_until - now)
            # Set before the flight ends, so no caller can slip in and retry at once.
            self._soft_retry_at = now + wait
            flight.finish(error=exc)
            logger.warning(
                "renewing the token for %s failed (%s); the current token stays valid for "
                "%.1f s, next try in %.1f s",
                self.origin,
                type(exc).__name__,
                left,
                wait,
            )
            if attempted:
                self._failed(exc, wait, paused)
            elif learned is not None:
                events.emit(learned, self.on_event)  # no call here, but say it once
            return stale
        flight.finish(error=exc)
        if attempted:
            self._failed(exc, next_try_in, paused)
        elif learned is not None:
            events.emit(learned, self.on_event)
        raise exc

    def _failed(
        self, exc: Exception, next_try_in: float | None, paused: events.Paused | None
    ) -> None:
        """Tell `on_event` and the subscribers about a failed renewal (flight ended)."""
        status = exc.status if isinstance(exc, TokenRequestError) else None
        events.emit(
            events.RenewalFailed(
                origin=self.origin,
                error=type(exc).__name__,
                status=status,
                next_try_in=next_try_in,
            ),
            self.on_event,
        )
        if paused is not None:
            events.emit(paused, self.on_event)

    def _load_pause(self) -> None:
        """Take up the pause another process recorded in the store (under the lock)."""
        if self._pauses is not None:
            try:
                pause = self._pauses.get_pause(self.key)
            except StoreError:
                return  # keep what this process knows; the token call decides
            self._take_pause(pause)

    async def _aload_pause(self) -> None:
        if self._pauses is not None:
            try:
                pause = await self._pauses.aget_pause(self.key)
            except StoreError:
                return
            self._take_pause(pause)

    def _take_pause(self, pause: Pause | None) -> None:
        self._pause_recorded = pause is not None
        now = self._clock()
        if pause is not None and pause.until > now:
            if pause.until != self._shared_until:  # not the one this process knows
                self._pause_error = pause.to_error(self.origin)
                self._paused_until = self._shared_until = pause.until
                self._paused_refresh = pause.refresh if self._chain is not None else None
                self._learned = events.Paused(
                    origin=self.origin, until=pause.until, reason=pause.reason
                )
        elif self._shared_until is not None:
            # The store's record of this process's pause is gone or over: a success
            # elsewhere ended it (a process whose clock runs ahead, say).
            self._clear_pause()

    def _clear_pause(self) -> None:
        self._paused_until = -math.inf
        self._pause_error = None
        self._paused_refresh = None
        self._shared_until = None
        self._learned = None

    def _share_pause(self, exc: TokenRequestError) -> None:
        """Record the pause `exc` starts in the store, for every process sharing it."""
        pause = self._shared_pause(exc)
        if pause is not None and self._pauses is not None:
            try:
                self._pauses.set_pause(self.key, pause)
            except StoreError as error:
                self._unshared(error)
            else:
                self._shared_until, self._pause_recorded = pause.until, True

    async def _ashare_pause(self, exc: TokenRequestError) -> None:
        pause = self._shared_pause(exc)
        if pause is not None and self._pauses is not None:
            try:
                await self._pauses.aset_pause(self.key, pause)
            except StoreError as error:
                self._unshared(error)
            else:
                self._shared_until, self._pause_recorded = pause.until, True

    def _shared_pause(self, exc: TokenRequestError) -> Pause | None:
        self._shared_until = None
        if self._pauses is None:
            return None
        found = _pause_for(exc, self._clock())
        if found is None:
            return None
        return Pause.of(exc, *found, refresh=self._refused_refresh(exc))

    def _refused_refresh(self, exc: Exception) -> str | None:
        """The fingerprint of the refresh token `exc` refused, when it is a chain's."""
        return self._presenting if isinstance(exc, InvalidGrant) else None

    def _unshared(self, error: StoreError) -> None:
        logger.warning(
            "the pause of token calls for %s could not be written to the store (%s): this "
            "process keeps it, others sharing the store may still call once",
            self.origin,
            error,
        )

    def _end_pause(self) -> None:
        """A token call succeeded: delete the store's pause record, if the last read saw one."""
        if self._pauses is not None and self._pause_recorded:
            with contextlib.suppress(StoreError):  # it expires on its own
                self._pauses.delete_pause(self.key)
            self._pause_recorded = False

    async def _aend_pause(self) -> None:
        if self._pauses is not None and self._pause_recorded:
            with contextlib.suppress(StoreError):
                await self._pauses.adelete_pause(self.key)
            self._pause_recorded = False

    def _check_pause(self, current: Token | None) -> None:
        """Raise the last "try later" again, without a call, while its pause lasts; a pause
        about one refused refresh token does not stop a renewal from a newer one."""
        error = self._pause_error
        if error is None or self._clock() >= self._paused_until:
            return
        if self._paused_refresh is not None and self._paused_refresh != self._presented(current):
            return
        self._reraised = _copy_of(error)
        raise self._reraised from error

    def _presented(self, current: Token | None) -> str | None:
        """The fingerprint of the refresh token a chain's renewal from `current` sends."""
        chain = self._chain
        return None if chain is None else _fingerprint(chain.presents(current))

    def _fetched(self, token: Token, base: Token | None) -> Token:
        """A token the endpoint just gave, renewing `base`: placed on its chain, and the
        one warning a rotated refresh token kept only in memory gets."""
        token = _continued(token, base)
        chain = self._chain
        if (
            chain is not None
            and not self._warned_memory
            and _in_memory(self.store)
            and not (self.store is default_store() and fell_back_to_memory())  # warned then
            and token.refresh_token is not None
            and token.refresh_token != chain.presents(base)
        ):
            self._warned_memory = True
            logger.warning(
                "the refresh token for %s was rotated and lives only in this process's memory "
                "(store=MemoryStore()): when the process exits, the next run presents a "
                "spent one and is refused; pass store=FileStore(path) or RedisStore(url), or "
                "no store= for renewauth's durable default",
                self.origin,
            )
        return token

    def _named_store(self, exc: TokenRequestError) -> TokenRequestError:
        """`exc` (a refused refresh token of a chain), its message naming where the chain
        was looked for: the store's kind and place, never a secret."""
        if self._chain is not None and isinstance(exc, InvalidGrant) and exc.args:
            if "newest refresh token was looked for" in str(exc.args[0]):
                return exc
            where = describe_store(self.store)
            if self._spare is not None:
                where += " and this machine's spare copies"
            exc.args = (
                f"{exc.args[0]} (its newest refresh token was looked for in {where}, "
                f"store key {self.key[:12]})",
                *exc.args[1:],
            )
        return exc

    def _announce(self, token: Token) -> Token:
        self._adopt(token)
        self._soft_retry_at = -math.inf
        self._clear_pause()
        if token.expires_at is not None:
            logger.debug(
                "token for %s renewed; expires in %.1f s",
                self.origin,
                token.expires_at - self._clock(),
            )
        else:
            logger.debug("token for %s renewed; no known expiry", self.origin)
        return token

    def _notify(self, token: Token) -> None:
        # After the flight ended: a failing callback is its caller's error, not every
        # waiter's, and the token is already stored and in use.
        if self.on_token is not None:
            self.on_token(token)

    @property
    def _wait_bound(self) -> float:
        """Seconds a waiter gives the renewal in flight: every try, timeout and wait."""
        return (self.timeout + MAX_RETRY_AFTER) * (self.retries + 1) + _WAIT_MARGIN

    def _stuck(self) -> TokenEndpointUnavailable:
        return TokenEndpointUnavailable(
            f"the renewal of the token for {self.origin} in flight did not finish within "
            f"{self._wait_bound:.0f} s; the token endpoint may hang (lower timeout=), or the "
            "renewing event loop is blocked by this very call",
            origin=self.origin,
        )


def _pause_for(exc: Exception, now: float) -> tuple[float, events.PauseReason] | None:
    """When token calls may resume after `exc`, and why; `None` if `exc` starts no pause."""
    if isinstance(exc, TokenEndpointUnavailable) and exc.retry_after:
        return now + exc.retry_after, "retry-after"
    if isinstance(exc, InvalidGrant | InvalidClient):
        # Refused credentials will be refused again: asking again on every request is how
        # accounts get locked (OrderCloud: 30 minutes after a few failures).
        return now + _CREDENTIAL_PAUSE, "refused"
    return None


def _duration(seconds: float) -> str:
    """Seconds as a short human duration: "3 d 4 h", "12 min", "40 s"."""
    if seconds >= 86400:
        return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{seconds:.0f} s"


def _exiter(held: contextlib.AbstractContextManager[object]) -> Callable[[], None]:
    """Release a store lock from the writer thread."""

    def release() -> None:
        held.__exit__(None, None, None)

    return release


def _releaser(
    held: contextlib.AbstractAsyncContextManager[object], loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Release an async store lock from the writer thread: on its loop while that runs,
    else in a loop of the thread's own."""

    def release() -> None:
        exit_ = held.__aexit__(None, None, None)
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(exit_, loop).result(timeout=60)
        else:
            asyncio.run(exit_)

    return release


def _copy_of(error: Exception) -> Exception:
    """A copy of the leader's error for one waiter: sharing one object across threads would
    pile every waiter's traceback onto it."""
    try:
        return copy.copy(error)
    except Exception:  # an exception type that cannot be copied: share it after all
        return error


def _in_memory(store: object) -> bool:
    """Whether `store` keeps tokens in this process only (nothing survives its exit)."""
    return isinstance(store, MemoryStore)


# Managers that kept a token the store refused: at exit each writes it once more, or leaves
# it in the spare copy, or says that it is lost (`TokenManager._flush_at_exit`).
_KEEPERS: weakref.WeakSet[TokenManager] = weakref.WeakSet()


@atexit.register
def _flush_kept_at_exit() -> None:
    for manager in list(_KEEPERS):
        manager._flush_at_exit()


def _forget_kept_in_child() -> None:
    # A forked child has the kept token but not the writer thread, nor the locks it holds:
    # the parent's writer writes it; the child renews from the store and the spare copy.
    for manager in list(_KEEPERS):
        manager._kept = None
        manager._kept_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_kept_in_child)


def _release(release: Callable[[], None] | None) -> None:
    if release is not None:
        release()


def _both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    """Release `first`, then `second` (the store's lock, then this machine's)."""

    def release() -> None:
        try:
            first()
        finally:
            _release(second)

    return release


async def _arelease(release: Callable[[], None] | None) -> None:
    """Release a lock taken in a worker thread (a flock), from a worker thread."""
    if release is not None:
        await asyncio.to_thread(release)
