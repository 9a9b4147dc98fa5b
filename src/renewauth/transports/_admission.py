"""Admission for `httpx.AsyncClient`: requests queue here, before they are signed, rather
than in httpcore's connection pool.

httpcore's async pool walks every queued request each time a request starts or ends, so
200 tasks on 10 connections spend a third of the CPU in that walk (measured with a static
header: 292 requests/s with all 200 queued in the pool, 410 with 20 let in at a time). An
auth object sees each request when it is signed and, through httpcore's `trace` hook, when
its headers are written; the difference is the pool's queue. So, once a departure has been
seen (the transport is httpcore's), a request waits here while the requests already signed
and not yet sent are as many as those sent and not yet answered (about the connections in
use). It then joins a short queue in the pool, and is signed with a token that is fresh when
it gets a connection.

A request never waits longer than its pool timeout here (it then queues in the pool as it
would without renewauth, where that timeout applies), and a transport that never calls the
hook (a mock, ASGI) never waits at all. One gate per event loop and auth object; everything
runs on that loop, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["DONE", "QUEUED", "SENT", "Gate"]

QUEUED, SENT, DONE = 0, 1, 2


class Gate:
    """Counts of one auth object's requests on one event loop, and those waiting to enter."""

    __slots__ = ("_waiters", "blind", "queued", "seen", "sent")

    def __init__(self) -> None:
        self.queued = 0  # signed, headers not written yet: waiting in the pool
        self.sent = 0  # headers written, the answer not back to the auth flow yet
        self.seen = False  # a departure was seen: the transport calls the hook
        self.blind = False  # a request was answered unseen: the counts cannot be trusted
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _has_room(self) -> bool:
        return not self.seen or self.queued < max(self.sent, 1)

    def enter_now(self) -> bool:
        """Count the request as queued if there is room now (no await: the usual case)."""
        if not self._waiters and (not self.seen or self.queued < max(self.sent, 1)):
            self.queued += 1
            return True
        return False

    async def enter(self, pool_timeout: float | None) -> None:
        """Wait for room (at most `pool_timeout`), then count the request as queued."""
        if self.enter_now():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(pool_timeout):
                await waiter
        except TimeoutError:
            if not waiter.done() or waiter.cancelled():
                self.queued += 1  # waited long enough: join the pool's queue as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.queued -= 1  # let in, then cancelled before it could go
                self._wake()
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def depart(self, stage: int) -> int:
        """A request's headers are written now; returns its new stage."""
        self.seen = not self.blind
        if stage == QUEUED:
            self.queued -= 1
            self.sent += 1
            self._wake()
        return SENT

    def again(self, stage: int) -> int:
        """A request is sent once more (a resend after a 401, a DPoP nonce): queued again."""
        if stage == SENT:
            self.sent -= 1
            self.queued += 1
        return QUEUED

    def answered_unseen(self) -> None:
        """A request came back answered without its departure seen: something replaced its
        `trace` (a request hook, instrumentation), so the counts no longer tell the pool's
        queue. The gate opens for good on this loop, as if the transport had no hook."""
        self.blind = True
        self.seen = False
        self._wake()

    def leave(self, stage: int) -> int:
        """A request's auth flow ended (answered, failed or cancelled)."""
        if stage == QUEUED:
            self.queued -= 1
        elif stage == SENT:
            self.sent -= 1
        if stage != DONE:
            self._wake()
        return DONE

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self._has_room():
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.queued += 1  # counted now, so that the next check sees it
