"""Admission for `httpx.AsyncClient`: requests queue here, before they are signed, rather
than in httpcore's connection pool; a request waits only for its own pool.

httpcore's async pool walks every queued request each time a request starts or ends, so
200 tasks on 10 connections spend a third of the CPU in that walk (measured with a static
header: 292 requests/s with all 200 queued in the pool, 410 with 20 let in at a time). An
auth object sees each request when it is signed and, through httpcore's `trace` hook, when
its headers are written; the difference is the pool's queue. So, once a departure has been
seen (the transport is httpcore's), a request waits here while the requests already signed
and not yet sent are as many as those sent and not yet answered (about the connections in
use). It then joins a short queue in the pool, and is signed with a token that is fresh when
it gets a connection.

One auth object often serves several clients (always under `renewauth.patch()`), and a
request must never wait behind requests queued for another client's pool. The auth flow is
handed only the request, and finding the pool costs more than the rest of the gate (the
caller's frame, about 10,000 instructions on CPython 3.11), so it is found only when it
matters. Each event loop has a *loop gate* that counts every request of the auth object on
that loop; a request that finds room there (and nobody waiting) enters at once, and that
check is all the gate costs a request on the hot path. Only a request that the loop gate
would hold asks for its pool: `client_pool` looks a few frames up for the client's
`_send_handling_auth` (httpx's, or a fork's of that name; renewauth's retrofit wrappers sit
in between) and asks that client's `_transport_for_url`, the transport it is about to send
the request through. The request then waits, if at all, at that pool's gate, which counts
the requests of that pool that came this way (the loop gate counts them too) and applies the
same rule to them alone. Pool gates are kept weakly by their transport, so a dropped client
takes its gate along. When no client is found (the flow driven by something else) or its
transport cannot be keyed, the request gets a gate of its own that never holds it: it queues
in the pool as it would without renewauth, and never waits for another client's pool.

A request never waits longer than its pool timeout here (it then queues in the pool as it
would without renewauth, where that timeout applies), and a transport that never calls the
hook (a mock, ASGI) never waits at all, unless another pool's departures were seen on its
loop: then until its first request is answered. All the gates of a loop are used on that
loop only, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from types import FrameType

__all__ = ["DONE", "QUEUED", "SENT", "Gate", "client_pool", "pool_gate"]

QUEUED, SENT, DONE = 0, 1, 2


class Gate:
    """Counts of one auth object's requests on one event loop, and those waiting to enter:
    all of them (a loop gate), or those of one pool (a pool gate, whose `parent` is the loop
    gate, which counts them too). `blind=True`: a gate that never holds a request.

    A pool gate starts as its loop gate is: once departures were seen on the loop, the first
    requests of a pool found saturated are held at once, rather than all let in until one of
    them leaves (a second flood of the pool's queue: about a quarter of the requests/s of 2 s
    runs with 200 tasks)."""

    __slots__ = ("_waiters", "blind", "hooked", "parent", "queued", "seen", "sent", "waiting")

    def __init__(self, parent: Gate | None = None, *, blind: bool = False) -> None:
        self.queued = 0  # signed, headers not written yet: waiting in the pool
        self.sent = 0  # headers written, the answer not back to the auth flow yet
        # A departure was seen (for a pool gate, also one of its loop's before it existed):
        # the transport calls the hook.
        self.seen: bool = parent is not None and parent.seen and not blind
        self.hooked = False  # a departure of this gate's own requests was seen
        self.blind = blind  # a request was answered unseen: the counts cannot be trusted
        self.waiting = 0  # requests waiting to enter here or, for a loop gate, at its pools
        self.parent = parent
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _has_room(self) -> bool:
        return not self.seen or self.queued < max(self.sent, 1)

    def enter_now(self) -> bool:
        """Count the request as queued if there is room now (no await: the usual case)."""
        if not self.waiting and (not self.seen or self.queued < max(self.sent, 1)):
            self.queued += 1
            if self.parent is not None:
                self.parent.queued += 1
            return True
        return False

    async def enter(self, pool_timeout: float | None) -> None:
        """Wait for room (at most `pool_timeout`), then count the request as queued."""
        if self.enter_now():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._count_waiting(1)
        try:
            async with asyncio.timeout(pool_timeout):
                await waiter
        except TimeoutError:
            if not waiter.done() or waiter.cancelled():
                self._count_queued(1)  # waited long enough: join the pool's queue as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._count_queued(-1)  # let in, then cancelled before it could go
                self._wake()
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                    self._count_waiting(-1)

    def depart(self, stage: int) -> int:
        """A request's headers are written now; returns its new stage."""
        self.seen = not self.blind
        self.hooked = True
        parent = self.parent
        if parent is not None:
            parent.seen = not parent.blind
        if stage == QUEUED:
            self.queued -= 1
            self.sent += 1
            if parent is not None:
                parent.queued -= 1
                parent.sent += 1
            self._wake()
        return SENT

    def again(self, stage: int) -> int:
        """A request is sent once more (a resend after a 401, a DPoP nonce): queued again."""
        if stage == SENT:
            self.sent -= 1
            self._count_queued(1)
            if self.parent is not None:
                self.parent.sent -= 1
        return QUEUED

    def answered_unseen(self) -> None:
        """A request came back answered without its departure seen: something replaced its
        `trace` (a request hook, instrumentation), so the counts no longer tell the pool's
        queue. This gate and its loop gate open for good, as if the transport had no hook:
        a request that finds no one waiting on the loop enters at once. A pool gate that
        never saw a departure of its own (its transport has no hook: a mock, ASGI) opens
        alone."""
        opened = (self,) if self.parent is None or not self.hooked else (self, self.parent)
        for gate in opened:
            gate.blind = True
            gate.seen = False
            gate._wake()

    def leave(self, stage: int) -> int:
        """A request's auth flow ended (answered, failed or cancelled)."""
        if stage == QUEUED:
            self._count_queued(-1)
        elif stage == SENT:
            self.sent -= 1
            if self.parent is not None:
                self.parent.sent -= 1
        if stage != DONE:
            self._wake()
        return DONE

    def _count_queued(self, delta: int) -> None:
        self.queued += delta
        if self.parent is not None:
            self.parent.queued += delta

    def _count_waiting(self, delta: int) -> None:
        """A waiter joined or left `_waiters` (the parent counts its pools' waiters)."""
        self.waiting += delta
        if self.parent is not None:
            self.parent.waiting += delta

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self._has_room():
            waiter = waiters.popleft()
            self._count_waiting(-1)
            if not waiter.done():
                waiter.set_result(None)
                self._count_queued(1)  # counted now, so that the next check sees it


# How far up from the auth flow's driver the client's `_send_handling_auth` may be: httpx
# drives the flow itself (1); renewauth's retrofit wraps it once for a fork's `Auth` and for a
# resend after the program's own token was rejected (2); one more for an auth of the
# program's own that wraps ours.
_CLIENT_DEPTH = 3
_CLIENT_DRIVER = "_send_handling_auth"


def client_pool(driver: FrameType | None, url: object) -> object | None:
    """The transport (the connection pool) through which the `httpx.AsyncClient`, or a
    fork's, that drives an auth flow sends a request to `url`; `driver` is the frame that
    runs the flow. `None` when no such client is found."""
    frame = driver
    for _ in range(_CLIENT_DEPTH):
        if frame is None:
            return None
        if frame.f_code.co_name == _CLIENT_DRIVER:
            transport_for_url = getattr(frame.f_locals.get("self"), "_transport_for_url", None)
            if not callable(transport_for_url):
                return None
            try:
                transport: object = transport_for_url(url)
            except Exception:  # a fork whose internals differ: never fail the request here
                return None
            return transport
        frame = frame.f_back
    return None


def pool_gate(
    gates: weakref.WeakKeyDictionary[object, Gate], pool: object | None, loop_gate: Gate
) -> Gate:
    """The gate of `pool` under `loop_gate`, kept in `gates` (by pool, weakly); for a pool
    that is unknown (`None`) or cannot be kept, a gate of the request's own that never
    holds it."""
    if pool is not None:
        try:
            gate = gates.get(pool)
            if gate is None or gate.parent is not loop_gate:
                # A new pool, or one used on another event loop now: the requests of the
                # old loop keep the old gate.
                gate = gates[pool] = Gate(loop_gate)
            return gate
        except TypeError:  # a transport that takes no weak reference, or no hash
            pass
    return Gate(loop_gate, blind=True)
