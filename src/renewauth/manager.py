"""`TokenManager`: when to renew a token, and making sure it is renewed once.

The rules (DESIGN.md, "When a token is renewed"):

- **Fresh** (before `renew_at`): return the cached token. No lock, no store read: this is
  the hot path, one attribute read, one clock call and one comparison.
- **Soft window** (past `renew_at`, not expired): the token is still valid, so no caller
  waits: the first caller to notice starts one renewal in the background (`_background`: a
  thread, which stays the flight's leader) and sends the valid token at once, like every
  other caller. A failed renewal is logged and tried again after `min(30 s, half the time
  left)`; it is never raised.
- **Hard** (expired, or no token): callers wait for the one renewal in flight and share its
  token or its error.
- **Rejected** (the API answered 401): renew only if the rejected token is still the current
  one; otherwise another caller already renewed, and its token is returned. A token that a
  401 renewal produced and that no API answer has accepted yet is not renewed again for
  `REJECTION_INTERVAL` seconds: an API that rejects every token (a wrong audience, a missing
  role) costs one token call per interval, not one per request.
- **Departure**: a request is checked again when its headers are written (the transports
  hook the connection), so a token that aged while the request queued for a connection is
  replaced before it leaves. A token is sent only while more than `ARRIVAL_MARGIN` seconds
  (a tenth of a short token's life) are left: that is when the soft window ends.

Single flight has three rings. In this process, `_flight` elects one leader per store and
credential key among all threads and tasks. Across processes, the leader holds the store's
`lock(key)` while it renews. And under that lock the leader reads the store again and renews
only if the token there is still the stale one — so a caller that arrives just after another
finished adopts the new token instead of renewing twice.

This module holds the cache, the public paths and the flight; what a leader does is
`_renewal` (its steps) and `_leading` (its outcome), run by `_effects.drive`/`adrive`. The
manager sends nothing itself: a `TokenSender` from `transports/` does. It imports neither
requests nor httpx, and its clocks, sleeps and randomness are injected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple, cast

from . import _background, _flight, events
from ._effects import HttpReply, Port, TokenSender, adrive, drive
from ._endpoint import TokenEndpoint
from ._leading import Leader
from ._renewal import Renewal, in_memory, invalidating
from ._retry import MAX_RETRY_AFTER
from ._timing import (
    KEEPALIVE_SHARE,
    REFRESH_WARNING_MAX,
    REFRESH_WARNING_SHARE,
    RefreshWarning,
    departing_token,
    is_spent,
    keepalive_due,
    refresh_warning_at,
    renew_at,
)
from ._urls import origin_of
from .errors import StoreError, TokenEndpointUnavailable
from .flows import Grant, chain_grant
from .stores import TokenStore, credential_key
from .stores._durable import Spare
from .token import Token

__all__ = [
    "KEEPALIVE_SHARE",
    "REFRESH_WARNING_MAX",
    "REFRESH_WARNING_SHARE",
    "HttpReply",
    "OnToken",
    "TokenManager",
    "TokenSender",
    "keepalive_due",
    "refresh_warning_at",
]

logger = logging.getLogger(__name__)

OnToken = Callable[[Token], None]
"""Called with every new token once the store has it (persist a rotated refresh token)."""

_WAIT_MARGIN = 10.0  # seconds a waiter adds to the longest a renewal can take
_JITTER = random.Random()  # backoff jitter of its own: a program's seeded stream is left alone
REJECTION_INTERVAL = 10.0
"""Seconds during which a token that a 401 renewal produced, and that the API has not yet
accepted, is not renewed again when the API rejects it too."""


class _Cached(NamedTuple):
    """The current token and when to start renewing it: swapped as one reference."""

    token: Token
    renew_at: float


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
        monotonic: the clock of a waiter's deadline; injected by tests.
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
        uniform: Callable[[float, float], float] = _JITTER.uniform,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grant = grant
        self.store = store
        self.key = credential_key(*grant.identity())
        self.leeway = leeway
        self.refresh_idle_timeout = refresh_idle_timeout
        self.origin = origin_of(grant.token_url) if grant.can_renew else "static"
        self._clock = clock
        self._monotonic = monotonic
        self._flight_key = (id(store), self.key)
        self._cached: _Cached | None = None
        self._warning = RefreshWarning(self.origin, self.key, on_event)
        self._endpoint = endpoint = TokenEndpoint(
            grant, retries=retries, timeout=timeout, clock=clock, uniform=uniform
        )
        # A chain (a refresh token is the only credential) gets a spare copy on this machine
        # beside any store but memory (`_renewal`).
        spare = Spare() if chain_grant(grant) is not None and not in_memory(store) else None
        self._port = Port(
            store, self.key, spare=spare, sender=sender, sleep=sleep, async_sleep=async_sleep
        )
        # The renewal reaches back to the cache weakly: dropping the auth object frees the
        # manager (and its token) at once, as it did before the renewal was a part of its own.
        me = weakref.ref(self)
        self._renewal = Renewal(
            grant, self._port, endpoint, self.origin, clock=clock,
            own=lambda: _owned(me), adopt=lambda token: _adopted(me, token),
        )  # fmt: skip
        self._leader = Leader(self._renewal, endpoint, on_event=on_event, on_token=on_token)
        self._shared = not in_memory(store)  # other processes may renew this credential
        # The token the last 401 renewal produced, until an API answer accepts it (see
        # `confirm`), and when that renewal was made: a bound on renewals after 401s.
        self.unproven: Token | None = None
        self._accepted: Token | None = None
        self._rejection_lock = threading.Lock()  # guards the three fields above, no I/O
        self._rejection_renewed_at = float("-inf")

    @property
    def token(self) -> Token | None:
        """The token this manager holds, or `None`; no I/O."""
        return cached.token if (cached := self._cached) is not None else None

    @property
    def retries(self) -> int:
        """Extra tries of a token request on network errors, 5xx and 429."""
        return self._endpoint.retries

    @retries.setter
    def retries(self, retries: int) -> None:
        self._endpoint.retries = retries

    @property
    def timeout(self) -> float:
        """Seconds for each token request."""
        return self._endpoint.timeout

    @timeout.setter
    def timeout(self, timeout: float) -> None:
        self._endpoint.timeout = self._renewal.keeper.timeout = timeout

    @property
    def on_token(self) -> OnToken | None:
        """Called with every new token after the store has it."""
        return self._leader.on_token

    @on_token.setter
    def on_token(self, on_token: OnToken | None) -> None:
        self._leader.on_token = on_token

    @property
    def on_event(self) -> events.OnEvent | None:
        """Called with every `renewauth.events` value of this manager."""
        return self._leader.on_event

    @on_event.setter
    def on_event(self, on_event: events.OnEvent | None) -> None:
        self._leader.on_event = self._warning.on_event = on_event

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this manager reads (seconds since the epoch)."""
        return self._clock

    @property
    def sender(self) -> TokenSender:
        """The transport that sends this manager's token requests."""
        return self._port.sender

    # --- the paths every request takes --------------------------------------------------

    def token_for_request(self) -> Token:
        """A token to send now: cached when fresh, else renewed as the rules say."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.renew_at:
            return cached.token
        return self._renew(cached.token if cached else None, now, rejected=False)

    def token_fresh_for(self, seconds: float) -> Token | None:
        """The cached token if not due for renewal within `seconds`, else `None`: one clock
        read, no coroutine (a request whose token cannot age while it queues)."""
        if (cached := self._cached) is not None and self._clock() + seconds < cached.renew_at:
            return cached.token
        return None

    async def atoken_for_request(self) -> Token:
        """`token_for_request` for asyncio: never blocks the event loop."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.renew_at:
            return cached.token
        return await self._arenew(cached.token if cached else None, now, rejected=False)

    def token_at_departure(self, signed: Token, *, may_wait: bool = True) -> Token:
        """The token a request signed with `signed` should leave with, now that it leaves.

        A request may wait for a pooled connection long after it was signed. A current,
        fresh `signed` goes as it is (one clock call). A leaving request holds a connection
        (on HTTP/2 a stream id), so nothing slow happens here unless there is no token to
        send: a newer valid token is swapped in, a still-valid one leaves as it is, and only
        a spent one waits for the renewal in flight, if `may_wait` (else the API's 401 renews
        and resends it). A token for another server (`api_origin`) is never swapped in."""
        cached = self._cached
        now = self._clock()
        if cached is not None and cached.token is signed and now < cached.renew_at:
            return signed
        token = departing_token(signed, cached.token if cached else None, now)
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
        token = departing_token(signed, cached.token if cached else None, now)
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
        step, token = self._after_rejection(rejected, now)
        if step == "declined":  # no token call; but another process may have stored a newer one
            return self._other_valid(self._stored(), rejected, now)
        if step == "current":
            return token
        renewed = self._renew(token, now, rejected=True)
        return self._renewed_after_rejection(renewed, now) if step == "renew" else renewed

    async def arenew_rejected(self, rejected: Token) -> Token | None:
        """`renew_rejected` for asyncio."""
        now = self._clock()
        step, token = self._after_rejection(rejected, now)
        if step == "declined":
            return self._other_valid(await self._astored(), rejected, now)
        if step == "current":
            return token
        renewed = await self._arenew(token, now, rejected=True)
        return self._renewed_after_rejection(renewed, now) if step == "renew" else renewed

    def _after_rejection(
        self, rejected: Token, now: float
    ) -> tuple[Literal["declined", "renew", "current", "renew newer"], Token]:
        """What a 401 for `rejected` leads to (`renew_rejected` and its twin carry it out):
        the 401 budget declines; `rejected` is renewed; another caller's newer token is
        current and resent; or that newer token is due too and is renewed. A request
        rejected once does not take the soft window's "keep sending it" rule: a server
        that revokes the old access token when it refreshes may already have revoked it."""
        newer = self._newer_than(rejected)
        if newer is None:
            declined = _declines_renewal(
                self.unproven, self._rejection_renewed_at, rejected, now, self.origin
            )
            return ("declined" if declined else "renew"), rejected
        cached = self._cached
        if cached is not None and now < cached.renew_at:
            return "current", cached.token
        return "renew newer", newer

    def keepalive(self) -> bool:
        """Renew when the refresh token is past `KEEPALIVE_SHARE` of its life; True if renewed.

        Reads the store first (another process may have renewed), then renews through the
        usual single flight and store lock, as a rejected token would be: a caller that finds
        the store already renewed adopts that token instead of making a second call.

        Raises:
            TokenRequestError: the renewal failed (a refused refresh token: issue a new one).
            StoreError: the store could not be read.
        """
        stale, due = self._renewal.keepalive_target(*self._port.read(), self.refresh_idle_timeout)
        if not due:
            return False
        return not self._renew(stale, self._clock(), rejected=True).is_same_grant(stale)

    async def akeepalive(self) -> bool:
        """`keepalive` for asyncio."""
        stored, generation = await self._port.aread()
        stale, due = self._renewal.keepalive_target(stored, generation, self.refresh_idle_timeout)
        if not due:
            return False
        token = await self._arenew(stale, self._clock(), rejected=True)
        return not token.is_same_grant(stale)

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
            drive(invalidating(self._renewal), self._port)
        finally:
            flight.finish(abandoned=True)  # waiters, if any, renew from the expired token

    async def ainvalidate(self) -> None:
        """`invalidate` for asyncio."""
        loop = asyncio.get_running_loop()
        while True:
            flight, is_leader = _flight.begin(self._flight_key, leader_loop=loop)
            if is_leader:
                break
            await self._wait_async(flight, loop)
        try:
            await adrive(invalidating(self._renewal), self._port)
        finally:
            flight.finish(abandoned=True)

    # --- the 401 budget -----------------------------------------------------------------

    def _newer_than(self, rejected: Token) -> Token | None:
        cached = self._cached
        token = None if cached is None else cached.token
        if token is None or token.is_same_grant(rejected) or is_spent(token, self._clock()):
            return None
        return token  # another caller renewed since this request was signed

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
        if stored is None or stored.is_same_grant(rejected) or is_spent(stored, now):
            return None
        return self._adopt(stored)

    def _adopt(self, token: Token) -> Token:
        # By value, not identity: a copy of this process's own token read back from the
        # store (a caller that asked with the token before it) is still its own.
        elsewhere = self._shared and not token.is_same_grant(self._renewal.fetched)
        self._cached = _Cached(token, renew_at(token, self.leeway, renewed_elsewhere=elsewhere))
        if token.refresh_token is not None:
            self._warning.check(token, self.refresh_idle_timeout, self._clock())
        return token

    def resent(self, origin: str, status: int) -> None:
        """Record that a transport resent a request to `origin` after `status`."""
        events.emit(events.Resent(origin=origin, status=status), self._leader.on_event)

    # --- the flight: a thread and a task are the only differences --------------------------

    def _renew(self, stale: Token | None, now: float, *, rejected: bool) -> Token:
        soft = not rejected and stale is not None and not is_spent(stale, now)
        if soft and now < self._renewal.soft_retry_at:
            return cast(Token, stale)  # a soft renewal failed recently: wait before retrying
        while True:
            flight, is_leader = _flight.begin(self._flight_key)
            if is_leader:
                steps = self._leader.leading(flight, stale, soft=soft)
                if soft:  # `stale` is valid: it goes now, the renewal runs in the background
                    return _background.lead(
                        steps, self._port, flight, origin=self.origin, stale=stale
                    )
                return drive(steps, self._port)
            if soft:
                return cast(Token, stale)  # still valid: never wait in the soft window
            self._wait(flight)
            token = self._leader.outcome(flight, stale, self.token, rejected=rejected)
            if token is not None:
                return token

    async def _arenew(self, stale: Token | None, now: float, *, rejected: bool) -> Token:
        soft = not rejected and stale is not None and not is_spent(stale, now)
        if soft and now < self._renewal.soft_retry_at:
            return cast(Token, stale)
        loop = asyncio.get_running_loop()
        while True:
            flight, is_leader = _flight.begin(self._flight_key, leader_loop=loop)
            if is_leader:
                steps = self._leader.leading(flight, stale, soft=soft)
                if soft:
                    return _background.lead(
                        steps, self._port, flight, origin=self.origin, stale=stale, loop=loop
                    )
                # The renewal runs as a task of its own and the caller awaits it shielded: a
                # caller cancelled mid-renewal (a timeout around its request) must not cancel
                # a refresh the server has already answered, or the rotated refresh token in
                # that answer would be lost with it.
                return await asyncio.shield(loop.create_task(adrive(steps, self._port)))
            if soft:
                return cast(Token, stale)
            await self._wait_async(flight, loop)
            token = self._leader.outcome(flight, stale, self.token, rejected=rejected)
            if token is not None:
                return token

    def _wait(self, flight: _flight.Flight) -> None:
        _flight.wait_outcome(flight, self._wait_bound, self._monotonic, self._stuck)

    async def _wait_async(self, flight: _flight.Flight, loop: asyncio.AbstractEventLoop) -> None:
        await _flight.await_outcome(flight, loop, self._wait_bound, self._stuck)

    @property
    def _wait_bound(self) -> float:
        """Seconds a waiter gives the renewal in flight: every try, timeout and wait."""
        return (self.timeout + MAX_RETRY_AFTER) * (self.retries + 1) + _WAIT_MARGIN

    def _stuck(self) -> TokenEndpointUnavailable:
        return _stuck(self.origin, self._wait_bound)


def _stuck(origin: str, bound: float) -> TokenEndpointUnavailable:
    return TokenEndpointUnavailable(
        f"the renewal of the token for {origin} in flight did not finish within {bound:.0f} s; "
        "the token endpoint may hang (lower timeout=), or the renewing event loop is blocked "
        "by this very call",
        origin=origin,
    )


def _owned(manager: weakref.ref[TokenManager]) -> Token | None:
    """The token a manager holds, through a weak reference (`None` once it is gone)."""
    held = manager()
    return None if held is None else held.token


def _adopted(manager: weakref.ref[TokenManager], token: Token) -> Token:
    """`token`, adopted by the manager if it is still there (a writer thread may outlive
    it)."""
    held = manager()
    return token if held is None else held._adopt(token)


def _declines_renewal(
    unproven: Token | None, renewed_at: float, rejected: Token, now: float, origin: str
) -> bool:
    """Whether a 401 for the current token `rejected` must not renew it.

    So when the token came from a 401 renewal (`unproven`, made at `renewed_at`) less than
    `REJECTION_INTERVAL` ago and no API answer has accepted it since: the API rejects fresh
    tokens too, and renewing on every request would turn each of them into a token call. A
    token that has worked once (revoked later, say) is renewed at once, however soon.
    """
    since = now - renewed_at
    if not rejected.is_same_grant(unproven) or since >= REJECTION_INTERVAL:
        return False
    logger.debug(
        "%s rejected a token renewed %.1f s ago after another rejection; not renewing "
        "again before %.0f s have passed",
        origin,
        since,
        REJECTION_INTERVAL,
    )
    return True
