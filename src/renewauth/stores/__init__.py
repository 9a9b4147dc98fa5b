"""Where tokens live between requests, and how renewals are serialised across processes.

`TokenStore` is a Protocol: any object with these methods is a store, with no base class.
The async twins exist so a store that does I/O (a file, Redis) never blocks an event loop;
a store without real async I/O runs its sync methods in a worker thread there.

Keys are `credential_key(...)` fingerprints: the same credentials give the same key in every
process, different secrets never do, and no secret can be read back from a key.
"""

from __future__ import annotations

import functools
import hashlib
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol, runtime_checkable

from ..token import Token
from ._pause import Pause, PauseStore
from .file import FileStore
from .memory import MemoryStore, default_store
from .redis import RedisStore

__all__ = [
    "FencedStore",
    "FileStore",
    "LockProbingStore",
    "MemoryStore",
    "Pause",
    "PauseStore",
    "RedisStore",
    "TokenStore",
    "WriteNoticeStore",
    "credential_key",
    "default_store",
]

# Secrets are stretched before they are hashed into a key, so a key seen in a file name or a
# Redis key space does not make a weak password cheap to guess.
_KEY_ITERATIONS = 20_000


@runtime_checkable
class TokenStore(Protocol):
    """The interface every token store offers.

    `lock(key)` serialises renewals of one key across every process that shares the store
    (a no-op where the store is private to one process). Implementations never log a token.
    """

    def get(self, key: str) -> Token | None:
        """The stored token for `key`, or `None`."""
        ...

    def set(self, key: str, token: Token) -> None:
        """Store `token` under `key`; raise if it could not be stored durably."""
        ...

    def delete(self, key: str) -> None:
        """Forget the token under `key` (no error if there is none)."""
        ...

    def lock(self, key: str) -> AbstractContextManager[object]:
        """A context manager held by the one renewal of `key` in flight."""
        ...

    async def aget(self, key: str) -> Token | None:
        """`get` without blocking the event loop."""
        ...

    async def aset(self, key: str, token: Token) -> None:
        """`set` without blocking the event loop."""
        ...

    async def adelete(self, key: str) -> None:
        """`delete` without blocking the event loop."""
        ...

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        """`lock` without blocking the event loop while waiting for it."""
        ...


@runtime_checkable
class FencedStore(Protocol):
    """The optional part of a store that several processes share: fenced writes.

    Every write bumps a generation; `set_if_generation` writes only if the generation is
    still the one its caller read under the lock, so a renewing process whose lock ran out
    (a Redis lease lost in an outage) never overwrites a newer token. `FileStore` and
    `RedisStore` have it; a store without it is written with plain `set`.
    """

    def get_with_generation(self, key: str) -> tuple[Token | None, int]:
        """The stored token (or `None`) and its generation (0 when never written)."""
        ...

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """Write `token` if the generation is still `generation`: the new one, else `None`."""
        ...

    async def aget_with_generation(self, key: str) -> tuple[Token | None, int]:
        """`get_with_generation` without blocking the event loop."""
        ...

    async def aset_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """`set_if_generation` without blocking the event loop."""
        ...


@runtime_checkable
class LockProbingStore(Protocol):
    """The optional part of a shared store that lets a renewal take its lock only if it is free.

    A process that finds the lock taken does not queue behind it: another process is renewing,
    so it waits for that renewal's token and reads it (with `WriteNoticeStore`, woken by the
    write; else after a growing pause), taking the lock only if the token is still stale.
    `FileStore` and `RedisStore` have it; a store without it is locked with `lock(key)`.
    """

    def try_lock(self, key: str) -> AbstractContextManager[bool]:
        """A context manager that tries `lock(key)` once, without waiting: it gives whether
        the lock is held, and lets go of it (if held) when it exits."""
        ...

    def atry_lock(self, key: str) -> AbstractAsyncContextManager[bool]:
        """`try_lock` for asyncio."""
        ...


@runtime_checkable
class WriteNoticeStore(Protocol):
    """The optional part of a fenced store that tells a waiting process when a renewal wrote.

    `RedisStore` has it: the fenced write also leaves the token where a blocking read of
    every waiter returns it at once, so no waiter polls.
    """

    def written_after(self, key: str, generation: int, timeout: float) -> Token | None:
        """The token written over `generation`, waiting for it up to about `timeout` seconds
        (the store may wait less); `None` if none was."""
        ...

    async def awritten_after(self, key: str, generation: int, timeout: float) -> Token | None:
        """`written_after` without blocking the event loop."""
        ...


@functools.lru_cache(maxsize=256)  # stretching costs ms: an object built per call pays once
def credential_key(public: tuple[str, ...], secrets: tuple[str, ...]) -> str:
    """The store key of a credential set: public parts and stretched secrets, hashed.

    Two auth objects with the same token URL, client, user, scope and secrets get the same
    key, and so share one token and one renewal; any difference gives another key.
    """
    salt = "\x1f".join(public).encode()
    stretched = hashlib.pbkdf2_hmac("sha256", "\x1f".join(secrets).encode(), salt, _KEY_ITERATIONS)
    digest = hashlib.sha256(salt + b"\x1e" + stretched).hexdigest()
    return digest[:40]
