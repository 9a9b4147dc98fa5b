"""Single flight: one renewal per credential set in this process, whoever asks for it.

Threads and asyncio tasks (in any number of event loops) that need the same renewal at the
same moment meet here. The first becomes the leader and renews; the others wait for its
outcome — a thread on a `threading.Event`, a task on a future of its own loop, woken with
`call_soon_threadsafe` — so no event loop ever waits on a thread lock held across I/O.

The registry lock guards only a dictionary and a list for a few instructions; it is never
held while anything is sent, awaited or waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Hashable

from .errors import ConfigurationError
from .token import Token

__all__ = ["Flight", "await_outcome", "begin", "wait_outcome", "would_deadlock"]

_TAKEOVER_CHECK = 0.25  # seconds between a waiter's checks that its flight's leader still lives

_REGISTRY: dict[Hashable, Flight] = {}
_REGISTRY_LOCK = threading.Lock()


def _forget_flights_in_child() -> None:
    # A forked child inherits the parent's flights but none of the threads that lead them,
    # and perhaps a lock taken by a thread that no longer exists there: start afresh.
    global _REGISTRY_LOCK  # noqa: PLW0603 - replaced once, in the child, before any thread runs
    _REGISTRY_LOCK = threading.Lock()
    _REGISTRY.clear()


os.register_at_fork(after_in_child=_forget_flights_in_child)


class Flight:
    """One renewal in progress, and its outcome once it ends.

    Exactly one of `token`, `error` is set when it ends, unless the leader was cancelled or
    interrupted (`abandoned`): then waiters start a renewal of their own.
    """

    __slots__ = (
        "_async_waiters",
        "_done",
        "_key",
        "_leader_thread",
        "abandoned",
        "error",
        "leader_loop",
        "token",
    )

    def __init__(self, key: Hashable, leader_loop: asyncio.AbstractEventLoop | None) -> None:
        self._key = key
        self._leader_thread = threading.current_thread()
        self._done = threading.Event()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.leader_loop = leader_loop
        self.token: Token | None = None
        self.error: Exception | None = None
        self.abandoned = False

    def finish(
        self, *, token: Token | None = None, error: Exception | None = None, abandoned: bool = False
    ) -> None:
        """End the flight: record the outcome, then wake every waiter, sync and async."""
        with _REGISTRY_LOCK:
            # Removed first, so a caller that arrives after this point starts a new flight
            # and, as its leader, finds the new token in the store instead of renewing again.
            if _REGISTRY.get(self._key) is self:
                del _REGISTRY[self._key]
            self.token, self.error, self.abandoned = token, error, abandoned
            waiters, self._async_waiters = self._async_waiters, []
            self._done.set()
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, future in waiters:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            # One wake-up per loop, however many tasks wait there. A closed loop raises
            # RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake_gradually, loop, futures)

    def led_by(self, thread: threading.Thread) -> None:
        """The renewal goes on in `thread` (in the background): a waiter takes the flight over
        only once that thread has died, whatever becomes of the caller that began it."""
        self._leader_thread, self.leader_loop = thread, None

    def abandon_if_leader_gone(self) -> bool:
        """End the flight as abandoned if its leader can no longer finish it: its event loop
        is closed or stopped (its task will never run again), or its thread has died.

        Returns:
            Whether it did; a waiter then starts a renewal of its own.
        """
        loop = self.leader_loop
        if loop is not None:
            gone = loop.is_closed() or not loop.is_running()
        else:
            gone = not self._leader_thread.is_alive()
        if gone and not self._done.is_set():
            self.finish(abandoned=True)
        return gone

    def wait(self, timeout: float) -> bool:
        """Block this thread until the flight ends; `False` if `timeout` seconds pass first."""
        return self._done.wait(timeout)

    async def wait_async(self) -> None:
        """Suspend this task, not its event loop, until the flight ends."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with _REGISTRY_LOCK:
            if self._done.is_set():
                return
            self._async_waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with _REGISTRY_LOCK:
                if (loop, future) in self._async_waiters:
                    self._async_waiters.remove((loop, future))
            raise


_WAKE_PER_ITERATION = 8


def _wake_gradually(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[None]]) -> None:
    """Wake a few waiters per loop iteration, so that 200 tasks resuming at once after one
    renewal do not hold the loop for one long iteration (other tasks, timers and I/O get
    their turn in between)."""
    for future in futures[:_WAKE_PER_ITERATION]:
        if not future.done():
            future.set_result(None)
    if len(futures) > _WAKE_PER_ITERATION:
        loop.call_soon(_wake_gradually, loop, futures[_WAKE_PER_ITERATION:])


def begin(
    key: Hashable, *, leader_loop: asyncio.AbstractEventLoop | None = None
) -> tuple[Flight, bool]:
    """Join the renewal of `key` in flight, or start one: `(flight, is_leader)`.

    Args:
        key: what is renewed (a store and a credential key).
        leader_loop: the caller's event loop when it is an asyncio task, else `None`.
    """
    with _REGISTRY_LOCK:
        flight = _REGISTRY.get(key)
        if flight is not None:
            return flight, False
        flight = _REGISTRY[key] = Flight(key, leader_loop)
        return flight, True


def would_deadlock(flight: Flight) -> bool:
    """Whether a blocking wait here would stall the loop that runs the flight's leader.

    That happens when sync code (a `requests` call) runs inside a coroutine of the very loop
    whose task is renewing: the thread would wait for a task it prevents from running.
    """
    if flight.leader_loop is None:
        return False
    try:
        return asyncio.get_running_loop() is flight.leader_loop
    except RuntimeError:
        return False


def wait_outcome(
    flight: Flight, bound: float, monotonic: Callable[[], float], stuck: Callable[[], Exception]
) -> None:
    """Block this thread until `flight` ends, or its leader is gone (then take it over).

    Raises:
        ConfigurationError: the leader is a task of the loop this thread would block.
        Exception: `stuck()`, when `bound` seconds (of `monotonic`) pass first.
    """
    if would_deadlock(flight):
        raise ConfigurationError(
            "a blocking call (requests, httpx.Client, get_token()) needs the token that a "
            "task of this same event loop is renewing, and waiting would freeze the loop; "
            "use httpx.AsyncClient or await aget_token() in coroutines, or run the "
            "blocking call in a thread with asyncio.to_thread()"
        )
    deadline = monotonic() + bound
    while not flight.wait(_TAKEOVER_CHECK):
        if flight.abandon_if_leader_gone():
            return  # its leader can no longer finish (a closed loop): take it over
        if monotonic() >= deadline:
            raise stuck()


async def await_outcome(
    flight: Flight,
    loop: asyncio.AbstractEventLoop,
    bound: float,
    stuck: Callable[[], Exception],
) -> None:
    """`wait_outcome` for a task: suspends it, never its loop (the loop's clock bounds it)."""
    deadline = loop.time() + bound
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
                raise stuck() from None
