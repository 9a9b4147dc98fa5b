"""Soft-window renewals off the request path, and finished before the interpreter exits.

A token in its soft window is still valid: the request that notices it sends it at once, and
the renewal runs here, in a thread of its own (sync and asyncio callers alike: the thread
uses the store's and the sender's blocking methods, so no event loop ever waits on it, and
it outlives the loop of the task that started it). It stays the flight's leader, so the
single flight holds across threads, tasks and processes as before.

A renewal may have spent a refresh token on the server before its answer is stored, so one
in flight when the interpreter exits is waited for (at most `EXIT_WAIT` seconds in all),
before the kept-token writer's own exit flush: its rotated refresh token reaches the store.
A store that serves asyncio only (a `redis.asyncio` client) cannot be used from a thread;
there the renewal is a task of the caller's loop, kept here until it ends.

This module decides nothing about renewals: it only runs them and waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from ._effects import Port, Steps, adrive, drive
from ._flight import Flight
from .token import Token

__all__ = ["EXIT_WAIT", "finish_at_exit", "lead", "running", "wait_idle"]

logger = logging.getLogger("renewauth.manager")

EXIT_WAIT = 30.0
"""Seconds the interpreter's exit waits, in all, for renewals still in flight."""

_THREADS: dict[threading.Thread, str] = {}  # a renewal's thread -> its token endpoint's origin
_TASKS: set[asyncio.Task[Any]] = set()  # held here: the loop keeps only weak references
_LOCK = threading.Lock()
_ENDED = threading.Condition(_LOCK)  # notified whenever a renewal's thread ends


def lead(
    steps: Steps[Token],
    port: Port,
    flight: Flight,
    *,
    origin: str,
    stale: Token | None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Token:
    """Run a soft-window renewal's `steps` (its flight's leader) in the background, and give
    back the still-valid `stale` to send now. The thread takes over the flight's lead; a
    store that serves asyncio only gets a task of the caller's `loop` instead. With no new
    thread to be had (the interpreter is exiting), a thread renews where it is."""
    if loop is None or port.threads:
        thread = threading.Thread(
            target=_run, args=(lambda: drive(steps, port), origin), name="renewauth-renewal",
            daemon=True,
        )  # fmt: skip
        with _LOCK:
            _THREADS[thread] = origin
        try:
            thread.start()
        except BaseException as exc:
            if thread.is_alive():  # interrupted once it ran: it leads, and is waited for
                flight.led_by(thread)
                raise
            with _LOCK:
                _THREADS.pop(thread, None)
            if isinstance(exc, RuntimeError) and loop is None:
                return drive(steps, port)  # no new thread at exit: renew here
            if not isinstance(exc, RuntimeError):
                flight.finish(abandoned=True)  # never started: a waiter renews
                raise
        else:
            flight.led_by(thread)
            return cast(Token, stale)
    run_in_task(adrive(steps, port), cast(asyncio.AbstractEventLoop, loop))
    return cast(Token, stale)


def _run(renew: Callable[[], object], origin: str) -> None:
    """A renewal's thread. Its failure was recorded by the renewal itself (logged, retried
    later, told to any waiter); what still reaches here is logged once, never with its
    message (a token endpoint's answer may quote what it was sent)."""
    try:
        renew()
    except Exception as exc:
        logger.warning(
            "renewing the token for %s in the background failed (%s); the next request "
            "that needs it renews it",
            origin,
            type(exc).__name__,
        )
    finally:
        with _ENDED:
            _THREADS.pop(threading.current_thread(), None)
            _ENDED.notify_all()


def run_in_task(renewal: Coroutine[Any, Any, object], loop: asyncio.AbstractEventLoop) -> None:
    """Start `renewal` as a task of `loop` (for a store that serves asyncio only)."""
    task = loop.create_task(renewal)
    _TASKS.add(task)
    task.add_done_callback(_forget_task)


def _forget_task(task: asyncio.Task[Any]) -> None:
    _TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "renewing a token in the background failed (%s); the next request that needs "
            "it renews it",
            type(task.exception()).__name__,
        )


def running() -> int:
    """How many background renewals are in flight in this process (threads and tasks)."""
    with _LOCK:
        return len(_THREADS) + len(_TASKS)


def wait_idle(timeout: float) -> bool:
    """Wait until no renewal runs in a thread of this process (at most `timeout` seconds):
    whether none does. Tests that move a manual clock call it first."""
    with _ENDED:
        return _ENDED.wait_for(lambda: not _THREADS, timeout)


def finish_at_exit(wait: float = EXIT_WAIT) -> None:
    """Wait for the renewals in flight, `wait` seconds in all; say which did not finish."""
    deadline = time.monotonic() + wait
    with _LOCK:
        threads = list(_THREADS.items())
    for thread, origin in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            logger.warning(
                "the renewal of the token for %s was still running after %.0f s at exit; "
                "a token it renews now is lost with this process",
                origin,
                wait,
            )


def _forget_in_child() -> None:
    # A forked child has none of the parent's threads; the parent finishes their renewals.
    global _LOCK, _ENDED  # noqa: PLW0603 - replaced once, in the child, before any thread runs
    _LOCK = threading.Lock()
    _ENDED = threading.Condition(_LOCK)
    _THREADS.clear()
    _TASKS.clear()


os.register_at_fork(after_in_child=_forget_in_child)
