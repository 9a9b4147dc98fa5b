"""`RedisStore`: tokens in Redis, shared by every process on every machine that reaches it.

Each credential key has one value (`{prefix}token:{key}`, the token as JSON), one generation
counter (`{prefix}generation:{key}`), one lock (`{prefix}lock:{key}`) and, while token calls
are paused, one pause (`{prefix}pause:{key}`, which Redis expires soon after the pause ends).
The lock is a lease
with an owner token, taken with `SET NX PX` and released only by its owner (an atomic
compare-and-delete). A watchdog extends the lease while the renewal runs and keeps trying
when Redis does not answer (a restart, a pause), retaking a lease that a restart without
persistence has wiped; a process that dies holding it loses it when the lease runs out.

Every write of a renewed token is fenced: it lands only if the generation is still the one the
renewing process read under its lock (a compare-and-set in one Lua script). A leader whose
lease ran out while Redis was unreachable can therefore never overwrite a newer token.

Every operation is bounded: connecting by `connect_timeout=`, every command by
`socket_timeout=` (one reconnection is tried), so a Redis that hangs (`SIGSTOP`, a network
black hole) costs seconds, not minutes, and its failure is a `StoreError` that names Redis.

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
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import ConfigurationError, StoreError
from ..token import Token
from ._pause import Pause

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_LOCK_WAIT = 300.0  # seconds a process waits for another's renewal before giving up
_POLL = 0.02  # seconds between tries of a held lock

# Write the token only if the generation is still the one read under the lock; return the
# new generation, or -1 when another writer has moved it on.
_SET_IF_GENERATION = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
"""
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


def _safe_url(url: str) -> str:
    """The URL without its user or password: fit for messages and `repr`.

    The password is cut at the last `@` of the authority however it is written, so a `/` or
    `#` in it (which `urlsplit` would take for a path or a fragment) never shows.
    """
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rpartition("@")[2]
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    database = ""
    path = rest[len(host) :].split("?", 1)[0].split("#", 1)[0]
    if path.strip("/").isdigit():
        database = "/" + path.strip("/")
    return f"{scheme}://{host}{database}"


def _check_url(url: str, where: str) -> None:
    """Refuse a URL whose password would be misread (a raw `/`, `#`, `?` or `@` in it)."""
    parts = urlsplit(url)
    rest = url.partition("://")[2]
    if ("@" in rest and "@" not in parts.netloc) or parts.netloc.count("@") > 1:
        raise ConfigurationError(
            f"the Redis URL for {where} has a user or password with a character that ends "
            "the host part ('/', '#', '?' or '@'); percent-encode them (/ as %2F, # as %23, "
            "? as %3F, @ as %40)"
        )


class RedisStore:
    """Tokens in Redis, for many processes on many machines.

    Args:
        url_or_client: a URL (`redis://host:6379/0`, `rediss://…` for TLS), a `redis.Redis`
            client, or a `redis.asyncio.Redis` client (then for asyncio code only). A
            password in the URL must be percent-encoded.
        prefix: the prefix of every key renewauth writes.
        lease: seconds a renewal lock lives without being extended; a process that dies
            holding it blocks others for at most this long.
        socket_timeout: seconds each Redis command may take (URL only; a client brings its
            own settings).
        connect_timeout: seconds connecting to Redis may take (URL only).

    Raises:
        ConfigurationError: `redis` is not installed, or the arguments are unusable.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.asyncio.Redis,
        *,
        prefix: str = "renewauth:",
        lease: float = 10.0,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError(
                "RedisStore needs the redis client: pip install 'renewauth[redis]'"
            ) from None
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        for name, value in (
            ("lease", lease),
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not value > 0
            ):
                raise ConfigurationError(f"{name}= must be a number of seconds > 0, such as 2")
        self._url: str | None = None
        if isinstance(url_or_client, str):
            self._where = _safe_url(url_or_client)
            _check_url(url_or_client, self._where)
            try:
                self._client: redis.Redis = redis.Redis.from_url(
                    url_or_client,
                    socket_timeout=float(socket_timeout),
                    socket_connect_timeout=float(connect_timeout),
                    retry=Retry(NoBackoff(), 1),
                )
            except (ValueError, TypeError):
                raise ConfigurationError(
                    f"RedisStore needs a URL such as 'redis://localhost:6379/0', got "
                    f"{self._where!r} (percent-encode special characters in a password)"
                ) from None
            self._url = url_or_client
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
        self.prefix = prefix
        self.lease = float(lease)
        self.socket_timeout = float(socket_timeout)
        self.connect_timeout = float(connect_timeout)

    _async_client: redis.asyncio.Redis | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its configuration (a URL), so another process shares the same Redis."""
        if self._url is None:
            raise TypeError(
                f"a RedisStore built from a client ({self._where}) cannot be pickled; build it "
                "from a URL to send it (or an auth object using it) to another process"
            )
        options = {
            "prefix": self.prefix,
            "lease": self.lease,
            "socket_timeout": self.socket_timeout,
            "connect_timeout": self.connect_timeout,
        }
        return (_rebuild, (self._url, options))

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

    def _failure(self, what: str, exc: Exception) -> StoreError:
        return StoreError(
            f"the token store, Redis at {self._where}, could not {what} "
            f"({type(exc).__name__}); check that it runs and is reachable (this is not the "
            "token endpoint)"
        )

    def _call(self, what: str, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except self._errors as exc:
            raise self._failure(what, exc) from None

    def _keys(self, key: str) -> tuple[str, str, str]:
        return (
            f"{self.prefix}token:{key}",
            f"{self.prefix}generation:{key}",
            f"{self.prefix}lock:{key}",
        )

    def get(self, key: str) -> Token | None:
        return self.get_with_generation(key)[0]

    def get_with_generation(self, key: str) -> tuple[Token | None, int]:
        """The stored token (or `None`) and the generation it was written at (0: never)."""
        token_key, generation_key, _ = self._keys(key)
        raw, generation = self._call(
            "read a token", lambda: self._sync.mget([token_key, generation_key])
        )
        return self._parsed(key, raw, generation)

    def _parsed(self, key: str, raw: Any, generation: Any) -> tuple[Token | None, int]:
        try:
            number = int(generation or 0)
        except ValueError:
            number = 0
        return (None if raw is None else self._parse(key, raw)), number

    def _parse(self, key: str, raw: bytes | str) -> Token | None:
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                return Token.from_dict(data)
        except (ValueError, TypeError, RecursionError):
            pass
        logger.warning("token %s in %s is corrupt; treating it as empty", key[:8], self._where)
        return None

    def set(self, key: str, token: Token) -> None:
        token_key, generation_key, _ = self._keys(key)
        payload = json.dumps(token.to_dict())

        def write() -> None:
            with self._sync.pipeline(transaction=True) as pipe:
                pipe.set(token_key, payload)
                pipe.incr(generation_key)
                pipe.execute()

        self._call("store a token", write)

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """Write `token` only if the stored generation is still `generation`.

        Returns:
            The new generation, or `None` when another writer moved it on (nothing written).
        """
        token_key, generation_key, _ = self._keys(key)
        payload = json.dumps(token.to_dict())
        result = self._call(
            "store a token",
            lambda: self._sync.eval(
                _SET_IF_GENERATION, 2, token_key, generation_key, payload, generation
            ),
        )
        number = int(result)
        return None if number < 0 else number

    def delete(self, key: str) -> None:
        token_key = self._keys(key)[0]
        self._call("delete a token", lambda: self._sync.delete(token_key))

    def _pause_key(self, key: str) -> str:
        return f"{self.prefix}pause:{key}"

    def get_pause(self, key: str) -> Pause | None:
        """The pause recorded for `key`, or `None`."""
        pause_key = self._pause_key(key)
        return _pause_from(self._call("read a pause", lambda: self._sync.get(pause_key)))

    def set_pause(self, key: str, pause: Pause) -> None:
        pause_key, payload, expiry = (
            self._pause_key(key),
            json.dumps(pause.to_dict()),
            _expiry(pause),
        )
        self._call("store a pause", lambda: self._sync.set(pause_key, payload, px=expiry))

    def delete_pause(self, key: str) -> None:
        pause_key = self._pause_key(key)
        self._call("delete a pause", lambda: self._sync.delete(pause_key))

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._locked(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock_key = self._keys(key)[2]
        owner = os.urandom(16).hex()
        lease_ms = max(1, int(self.lease * 1000))
        deadline = time.monotonic() + _LOCK_WAIT
        client = self._sync
        while not self._call(
            "take the renewal lock", lambda: client.set(lock_key, owner, nx=True, px=lease_ms)
        ):
            if time.monotonic() >= deadline:
                raise self._stuck()
            time.sleep(_POLL)
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._extend,
            args=(lock_key, owner, lease_ms, stop),
            name="renewauth-redis-lease",
            daemon=True,
        )
        watchdog.start()
        try:
            yield
        finally:
            stop.set()
            watchdog.join()
            try:
                released = client.eval(_RELEASE, 1, lock_key, owner)
            except self._errors as exc:
                logger.warning(
                    "renewal lock in %s not released (%s); it expires in %.0f s",
                    self._where,
                    type(exc).__name__,
                    self.lease,
                )
            else:
                if not released:
                    logger.warning("renewal lock in %s expired before release", self._where)

    def _stuck(self) -> StoreError:
        return StoreError(
            f"another process has held the renewal lock in {self._where} for "
            f"{_LOCK_WAIT:.0f} s; it may be stuck"
        )

    def _extend(self, lock_key: str, owner: str, lease_ms: int, stop: threading.Event) -> None:
        """Keep the lease alive while the renewal runs: every third of its life, and again
        at once while Redis does not answer (it may be restarting), until the renewal ends."""
        interval = self.lease / 3
        failing = False
        # While failing, as often as a waiter polls for the lock: when Redis answers again
        # (after a pause longer than the lease), this owner must win the lease back first.
        while not stop.wait(_POLL if failing else interval):
            try:
                held = self._sync.eval(_EXTEND, 1, lock_key, owner, lease_ms)
            except self._errors as exc:
                if not failing:
                    logger.warning(
                        "could not extend the renewal lock in %s (%s); trying again",
                        self._where,
                        type(exc).__name__,
                    )
                failing = True
                continue
            failing = False
            if not held:
                logger.warning(
                    "the renewal lock in %s passed to another process; the token write is "
                    "fenced, so this renewal cannot overwrite a newer token",
                    self._where,
                )
                return

    # --- async ----------------------------------------------------------------------------

    async def _acall(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except self._errors as exc:
            raise self._failure(what, exc) from None

    async def aget(self, key: str) -> Token | None:
        return (await self.aget_with_generation(key))[0]

    async def aget_with_generation(self, key: str) -> tuple[Token | None, int]:
        """`get_with_generation` without blocking the event loop."""
        client = self._async_client
        if client is None:
            return await asyncio.to_thread(self.get_with_generation, key)
        token_key, generation_key, _ = self._keys(key)
        raw, generation = await self._acall(
            "read a token", lambda: client.mget([token_key, generation_key])
        )
        return self._parsed(key, raw, generation)

    async def aset(self, key: str, token: Token) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.set, key, token)
            return
        token_key, generation_key, _ = self._keys(key)
        payload = json.dumps(token.to_dict())

        async def write() -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(token_key, payload)
                pipe.incr(generation_key)
                await pipe.execute()

        await self._acall("store a token", write)

    async def aset_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """`set_if_generation` without blocking the event loop."""
        client = self._async_client
        if client is None:
            return await asyncio.to_thread(self.set_if_generation, key, token, generation)
        token_key, generation_key, _ = self._keys(key)
        payload = json.dumps(token.to_dict())
        result = await self._acall(
            "store a token",
            lambda: client.eval(
                _SET_IF_GENERATION, 2, token_key, generation_key, payload, generation
            ),
        )
        number = int(result)
        return None if number < 0 else number

    async def adelete(self, key: str) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.delete, key)
            return
        token_key = self._keys(key)[0]
        await self._acall("delete a token", lambda: client.delete(token_key))

    async def aget_pause(self, key: str) -> Pause | None:
        client = self._async_client
        if client is None:
            return await asyncio.to_thread(self.get_pause, key)
        pause_key = self._pause_key(key)
        return _pause_from(await self._acall("read a pause", lambda: client.get(pause_key)))

    async def aset_pause(self, key: str, pause: Pause) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.set_pause, key, pause)
            return
        pause_key, payload, expiry = (
            self._pause_key(key),
            json.dumps(pause.to_dict()),
            _expiry(pause),
        )
        await self._acall("store a pause", lambda: client.set(pause_key, payload, px=expiry))

    async def adelete_pause(self, key: str) -> None:
        client = self._async_client
        if client is None:
            await asyncio.to_thread(self.delete_pause, key)
            return
        pause_key = self._pause_key(key)
        await self._acall("delete a pause", lambda: client.delete(pause_key))

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
        lock_key = self._keys(key)[2]
        owner = os.urandom(16).hex()
        lease_ms = max(1, int(self.lease * 1000))
        deadline = time.monotonic() + _LOCK_WAIT
        while not await self._acall(
            "take the renewal lock", lambda: client.set(lock_key, owner, nx=True, px=lease_ms)
        ):
            if time.monotonic() >= deadline:
                raise self._stuck()
            await asyncio.sleep(_POLL)
        watchdog = asyncio.get_running_loop().create_task(
            self._aextend(client, lock_key, owner, lease_ms)
        )
        try:
            yield
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            try:
                await client.eval(_RELEASE, 1, lock_key, owner)
            except self._errors as exc:
                logger.warning(
                    "renewal lock in %s not released (%s)", self._where, type(exc).__name__
                )

    async def _aextend(
        self, client: redis.asyncio.Redis, lock_key: str, owner: str, lease_ms: int
    ) -> None:
        failing = False
        while True:
            await asyncio.sleep(_POLL if failing else self.lease / 3)
            try:
                held = await client.eval(_EXTEND, 1, lock_key, owner, lease_ms)
            except self._errors:
                failing = True
                continue
            failing = False
            if not held:
                logger.warning("the renewal lock in %s passed to another process", self._where)
                return


def _pause_from(raw: Any) -> Pause | None:
    if raw is None:
        return None
    try:
        return Pause.from_dict(json.loads(raw))
    except (ValueError, TypeError, RecursionError):
        return None  # a corrupt record pauses nothing


def _expiry(pause: Pause) -> int:
    """Milliseconds Redis keeps a pause: until a minute after it ends by this machine's clock
    (at least a minute, at most a day). The managers judge `until` with their own clock; the
    expiry only clears records that no success deleted."""
    left = min(max(pause.until - time.time(), 0.0), 86_400.0)
    return int((left + 60.0) * 1000)


def _rebuild(url: str, options: dict[str, Any]) -> RedisStore:
    return RedisStore(url, **options)
