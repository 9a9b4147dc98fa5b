"""`RedisStore`: tokens in Redis, shared by every process on every machine that reaches it.

Each credential key has one value (`{prefix}token:{key}`, the token as JSON), one generation
counter (`{prefix}generation:{key}`), one lock (`{prefix}lock:{key}`) and, while token calls
are paused, one pause (`{prefix}pause:{key}`, which Redis expires soon after the pause ends).
Each fenced write also leaves its token, for a minute, in the notice list of the generation
it replaces (`{prefix}renewed:{key}:{generation}`): processes waiting for that renewal block
on it (`written_after`, a `BLMOVE` of the list onto itself), so one write wakes them all and
none polls. `try_lock` takes the lock only if it is free (one `SET NX`). Needs Redis 6.2+.
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

Each operation is written once, as the Redis commands it runs (`_redis_steps.py` holds the
step types and the lock's rules); `_run` and `_arun` are the only code that talks to Redis,
the one blocking, the other awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..token import Token
from ._pause import Pause
from ._redis_ops import RedisOps
from ._redis_steps import Call, Done, Hold, Step, Steps, Wait, resume

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


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
        client, async_client, self._where = _connect(
            url_or_client, float(socket_timeout), float(connect_timeout)
        )
        if client is not None:
            self._client = client
        self._async_client = async_client
        self._url = url_or_client if isinstance(url_or_client, str) else None
        self.prefix = prefix
        self.lease = float(lease)
        self.socket_timeout = float(socket_timeout)
        self.connect_timeout = float(connect_timeout)
        # What one command may take on this store's connections (a blocking wait stays under
        # it): the URL's `socket_timeout`, or the given client's own (`None`: no limit).
        self._ops = RedisOps(
            prefix,
            self.lease,
            where=self._where,
            errors=self._errors,
            command_timeout=(
                self.socket_timeout if self._url is not None else _socket_timeout_of(url_or_client)
            ),
        )

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

    @property
    def asyncio_only(self) -> bool:
        """Whether this store serves asyncio code only (it was given a `redis.asyncio`
        client): then no thread can use it."""
        return "_client" not in self.__dict__

    # --- sync -------------------------------------------------------------------------------

    def _run(self, steps: Steps[_T], stop: threading.Event | None = None) -> _T:
        """Carry `steps` out with the blocking client, the only code that calls it: each
        answer is sent back, each failure of Redis thrown in. A set `stop` cuts a wait short."""
        step = resume(steps)
        while not isinstance(step, Done):
            try:
                answer, failed = self._execute(step, stop), None
            except self._errors as exc:
                answer, failed = None, exc
            step = resume(steps, answer, failed)
        return cast(_T, step.value)

    def _execute(self, step: Step, stop: threading.Event | None) -> Any:
        # The ignores here and in `_aexecute`: redis-py leaves `execute_command` unannotated.
        if isinstance(step, Wait):
            if stop is None:
                time.sleep(step.seconds)
                return False
            return stop.wait(step.seconds)
        if isinstance(step, Call):
            return self._sync.execute_command(*step.command)  # type: ignore[no-untyped-call]
        with self._sync.pipeline(transaction=True) as pipe:
            for command in step.commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return pipe.execute()

    def get(self, key: str) -> Token | None:
        return self.get_with_generation(key)[0]

    def get_with_generation(self, key: str) -> tuple[Token | None, int]:
        """The stored token (or `None`) and the generation it was written at (0: never)."""
        return self._run(self._ops.reading(key))

    def set(self, key: str, token: Token) -> None:
        self._run(self._ops.writing(key, token))

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """Write `token` only if the stored generation is still `generation`.

        Returns:
            The new generation, or `None` when another writer moved it on (nothing written).
        """
        return self._run(self._ops.writing_if(key, token, generation))

    def delete(self, key: str) -> None:
        self._run(self._ops.deleting(key))

    def get_pause(self, key: str) -> Pause | None:
        """The pause recorded for `key`, or `None`."""
        return self._run(self._ops.reading_pause(key))

    def set_pause(self, key: str, pause: Pause) -> None:
        self._run(self._ops.writing_pause(key, pause))

    def delete_pause(self, key: str) -> None:
        self._run(self._ops.deleting_pause(key))

    def written_after(self, key: str, generation: int, timeout: float) -> Token | None:
        """The token a renewal wrote over `generation`, waiting for that write up to `timeout`
        seconds (at most half of the socket timeout); `None` if there was none meanwhile."""
        return self._run(self._ops.waiting_written(key, generation, timeout))

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._locked(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        hold = self._ops.hold(key)
        self._run(hold.taking())
        with self._kept(hold):
            yield

    def try_lock(self, key: str) -> AbstractContextManager[bool]:
        """Take the renewal lock of `key` only if it is free: the context gives whether it
        did (one `SET NX`), and lets go of it on exit."""
        return self._tried(key)

    @contextlib.contextmanager
    def _tried(self, key: str) -> Iterator[bool]:
        hold = self._ops.hold(key)
        if not self._run(hold.trying()):
            yield False
            return
        with self._kept(hold):
            yield True

    @contextlib.contextmanager
    def _kept(self, hold: Hold) -> Iterator[None]:
        """Keep the lease of `hold` (taken) alive until the context exits, then release it."""
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._run,
            args=(hold.keeping(), stop),
            name="renewauth-redis-lease",
            daemon=True,
        )
        with contextlib.suppress(RuntimeError):  # no new thread at exit (3.12): the lease will do
            watchdog.start()
        try:
            yield
        finally:
            stop.set()
            if watchdog.ident is not None:  # it started
                watchdog.join()
            self._run(hold.releasing())

    # --- async ----------------------------------------------------------------------------

    async def _arun(self, steps: Steps[_T]) -> _T:
        """`_run` without blocking the event loop: awaiting an asyncio client, or else the
        blocking one in a worker thread. Cancelling it ends a wait (the lock's watchdog)."""
        client = self._async_client
        if client is None:
            return await asyncio.to_thread(self._run, steps)
        step = resume(steps)
        while not isinstance(step, Done):
            try:
                answer, failed = await self._aexecute(step, client), None
            except self._errors as exc:
                answer, failed = None, exc
            step = resume(steps, answer, failed)
        return cast(_T, step.value)

    async def _aexecute(self, step: Step, client: redis.asyncio.Redis) -> Any:
        if isinstance(step, Wait):
            return await asyncio.sleep(step.seconds, False)
        if isinstance(step, Call):
            return await client.execute_command(*step.command)  # type: ignore[no-untyped-call]
        async with client.pipeline(transaction=True) as pipe:
            for command in step.commands:
                pipe.execute_command(*command)
            return await pipe.execute()

    async def aget(self, key: str) -> Token | None:
        return (await self.aget_with_generation(key))[0]

    async def aget_with_generation(self, key: str) -> tuple[Token | None, int]:
        """`get_with_generation` without blocking the event loop."""
        return await self._arun(self._ops.reading(key))

    async def aset(self, key: str, token: Token) -> None:
        await self._arun(self._ops.writing(key, token))

    async def aset_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """`set_if_generation` without blocking the event loop."""
        return await self._arun(self._ops.writing_if(key, token, generation))

    async def adelete(self, key: str) -> None:
        await self._arun(self._ops.deleting(key))

    async def aget_pause(self, key: str) -> Pause | None:
        return await self._arun(self._ops.reading_pause(key))

    async def aset_pause(self, key: str, pause: Pause) -> None:
        await self._arun(self._ops.writing_pause(key, pause))

    async def adelete_pause(self, key: str) -> None:
        await self._arun(self._ops.deleting_pause(key))

    async def awritten_after(self, key: str, generation: int, timeout: float) -> Token | None:
        """`written_after` without blocking the event loop."""
        return await self._arun(self._ops.waiting_written(key, generation, timeout))

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        if self._async_client is None:
            return self._alocked_in_thread(key)
        return self._alocked(key)

    def atry_lock(self, key: str) -> AbstractAsyncContextManager[bool]:
        """`try_lock` for asyncio."""
        return self._atried(key)

    @contextlib.asynccontextmanager
    async def _atried(self, key: str) -> AsyncIterator[bool]:
        if self._async_client is None:
            tried = self._tried(key)
            held = await asyncio.to_thread(tried.__enter__)
            try:
                yield held
            finally:
                await asyncio.to_thread(tried.__exit__, None, None, None)
            return
        hold = self._ops.hold(key)
        if not await self._arun(hold.trying()):
            yield False
            return
        async with self._akept(hold):
            yield True

    @contextlib.asynccontextmanager
    async def _alocked_in_thread(self, key: str) -> AsyncIterator[None]:
        held = self._locked(key)
        await asyncio.to_thread(held.__enter__)
        try:
            yield
        finally:
            await asyncio.to_thread(held.__exit__, None, None, None)

    @contextlib.asynccontextmanager
    async def _alocked(self, key: str) -> AsyncIterator[None]:
        hold = self._ops.hold(key)
        await self._arun(hold.taking())
        async with self._akept(hold):
            yield

    @contextlib.asynccontextmanager
    async def _akept(self, hold: Hold) -> AsyncIterator[None]:
        """`_kept` for asyncio: the watchdog is a task of this loop."""
        watchdog = asyncio.get_running_loop().create_task(self._arun(hold.keeping()))
        try:
            yield
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self._arun(hold.releasing())


def _connect(
    url_or_client: str | redis.Redis | redis.asyncio.Redis,
    socket_timeout: float,
    connect_timeout: float,
) -> tuple[redis.Redis | None, redis.asyncio.Redis | None, str]:
    """The blocking client (or `None`), the asyncio client (or `None`) and where Redis is
    (for messages: never with a password), from a URL or a client."""
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if isinstance(url_or_client, str):
        where = _safe_url(url_or_client)
        _check_url(url_or_client, where)
        try:
            client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"RedisStore needs a URL such as 'redis://localhost:6379/0', got {where!r} "
                "(percent-encode special characters in a password)"
            ) from None
        return client, None, where
    if isinstance(url_or_client, redis.Redis | redis.asyncio.Redis):
        options = url_or_client.connection_pool.connection_kwargs
        where = f"redis://{options.get('host', '?')}:{options.get('port', '?')}"
        if isinstance(url_or_client, redis.Redis):
            return url_or_client, None, where
        return None, url_or_client, where
    raise ConfigurationError(
        "RedisStore takes a redis:// URL or a redis.Redis client, got "
        f"{type(url_or_client).__name__}"
    )


def _socket_timeout_of(client: object) -> float | None:
    """The socket timeout a given client's commands run under (`None`: none)."""
    options = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    value = options.get("socket_timeout")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _rebuild(url: str, options: dict[str, Any]) -> RedisStore:
    return RedisStore(url, **options)
