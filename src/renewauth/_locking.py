"""How a renewal comes to hold the store's lock, or finds that it need not.

A fleet of processes shares one credential in one store, and their tokens reach the soft
window together. Taking the lock in turn, each only to read what the one before it wrote,
would make every renewal a queue through the lock, and every waiter a poller of the store.
So (`locked_or_renewed`):

- **Read first.** The store is read without a lock: a token another process renewed is
  adopted at the cost of one read.
- **Try, don't queue.** Only a process that still sees the stale token tries the lock, once.
- **Wait for the write.** If another process holds the lock, it is renewing: this one waits
  for its write — woken by it where the store tells (`WriteNoticeStore`: Redis), else after a
  pause that doubles (`FileStore`, whose reads are local) — and reads it, trying the lock again
  only if the token is still stale (the holder failed or died).

A chain beside a store that is not a local file also takes this machine's lock first
(`taking_locks`), so the processes of one machine wait there, without store calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

from ._effects import (
    Held,
    LockMachine,
    Port,
    PutSpare,
    Read,
    ReadSpare,
    Steps,
    TryLock,
    Unlock,
    WaitRenewed,
)
from .errors import StoreError
from .token import Token

__all__ = ["StoreDown", "locked_or_renewed", "taking_locks"]

_FIRST_PAUSE, _LONGEST_PAUSE = 0.02, 1.0  # seconds between a waiter's looks at the store
_LOCK_WAIT = 300.0  # seconds a waiter waits for a holder's write before giving up, as stores do

RenewedElsewhere = Callable[[Token | None, Token | None, int, Token | None], Token | None]
"""`(stale, stored, generation, spare)`: `stored` (at `generation`), adopted, when another
process renewed it and it is what a renewal under the lock would adopt too (`spare`: this
machine's spare copy of a chain, which may be further along); else `None`."""


class StoreDown(Exception):
    """The store failed before any token call was made: nothing can have been lost yet."""

    def __init__(self, error: StoreError) -> None:
        super().__init__(str(error))
        self.error = error


def taking_locks(
    stale: Token | None, renewed_elsewhere: RenewedElsewhere, port: Port, *, machine: bool
) -> Steps[tuple[Held | None, Held | Token]]:
    """This machine's lock (when `machine`) and the store's, or the token another process
    renewed (then no lock is held); a chain's spare copy (`port.spare`) is read with the
    store. A store that fails raises `StoreDown`."""
    held_machine = cast(Held, (yield LockMachine())) if machine else None
    try:
        held = yield from locked_or_renewed(stale, renewed_elsewhere, spare=port.spare is not None)
    except GeneratorExit:
        raise  # closed unfinished (never by the drivers): nothing more may be yielded
    except BaseException as exc:
        yield Unlock(held_machine)
        if isinstance(exc, StoreError):
            raise StoreDown(exc) from None
        raise
    if isinstance(held, Token):
        yield Unlock(held_machine)
        return None, held
    return held_machine, held


def locked_or_renewed(
    stale: Token | None,
    renewed_elsewhere: RenewedElsewhere,
    *,
    spare: bool,
    monotonic: Callable[[], float] = time.monotonic,
) -> Steps[Held | Token]:
    """The store's lock, or the token another process renewed, adopted (see above).

    Raises:
        StoreError: the lock was held `_LOCK_WAIT` seconds with nothing written meanwhile (as
            a store's own `lock` gives up): its holder may be stuck.
    """
    pauses = _pauses_between_tries()
    deadline = monotonic() + _LOCK_WAIT
    while True:
        stored, generation = yield Read()
        kept_here = (yield ReadSpare()) if spare else None
        found = renewed_elsewhere(stale, stored, generation, kept_here)
        if found is not None:
            return (yield from _spared(found, kept_here, spare=spare))
        held = yield TryLock()
        if held is not None:
            return cast(Held, held)
        written = yield WaitRenewed(generation, next(pauses))
        if written is not None:
            found = renewed_elsewhere(stale, written, generation + 1, kept_here)
            if found is not None:
                return (yield from _spared(found, kept_here, spare=spare))
        if monotonic() >= deadline:
            raise StoreError(
                f"another process has held the token store's renewal lock for "
                f"{_LOCK_WAIT:.0f} s without writing a token; it may be stuck"
            )


def _spared(found: Token, kept_here: Token | None, *, spare: bool) -> Steps[Token]:
    """`found`, put in this machine's spare copy first when it is further along the chain
    than the copy (as a leader under the lock does, `Renewal._taken`): the spare must hold
    the newest token this machine has seen, or a store that restarts empty leaves this
    machine's next process a spent refresh token."""
    if spare and (kept_here is None or found.sequence > kept_here.sequence):
        yield PutSpare(found)
    return found


def _pauses_between_tries() -> Iterator[float]:
    """Seconds between a waiter's looks at a store that cannot wake it: from `_FIRST_PAUSE`,
    doubling up to `_LONGEST_PAUSE`."""
    pause = _FIRST_PAUSE
    while True:
        yield pause
        pause = min(pause * 2, _LONGEST_PAUSE)
