"""What `RedisStore` asks of Redis, as plain steps, and the renewal lock's rules; no I/O.

Every operation of the store is a generator that yields `Step`s (a command, a transaction, a
wait) and receives each answer; a command that fails is thrown back into it. `RedisStore` has
two drivers, `_run` and `_arun`: the only code that talks to Redis, the one blocking, the
other awaiting. So each decision — what to run, what an answer means, when to warn, when to
give up — is written once here or in the store's own generators, never per driver.

`Hold` is one hold of a renewal lock: taking it (`SET NX PX`, polled until `_LOCK_WAIT`),
keeping its lease (the watchdog) and releasing it (a compare-and-delete by its owner).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import StoreError

__all__ = [
    "Call",
    "Done",
    "Hold",
    "Step",
    "Steps",
    "Transaction",
    "Wait",
    "asking",
    "failure",
    "resume",
]

# The records belong to RedisStore, whatever module decides them.
logger = logging.getLogger("renewauth.stores.redis")

_T = TypeVar("_T")
_LOCK_WAIT = 300.0  # seconds a process waits for another's renewal before giving up
_POLL = 0.02  # seconds between tries of a held lock

# Extend the lease if this owner holds it, retake it if it vanished (a restart without
# persistence); 0 when another owner has it.
_EXTEND = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Command = tuple[str | int | float, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """One Redis command as it is sent, such as `("GET", key)`; answered with its reply."""

    command: Command


@dataclass(frozen=True, slots=True)
class Transaction:
    """Commands that run together (`MULTI` … `EXEC`); answered with their replies."""

    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """A pause of `seconds`; answered with a true value when the hold ended meanwhile."""

    seconds: float


Step = Call | Transaction | Wait
Steps = Generator[Step, Any, _T]


@dataclass(frozen=True, slots=True)
class Done:
    """What the steps returned: they are over."""

    value: Any


def resume(steps: Steps[Any], answer: Any = None, failed: Exception | None = None) -> Step | Done:
    """The next step after `answer` (or after `failed`, thrown in), or `Done`."""
    try:
        return steps.send(answer) if failed is None else steps.throw(failed)
    except StopIteration as done:
        return Done(done.value)


def asking(step: Step, what: str, where: str, errors: tuple[type[Exception], ...]) -> Steps[Any]:
    """The answer to `step`; when Redis (at `where`) fails with one of `errors`, a
    `StoreError` that says `what` could not be done and that names the store, not the
    token endpoint."""
    try:
        return (yield step)
    except errors as exc:
        raise failure(what, where, exc) from None


def failure(what: str, where: str, exc: Exception) -> StoreError:
    """The `StoreError` for Redis (at `where`) failing with `exc` to do `what`: it names the
    store, not the token endpoint, and holds nothing of `exc` but its type."""
    return StoreError(
        f"the token store, Redis at {where}, could not {what} ({type(exc).__name__}); check "
        "that it runs and is reachable (this is not the token endpoint)"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """One hold of the renewal lock at `lock_key`: a lease of `lease` seconds, owned by a
    random `owner` that only it knows, so that nobody else's release or extension touches it.

    Args:
        lock_key: the lock's key.
        lease: seconds the lock lives without being extended.
        where: the Redis, for messages (never with a password).
        errors: what the client raises when Redis does not answer.
    """

    lock_key: str
    lease: float
    where: str
    errors: tuple[type[Exception], ...]
    owner: str = field(default_factory=lambda: os.urandom(16).hex())

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def taking(self) -> Steps[None]:
        """Take the lock, trying again every `_POLL` while another owner holds it; give up
        after `_LOCK_WAIT` seconds (a holder that long may be stuck)."""
        deadline = time.monotonic() + _LOCK_WAIT
        take = Call(("SET", self.lock_key, self.owner, "NX", "PX", self.lease_ms))
        while not (yield from asking(take, "take the renewal lock", self.where, self.errors)):
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"another process has held the renewal lock in {self.where} for "
                    f"{_LOCK_WAIT:.0f} s; it may be stuck"
                )
            yield Wait(_POLL)

    def trying(self) -> Steps[bool]:
        """Take the lock if it is free now: whether it was taken (never waits)."""
        take = Call(("SET", self.lock_key, self.owner, "NX", "PX", self.lease_ms))
        return bool((yield from asking(take, "take the renewal lock", self.where, self.errors)))

    def keeping(self) -> Steps[None]:
        """Keep the lease alive while the renewal runs: every third of its life, and again
        at once while Redis does not answer (it may be restarting), until the renewal ends."""
        extend = Call(("EVAL", _EXTEND, 1, self.lock_key, self.owner, self.lease_ms))
        failing = False
        # While failing, as often as a waiter polls for the lock: when Redis answers again
        # (after a pause longer than the lease), this owner must win the lease back first.
        while not (yield Wait(_POLL if failing else self.lease / 3)):
            try:
                held = yield extend
            except self.errors as exc:
                if not failing:
                    logger.warning(
                        "could not extend the renewal lock in %s (%s); trying again",
                        self.where,
                        type(exc).__name__,
                    )
                failing = True
                continue
            failing = False
            if not held:
                logger.warning(
                    "the renewal lock in %s passed to another process; the token write is "
                    "fenced, so this renewal cannot overwrite a newer token",
                    self.where,
                )
                return

    def releasing(self) -> Steps[None]:
        """Let the lock go if this owner still holds it; a failure only warns, as the lease
        frees the lock soon anyway."""
        try:
            released = yield Call(("EVAL", _RELEASE, 1, self.lock_key, self.owner))
        except self.errors as exc:
            logger.warning(
                "renewal lock in %s not released (%s); it expires in %.0f s",
                self.where,
                type(exc).__name__,
                self.lease,
            )
        else:
            if not released:
                logger.warning("renewal lock in %s expired before release", self.where)
