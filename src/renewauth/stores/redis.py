"""`RedisStore`: tokens in Redis, shared by every process on every machine that reaches it.

Each credential key has one value (`{prefix}token:{key}`, the token as JSON) and one lock
(`{prefix}lock:{key}`). The lock is redis-py's `Lock`: a lease with an owner token, released
only by its owner (an atomic compare-and-delete). A watchdog extends the lease while the
renewal runs, so a slow renewal keeps it; a process that dies holding it loses it when the
lease runs out. Waiters poll for it at short, bounded intervals.

Given a URL or a `redis.Redis` client, the async methods run the same calls in a worker
thread; given a `redis.asyncio.Redis` client, they await it directly (and the store serves
asyncio code only). Either way the event loop never waits on Redis. Needs
`pip install 'renewauth[redis]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from ..errors import ConfigurationError, StoreError
from ..token import Token

if TYPE_CHECKING:
    import redis
    import redis.asyncio

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
        url_or_client: a URL (`redis://host:6379/0`, `rediss://…` for TLS), a `redis.Redis`
            client, or a `redis.asyncio.Redis` client (then for asyncio code only).
        prefix: the prefix of every key renewauth writes.
        lease: seconds a renewal lock lives without being extended; a process that dies
            holding it blocks others for at most this long.

    Raises:
        ConfigurationError: `redis` is not installed, or the arguments are unusable.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.asyncio.Redis,
        *,
        prefix: str = "renewauth:",
        lease: float = 10.0,
    ) -> None:
        try:
            import redis
            import redis.asyncio
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
        elif isinstance(url_or_client, redis.Redis | redis.asyncio.Redis):
            options = url_or_client.connection_pool.connection_kwargs
            self._where = f"redis://{options.get('host', '?')}:{options.get('port', '?')}"
            if isinstance(url_or_client, redis.Redis):
                self._client = url_or_client
            else:
                self._async_client = url_or_client
        else:
            raise ConfigurationError(
                "RedisStore takes a redis:// URL or a redis.Redis client, got "
                f"{type(url_or_client).__name__}"
            )
        if not lease > 0:
            raise ConfigurationError("lease= must be a number of seconds > 0, such as 10")
        self.prefix = prefix
        self.lease = float(lease)

    _async_client: redis.asyncio.Redis | None = None

    @property
    def _sync(self) -> redis.Redis:
        client: redis.Redis | None = self.__dict__.get("_client")
        if client is None:
            raise ConfigurationError(
                f"this RedisStore ({self._where}) was given a redis.asyncio client, which only "
                "asyncio code can use (httpx.AsyncClient, await aget_token()); pass a URL to "
                "serve blocking code as well"
            )
        return client

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
        raw = self._call("read a token", lambda: self._sync.get(f"{self.prefix}token:{key}"))
        return None if raw is None else self._parse(key, raw)

    def _parse(self, key: str, raw: bytes | str) -> Token | None:
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
        self._call("store a token", lambda: self._sync.set(f"{self.prefix}token:{key}", payload))

    def delete(self, key: str) -> None:
        self._call("delete a token", lambda: self._sync.delete(f"{self.prefix}token:{key}"))

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._locked(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock = self._sync.lock(
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

    async def _acall(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except self._errors as exc:
            raise StoreError(
                f"Redis at {self._where} could not {what} ({type(exc).__name__}); check that "
                "it runs and is reachable"
            ) from None

    async def aget(self, key: str) -> Token | None:
        client = self._async_client
        if client is None:
            return await asyncio.to_thread(self.get, key)
        raw = await self._acall("read a token", lambda: client.get(f"{self.prefix}token:{key}"))
        return None if raw is None else self._parse(key, raw)

    async def aset(self, key: str, token: Token) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.set, key, token)
            return
        payload = json.dumps(token.to_dict())
        await self._acall("store a token", lambda: client.set(f"{self.prefix}token:{key}", payload))

    async def adelete(self, key: str) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.delete, key)
            return
        await self._acall("delete a token", lambda: client.delete(f"{self.prefix}token:{key}"))

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        if self._async_client is None:
            return self._alocked_in_thread(key)
        return self._alocked(key, self._async_client)

    @contextlib.asynccontextmanager
    async def _alocked_in_thread(self, key: str) -> AsyncIterator[None]:
        held = self._locked(key)
        await asyncio.to_thread(held.__enter__)
        try:
            yield
        finally:
            await asyncio.to_thread(held.__exit__, None, None, None)

    @contextlib.asynccontextmanager
    async def _alocked(self, key: str, client: redis.asyncio.Redis) -> AsyncIterator[None]:
        lock = client.lock(
            f"{self.prefix}lock:{key}", timeout=self.lease, sleep=_POLL, blocking_timeout=_LOCK_WAIT
        )
        if not await self._acall("take the renewal lock", lock.acquire):
            raise StoreError(
                f"another process has held the renewal lock in {self._where} for "
                f"{_LOCK_WAIT:.0f} s; it may be stuck"
            )
        watchdog = asyncio.get_running_loop().create_task(self._aextend(lock))
        try:
            yield
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            try:
                await lock.release()
            except self._extend_errors as exc:
                logger.warning(
                    "renewal lock in %s not released (%s)", self._where, type(exc).__name__
                )

    async def _aextend(self, lock: redis.asyncio.lock.Lock) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await lock.reacquire()
            except self._extend_errors as exc:
                logger.warning(
                    "could not extend the renewal lock in %s (%s)", self._where, type(exc).__name__
                )
                return
