"""`MemoryStore`: tokens in this process's memory, the default store.

A renewal in one process is coordinated by the manager's in-process single flight, so this
store's lock does nothing. Entries live in a bounded `cachetools.LRUCache`; an auth object keeps
its own reference to its token, so an evicted entry costs at most one store miss, never a
refresh token.
"""

from __future__ import annotations

import os
import threading
import weakref
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext

from cachetools import LRUCache

from ..token import Token
from ._pause import Pause

__all__ = ["MemoryStore", "default_store"]


class MemoryStore:
    """Tokens kept in this process, shared by every auth object given this store.

    Use it when one process is all there is; use `FileStore` or `RedisStore` when several
    processes share credentials. Thread-safe; its async methods never wait.

    Args:
        maxsize: how many credential sets it holds before the least recently used is dropped.
    """

    def __init__(self, *, maxsize: int = 4096) -> None:
        self._tokens: LRUCache[str, Token] = LRUCache(maxsize=maxsize)
        self._pauses: LRUCache[str, Pause] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()  # LRUCache reorders on read: guard every access
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._tokens)} token(s)>"

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as what it can be in another process: the default store there, or a new
        empty store (memory is not shared across processes; use FileStore or RedisStore)."""
        if self is _DEFAULT:
            return (default_store, ())
        return (_new_store, (self._tokens.maxsize,))

    def get(self, key: str) -> Token | None:
        with self._lock:
            return self._tokens.get(key)

    def set(self, key: str, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def delete(self, key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    def lock(self, key: str) -> AbstractContextManager[object]:
        return nullcontext()

    def get_pause(self, key: str) -> Pause | None:
        with self._lock:
            return self._pauses.get(key)

    def set_pause(self, key: str, pause: Pause) -> None:
        with self._lock:
            self._pauses[key] = pause

    def delete_pause(self, key: str) -> None:
        with self._lock:
            self._pauses.pop(key, None)

    async def aget_pause(self, key: str) -> Pause | None:
        return self.get_pause(key)

    async def aset_pause(self, key: str, pause: Pause) -> None:
        self.set_pause(key, pause)

    async def adelete_pause(self, key: str) -> None:
        self.delete_pause(key)

    async def aget(self, key: str) -> Token | None:
        return self.get(key)

    async def aset(self, key: str, token: Token) -> None:
        self.set(key, token)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        return nullcontext()


_STORES: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _unlock_in_child() -> None:
    # A child forked while another thread held a store's lock would wait for it forever.
    for store in list(_STORES):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_in_child)

_DEFAULT = MemoryStore()


def _new_store(maxsize: int) -> MemoryStore:
    return MemoryStore(maxsize=int(maxsize))


def default_store() -> MemoryStore:
    """The process-wide `MemoryStore` that auth objects use when given no `store=`."""
    return _DEFAULT
