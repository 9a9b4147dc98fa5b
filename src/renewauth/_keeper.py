"""The kept-token writer: a renewed token the store refused, kept in memory until it is in.

When the store refuses the write of a renewed token (down, full, read-only), the token is
kept here and a thread writes it as soon as the store takes writes again. For a chain (a
refresh token that works once) the store's lock, and this machine's, stay held until then:
other processes wait rather than present the refresh token the server has just spent. At
interpreter exit (once the renewals in flight have ended, `_background`) a kept token is
written once more, else left in the spare copy, else an ERROR
says the chain breaks. A forked child forgets it: the parent's writer writes it.

This module decides nothing about renewals; it only keeps, writes and lets go.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import _background
from .errors import ConfigurationError, StoreError
from .stores._durable import describe_store
from .token import Token

if TYPE_CHECKING:
    from ._effects import Port

__all__ = ["Keeper", "Kept"]

logger = logging.getLogger("renewauth.manager")

_T = TypeVar("_T")

_FLUSH_FIRST, _FLUSH_MAX = 0.02, 1.0  # seconds between tries of writing a kept token
_WAIT_MARGIN = 10.0  # seconds a write on another thread's loop may take beyond the timeout


@dataclass(slots=True)
class Kept:
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


class Keeper:
    """Keeps one credential's refused token and writes it in a thread of its own.

    Args:
        port: the store's reads and writes.
        origin: the token endpoint's origin, for messages.
        chain: whether the credential is a refresh-token chain (then the store is read
            first, and a token further along the chain wins).
        timeout: seconds a token request takes at most, for writes on another loop.
        stored: gives (weakly held) what to call when the writer is done with a token:
            with the generation written, or `None` when another process wrote meanwhile.
    """

    def __init__(
        self,
        port: Port,
        origin: str,
        *,
        chain: bool,
        timeout: float,
        stored: Callable[[], Callable[[Token, int | None], None] | None],
    ) -> None:
        self.port = port
        self.origin = origin
        self.chain = chain
        self.timeout = timeout
        self.stored = stored
        self.kept: Kept | None = None
        self.lock = threading.Lock()  # guards `kept` for a few instructions, no I/O

    def claim(self) -> Kept | None:
        """The kept token, marked busy (a renewal runs from it), or `None`."""
        with self.lock:
            kept = self.kept
            if kept is not None:
                kept.busy = True
            return kept

    def done(self, kept: Kept) -> None:
        """The renewal from `kept` is over: the writer may write it."""
        with self.lock:
            kept.busy = False

    def current(self) -> Kept | None:
        """The kept token, if any (not claimed)."""
        with self.lock:
            return self.kept

    def keep(
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
        with self.lock:
            self.kept = Kept(token, generation, release, loop)
        _KEEPERS.add(self)
        if not quiet:  # a local renewal while the store is unreachable said so already
            logger.warning(
                "the renewed token for %s could not be stored (%s); it is kept in memory "
                "and written as soon as the store takes writes again",
                self.origin,
                error,
            )
        threading.Thread(target=self._write, name="renewauth-store-writer", daemon=True).start()

    def _write(self) -> None:
        """The writer thread: retries until the store has the kept token (or a newer one).

        A chain's kept token is in the spare copy already (the renewal put it there), so that
        a process that exits (or is killed) before the store takes it leaves it where the
        next one finds it."""
        delay = _FLUSH_FIRST
        pause = threading.Event()
        while True:
            with self.lock:
                kept = self.kept
                if kept is None:
                    return
                token, generation, busy = kept.token, kept.generation, kept.busy
            if busy:  # a renewal runs from it: write its result instead
                pause.wait(_FLUSH_FIRST)
                continue
            try:
                written, lost = self._write_once(kept, token, generation)
            except Exception:  # the store is still down: try again, a little later each time
                pause.wait(delay)
                delay = min(delay * 2, _FLUSH_MAX)
                continue
            if lost:  # the store lost writes (emptied, restarted without persistence)
                stored_generation = self._generation_quietly(kept)
                with self.lock:
                    kept.generation = stored_generation
                continue
            with self.lock:
                if kept.busy or kept.token is not token:
                    if written is not None:
                        kept.generation = written  # renewed meanwhile: write the newer one
                    continue
                self.kept = None
            stored = self.stored()
            if stored is not None:  # else its renewal is gone: nobody adopts the token
                stored(token, written)
            if kept.release is not None:
                try:
                    kept.release()
                except Exception as exc:
                    logger.warning("store lock for %s not released (%s)", self.origin, exc)
            return

    def _write_once(self, kept: Kept, token: Token, generation: int) -> tuple[int | None, bool]:
        """One try of the writer: the generation written, or `None`; and whether the store
        lost writes (write again over what it holds now).

        A chain's store is read first: a token there at least as far along the chain as the
        kept one (written by this writer already, or renewed by a process that continued
        from the spare copy) wins, and the kept one is not written over it, whatever the
        generations say (a restarted Redis counts them from 0 again)."""
        if self.chain:
            stored, stored_generation = self._read(kept)
            if stored is not None and stored.sequence >= token.sequence:
                return None, False
            written = self._write_from_thread(kept, token, stored_generation)
            return written, written is None  # raced with another writer: look again
        written = self._write_from_thread(kept, token, generation)
        return written, written is None and self._read(kept)[1] < generation

    def _in_store(self, kept: Kept) -> bool:
        """Whether the store holds the kept token, or (for a chain) one further along."""
        try:
            stored, _ = self._read(kept)
        except Exception:
            return False
        if stored is None:
            return False
        if self.chain:
            return stored.sequence >= kept.token.sequence
        return stored.is_same_grant(kept.token)

    def _read(self, kept: Kept) -> tuple[Token | None, int]:
        return self._on_any_loop(kept, self.port.read, self.port.aread)

    def _write_from_thread(self, kept: Kept, token: Token, generation: int) -> int | None:
        return self._on_any_loop(
            kept,
            lambda: self.port.write(token, generation),
            lambda: self.port.awrite(token, generation),
        )

    def _on_any_loop(
        self, kept: Kept, call: Callable[[], _T], acall: Callable[[], Coroutine[Any, Any, _T]]
    ) -> _T:
        """`call()` from the writer thread; for an asyncio-only store (it refuses blocking
        calls), `acall()` on the loop that kept the token, while that loop runs."""
        try:
            return call()
        except ConfigurationError:
            loop = kept.loop
            if loop is None or not loop.is_running():
                raise
            future = asyncio.run_coroutine_threadsafe(acall(), loop)
            return future.result(timeout=self.timeout + _WAIT_MARGIN)

    def _generation_quietly(self, kept: Kept) -> int:
        try:
            return self._read(kept)[1]
        except Exception:
            return 0

    def flush_at_exit(self) -> None:
        """At interpreter exit: a kept token the store never took is written once more, else
        left in the spare copy for the next process of this machine, else an ERROR says
        that the chain breaks. Never a token in the message: its origin and store key."""
        with self.lock:
            kept, self.kept = self.kept, None
        if kept is None:
            return
        try:
            written, _ = self._write_once(kept, kept.token, kept.generation)
        except Exception:
            written = None
        if written is None and self._in_store(kept):
            written = -1  # the writer (or a process further along the chain) got there first
        if written is None and self.chain:
            self._leave_in_spare(kept)
        if kept.release is not None:
            with contextlib.suppress(Exception):
                kept.release()

    def _leave_in_spare(self, kept: Kept) -> None:
        # The newest kept token (a renewal from a kept one replaces it), put again: a put
        # never takes the spare back along the chain, and says where the token is.
        spare, key = self.port.spare, self.port.key
        spared = None if spare is None else spare.put(key, kept.token)
        if spared is not None:
            logger.warning(
                "the token store never took the renewed token for %s (store key %s) "
                "before this process exited; it is left in %s, where the next process "
                "with this credential on this machine continues from it",
                self.origin,
                key[:12],
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
                key[:12],
                describe_store(self.port.store),
            )

    def forget(self) -> None:
        """In a forked child: the kept token is the parent's to write."""
        self.kept = None
        self.lock = threading.Lock()


# Keepers that kept a token the store refused: at exit each writes it once more, or leaves
# it in the spare copy, or says that it is lost (`Keeper.flush_at_exit`).
_KEEPERS: weakref.WeakSet[Keeper] = weakref.WeakSet()


@atexit.register
def _flush_kept_at_exit() -> None:
    # The renewals still in flight first: one may hand a token the store refuses to a keeper.
    _background.finish_at_exit()
    for keeper in list(_KEEPERS):
        keeper.flush_at_exit()


def _forget_kept_in_child() -> None:
    # A forked child has the kept token but not the writer thread, nor the locks it holds:
    # the parent's writer writes it; the child renews from the store and the spare copy.
    for keeper in list(_KEEPERS):
        keeper.forget()


os.register_at_fork(after_in_child=_forget_kept_in_child)
