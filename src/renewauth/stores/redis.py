"""`RedisStore`: tokens in Redis, shared by every process on every machine that reaches it.

Each credential key has one value (`{prefix}token:{key}`, the token as JSON) and one lock
(`{prefix}lock:{key}`). The lock is redis-py's `Lock`: a lease with an owner token, released
only by its owner (an atomic compare-and-delete). A watchdog extends the lease while the
renewal runs, so a slow renewal keeps it; a process that dies holding it loses it when the
lease runs out. Waiters poll for it at short, bounded intervals.

The async methods run the same calls in a worker thread: the event loop never waits on Redis.
Needs `pip install 'renewauth[redis]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from ..errors import ConfigurationError, StoreError
from ..token import Token

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_LOCK_WAIT = 300.0  # seconds a process waits for another's renewal before giving up
_POLL = 0.02  # seconds between tries of a held lock


def _safe_url(url: str) -> str:
    """The URL without its password or user: fit for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisStore:
    """Tokens in Redis, for many processes on many machines.

    Args:
        url_or_client: a URL (`redis://host:6379/0`, `rediss://…` for TLS) or a
            `redis.Redis` client.
        prefix: the prefix of every key renewauth writes.
        lease: seconds a renewal lock lives without being extended; a process that dies
            holding it blocks others for at most this long.

    Raises:
        ConfigurationError: `redis` is not installed, or the arguments are unusable.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        prefix: str = "renewauth:",
        lease: float = 10.0,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "RedisStore needs the redis client: pip install 'renewauth[redis]'"
            ) from None
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._lock_errors = redis.exceptions.LockError
        self._extend_errors = (*self._errors, redis.exceptions.LockError)
        if isinstance(url_or_client, str):
            self._where = _safe_url(url_or_client)
            try:
                self._client: redis.Redis = redis.Redis.from_url(url_or_client)
            except ValueError:
                raise ConfigurationError(
                    f"RedisStore needs a URL such as 'redis://localhost:6379/0', got "
                    f"{self._where!r}"
                ) from None
        elif isinstance(url_or_client, redis.Redis):
            self._client = url_or_client
            options = url_or_client.connection_pool.connection_kwargs
            self._where = f"redis://{options.get('host', '?')}:{options.get('port', '?')}"
        else:
            raise ConfigurationError(
                "RedisStore takes a redis:// URL or a redis.Redis client, got "
                f"{type(url_or_client).__name__}"
            )
        if not lease > 0:
            raise ConfigurationError("lease= must be a number of seconds > 0, such as 10")
        self.prefix = prefix
        self.lease = float(lease)

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self.prefix!r}>"

    def _call(self, what: str, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except self._errors as exc:
            raise StoreError(
                f"Redis at {self._where} could not {what} ({type(exc).__name__}); check that "
                "it runs and is reachable"
            ) from None

    def get(self, key: str) -> Token | None:
        raw = self._call("read a token", lambda: self._client.get(f"{self.prefix}token:{key}"))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                return Token.from_dict(data)
        except (ValueError, TypeError):
            pass
        logger.warning("token %s in %s is corrupt; treating it as empty", key[:8], self._where)
        return None

    def set(self, key: str, token: Token) -> None:
        payload = json.dumps(token.to_dict())
        self._call("store a token", lambda: self._client.set(f"{self.prefix}token:{key}", payload))

    def delete(self, key: str) -> None:
        self._call("delete a token", lambda: self._client.delete(f"{self.prefix}token:{key}"))

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._locked(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock = self._client.lock(
            f"{self.prefix}lock:{key}",
            timeout=self.lease,
            sleep=_POLL,
            blocking_timeout=_LOCK_WAIT,
            thread_local=False,  # the async path takes and releases it in worker threads
        )
        if not self._call("take the renewal lock", lock.acquire):
            raise StoreError(
                f"another process has held the renewal lock in {self._where} for "
                f"{_LOCK_WAIT:.0f} s; it may be stuck"
            )
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._extend, args=(lock, stop), name="renewauth-redis-lease", daemon=True
        )
        watchdog.start()
        try:
            yield
        finally:
            stop.set()
            watchdog.join()
            try:
                lock.release()
            except self._lock_errors:
                # The lease ran out (the watchdog could not reach Redis): another process may
                # hold it now, and only its owner may release it.
                logger.warning("renewal lock in %s expired before release", self._where)
            except self._errors as exc:
                logger.warning(
                    "renewal lock in %s not released (%s); it expires in %.0f s",
                    self._where,
                    type(exc).__name__,
                    self.lease,
                )

    def _extend(self, lock: redis.lock.Lock, stop: threading.Event) -> None:
        """Keep the lease alive while the renewal runs: renew it every third of its life."""
        while not stop.wait(self.lease / 3):
            try:
                lock.reacquire()
            except self._extend_errors as exc:
                logger.warning(
                    "could not extend the renewal lock in %s (%s)", self._where, type(exc).__name__
                )
                return

    async def aget(self, key: str) -> Token | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, token: Token) -> None:
        await asyncio.to_thread(self.set, key, token)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        return self._alocked(key)

    @contextlib.asynccontextmanager
    async def _alocked(self, key: str) -> AsyncIterator[None]:
        held = self._locked(key)
        await asyncio.to_thread(held.__enter__)
        try:
            yield
        finally:
            await asyncio.to_thread(held.__exit__, None, None, None)
