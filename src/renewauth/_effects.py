"""What a renewal asks the world to do, and the two drivers that do it.

The renewal steps (`_renewal.py`) and the token call (`_endpoint.py`) are generators: they
yield an effect (read the store, write it, take a lock, send a token request, sleep...) and
receive its result, or have its error thrown back into them. `drive` carries them out in a
thread, `adrive` in an asyncio task; they and `Port` are the only code of a renewal that does
I/O or awaits, so every decision (and the order of its steps) is written once.

Where sync and async differ, `Port` says so in one line each: a lock waited for in a worker
thread, a chain's token call run in a thread so that a cancelled task cannot lose its rotated
refresh token, an asyncio-only store's lock released on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from inspect import GEN_SUSPENDED, getgeneratorstate
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from .errors import ConfigurationError, StoreError
from .flows import TokenRequest, TokenResponse
from .stores import (
    FencedStore,
    LockProbingStore,
    Pause,
    PauseStore,
    TokenStore,
    WriteNoticeStore,
)
from .token import Token

if TYPE_CHECKING:
    from .stores._durable import Spare

__all__ = [
    "DeletePause",
    "Held",
    "HttpReply",
    "InThread",
    "Keep",
    "LockMachine",
    "LockStore",
    "Port",
    "Put",
    "PutSpare",
    "Read",
    "ReadPause",
    "ReadSpare",
    "Send",
    "Sleep",
    "Steps",
    "TokenSender",
    "TryLock",
    "Unlock",
    "WaitRenewed",
    "Write",
    "WritePause",
    "adrive",
    "drive",
]

T = TypeVar("T")

_NOTICE_WAIT = 1.0  # seconds a wait for another process's renewal blocks in a store that tells

Steps = Generator["Effect", Any, T]
"""A generator of effects that returns a `T`: what `drive` and `adrive` run."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A token endpoint's answer as a sender hands it over: status, headers, body."""

    status: int
    headers: MappingProxyType[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def answer(self, request: TokenRequest, sent_at: float, received_at: float) -> TokenResponse:
        """This reply as the flow that sent `request` reads it, stamped with its times."""
        return TokenResponse(
            status=self.status,
            headers=self.headers,
            body=self.body,
            url=request.url,
            sent_at=sent_at,
            received_at=received_at,
        )


class TokenSender(Protocol):
    """Sends a `TokenRequest`: the one piece of I/O the manager needs, provided by a transport.

    Both methods raise `TokenEndpointUnavailable` for network errors and timeouts, and return
    every HTTP answer, whatever its status.
    """

    def send(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        """Send from a thread (blocking)."""
        ...

    async def asend(self, request: TokenRequest, *, timeout: float) -> HttpReply:
        """Send from an asyncio task without blocking its loop."""
        ...


class Effect:
    """Something a renewal step needs done; the drivers do it and send back the result."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Read(Effect):
    """Read the store: `(token or None, generation)`; raises `StoreError`."""


@dataclass(frozen=True, slots=True)
class Write(Effect):
    """Write `token` over `generation`: the new generation, or `None` if fenced out."""

    token: Token
    generation: int


@dataclass(frozen=True, slots=True)
class Put(Effect):
    """Write `token` whatever the store's generation (under its lock)."""

    token: Token


@dataclass(frozen=True, slots=True)
class ReadSpare(Effect):
    """Read this machine's spare copy of the chain: a token or `None`."""


@dataclass(frozen=True, slots=True)
class PutSpare(Effect):
    """Put `token` in the spare copy (never back along the chain)."""

    token: Token


@dataclass(frozen=True, slots=True)
class ReadPause(Effect):
    """Read the store's pause record: a `Pause` or `None`."""


@dataclass(frozen=True, slots=True)
class WritePause(Effect):
    """Record `pause` in the store."""

    pause: Pause


@dataclass(frozen=True, slots=True)
class DeletePause(Effect):
    """Delete the store's pause record."""


@dataclass(frozen=True, slots=True)
class LockMachine(Effect):
    """Take this machine's lock of the chain: a `Held`."""


@dataclass(frozen=True, slots=True)
class LockStore(Effect):
    """Take the store's lock of the credential: a `Held`; raises `StoreError`."""


@dataclass(frozen=True, slots=True)
class TryLock(Effect):
    """Take the store's lock of the credential if it is free: a `Held`, or `None` while
    another process holds it (a store that cannot tell waits for it: always a `Held`);
    raises `StoreError`."""


@dataclass(frozen=True, slots=True)
class WaitRenewed(Effect):
    """Wait for another process's renewal of the token stored at `generation`: the token it
    wrote, when the store tells (woken by the write, see `WriteNoticeStore`), else `None`
    after `seconds`; raises `StoreError`."""

    generation: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Unlock(Effect):
    """Let go of `held` (nothing when it is `None`)."""

    held: Held | None


@dataclass(frozen=True, slots=True)
class Keep(Effect):
    """Give `keeper` a renewed token the store refused, for its writer thread."""

    keeper: Keeping
    token: Token
    generation: int
    release: Callable[[], None] | None
    error: StoreError
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class Send(Effect):
    """Send a token request: the `HttpReply`; raises `TokenEndpointUnavailable`."""

    request: TokenRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep(Effect):
    """Wait `seconds` before the next try."""

    seconds: float


@dataclass(frozen=True, slots=True)
class InThread(Effect):
    """Run `steps` to their end in a thread of their own (from a task; a thread runs them
    where it is): a cancelled task cannot stop them halfway."""

    steps: Steps[Any]


@dataclass(frozen=True, slots=True)
class Held:
    """A lock held: `release` lets go of it from any thread (the writer thread's way),
    `arelease` from the task that took it."""

    release: Callable[[], None]
    arelease: Callable[[], Awaitable[object]]


def drive(steps: Steps[T], port: Port) -> T:
    """Run `steps` in this thread: each effect done as it is yielded, its error thrown back.

    An exception raised here between two effects (a KeyboardInterrupt lands at any bytecode)
    is thrown into the steps too, so that their `finally` lets go of the locks and the leader
    abandons its flight, as they would for an error of an effect; it goes on up once the
    steps have finished with it. (The loop runs inside the `try`, so its back-edge, where
    signals are taken, is covered.)
    """
    result: object = None
    error: BaseException | None = None
    while True:
        try:
            while True:
                try:
                    effect = steps.send(result) if error is None else steps.throw(error)
                except StopIteration as done:
                    return cast(T, done.value)
                result, error = port.run(effect), None
        except BaseException as exc:
            if getgeneratorstate(steps) != GEN_SUSPENDED:
                raise  # from the steps themselves: they are done with it
            result, error = None, exc


async def adrive(steps: Steps[T], port: Port) -> T:
    """Run `steps` in this task: `drive`, awaited; the event loop is never blocked. A
    cancellation is thrown into the steps like any error: they let go of their locks."""
    result: object = None
    error: BaseException | None = None
    while True:
        try:
            while True:
                try:
                    effect = steps.send(result) if error is None else steps.throw(error)
                except StopIteration as done:
                    return cast(T, done.value)
                result, error = await port.arun(effect), None
        except BaseException as exc:
            if getgeneratorstate(steps) != GEN_SUSPENDED:
                raise
            result, error = None, exc


class Keeping(Protocol):
    """Where `Keep` hands a token the store refused (`_keeper.Keeper`)."""

    def keep(
        self,
        token: Token,
        generation: int,
        release: Callable[[], None] | None,
        loop: asyncio.AbstractEventLoop | None,
        error: StoreError,
        *,
        quiet: bool,
    ) -> None:
        """Keep `token` in memory and start writing it."""
        ...


class Port:
    """The I/O of one credential's renewals: its store, spare copy, locks and sender.

    Args:
        store: where the token lives and how renewals are serialised across processes.
        key: the credential's key in the store.
        spare: this machine's spare copy of a chain, or `None`.
        sender: the transport that sends token requests.
        sleep: the wait between retries of a thread.
        async_sleep: the wait between retries of a task.
    """

    def __init__(
        self,
        store: TokenStore,
        key: str,
        *,
        spare: Spare | None,
        sender: TokenSender,
        sleep: Callable[[float], None],
        async_sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.store = store
        self.key = key
        self.spare = spare
        self.sender = sender
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.fenced = isinstance(store, FencedStore)
        self.pauses: PauseStore | None = store if isinstance(store, PauseStore) else None
        # A store built on a `redis.asyncio` client serves asyncio code only: no thread can
        # use it, so its background renewals are tasks (`manager`).
        self.threads = not getattr(store, "asyncio_only", False)
        self.probes = isinstance(store, LockProbingStore)
        self.notices = store if isinstance(store, WriteNoticeStore) else None

    def run(self, effect: Effect) -> object:
        """Do `effect` in this thread."""
        return _SYNC[type(effect)](self, effect)

    def arun(self, effect: Effect) -> Awaitable[object]:
        """Do `effect` in this task."""
        return _ASYNC[type(effect)](self, effect)

    def read(self) -> tuple[Token | None, int]:
        """The store's token and generation (0 for a store without generations)."""
        if self.fenced:
            return cast(FencedStore, self.store).get_with_generation(self.key)
        return self.store.get(self.key), 0

    async def aread(self) -> tuple[Token | None, int]:
        """`read` for asyncio."""
        if self.fenced:
            return await cast(FencedStore, self.store).aget_with_generation(self.key)
        return await self.store.aget(self.key), 0

    def write(self, token: Token, generation: int) -> int | None:
        """Write `token` over `generation`: the new generation, or `None` if fenced out."""
        if self.fenced:
            return cast(FencedStore, self.store).set_if_generation(self.key, token, generation)
        self.store.set(self.key, token)
        return generation + 1

    async def awrite(self, token: Token, generation: int) -> int | None:
        """`write` for asyncio."""
        if self.fenced:
            store = cast(FencedStore, self.store)
            return await store.aset_if_generation(self.key, token, generation)
        await self.store.aset(self.key, token)
        return generation + 1

    def _spare(self) -> Spare:
        return cast("Spare", self.spare)

    def _pauses(self) -> PauseStore:
        return cast(PauseStore, self.pauses)

    def _lock_machine(self) -> Held:
        held = self._spare().lock(self.key)
        held.__enter__()
        release = _exiter(held)
        return Held(release, lambda: asyncio.to_thread(release))

    def _lock_store(self) -> Held:
        held = self.store.lock(self.key)
        held.__enter__()
        release = _exiter(held)
        return Held(release, lambda: asyncio.to_thread(release))

    async def _alock_store(self) -> Held:
        """The sync lock, waited for in a worker thread, where the store has one: it can be
        handed to the writer thread and outlives this event loop (an async context manager
        would be closed with its loop's async generators). Else the store's async lock."""
        try:
            held = self.store.lock(self.key)
            await asyncio.to_thread(held.__enter__)
        except ConfigurationError:  # an asyncio-only store (a redis.asyncio client)
            aheld = self.store.alock(self.key)
            await aheld.__aenter__()
            return Held(
                _releaser(aheld, asyncio.get_running_loop()),
                lambda: aheld.__aexit__(None, None, None),
            )
        return Held(_exiter(held), lambda: asyncio.to_thread(held.__exit__, None, None, None))

    def _try_lock_store(self) -> Held | None:
        if not self.probes:
            return self._lock_store()
        tried = cast(LockProbingStore, self.store).try_lock(self.key)
        if not tried.__enter__():
            tried.__exit__(None, None, None)
            return None
        release = _exiter(tried)
        return Held(release, lambda: asyncio.to_thread(release))

    async def _atry_lock_store(self) -> Held | None:
        """`_try_lock_store` for a task: in a worker thread, as `_alock_store`, unless the
        store serves asyncio only."""
        if self.threads:
            return await asyncio.to_thread(self._try_lock_store)
        if not self.probes:
            return await self._alock_store()
        tried = cast(LockProbingStore, self.store).atry_lock(self.key)
        if not await tried.__aenter__():
            await tried.__aexit__(None, None, None)
            return None
        return Held(
            _releaser(tried, asyncio.get_running_loop()),
            lambda: tried.__aexit__(None, None, None),
        )

    def _wait_renewed(self, effect: WaitRenewed) -> Token | None:
        if self.notices is None:
            self.sleep(effect.seconds)
            return None
        return self.notices.written_after(self.key, effect.generation, _NOTICE_WAIT)

    async def _await_renewed(self, effect: WaitRenewed) -> Token | None:
        if self.notices is None:
            await self.async_sleep(effect.seconds)
            return None
        return await self.notices.awritten_after(self.key, effect.generation, _NOTICE_WAIT)

    @staticmethod
    async def _aunlock(held: Held | None) -> None:
        if held is not None:
            await held.arelease()

    @staticmethod
    def _keep(effect: Keep, loop: asyncio.AbstractEventLoop | None) -> None:
        effect.keeper.keep(
            effect.token, effect.generation, effect.release, loop, effect.error, quiet=effect.quiet
        )

    @staticmethod
    async def _akeep(effect: Keep) -> None:
        Port._keep(effect, asyncio.get_running_loop())


# How each effect is done, in a thread and in a task: one line each, and where they differ
# (a lock waited for in a worker thread, a chain's token call in a thread of its own) it shows.
_SYNC: dict[type[Effect], Callable[[Port, Any], object]] = {
    Read: lambda port, _: port.read(),
    Write: lambda port, e: port.write(e.token, e.generation),
    Put: lambda port, e: port.store.set(port.key, e.token),
    ReadSpare: lambda port, _: port._spare().get(port.key),
    PutSpare: lambda port, e: port._spare().put(port.key, e.token),
    ReadPause: lambda port, _: port._pauses().get_pause(port.key),
    WritePause: lambda port, e: port._pauses().set_pause(port.key, e.pause),
    DeletePause: lambda port, _: port._pauses().delete_pause(port.key),
    LockMachine: lambda port, _: port._lock_machine(),
    LockStore: lambda port, _: port._lock_store(),
    TryLock: lambda port, _: port._try_lock_store(),
    WaitRenewed: lambda port, e: port._wait_renewed(e),
    Unlock: lambda _, e: e.held and e.held.release(),
    Keep: lambda _, e: Port._keep(e, None),
    Send: lambda port, e: port.sender.send(e.request, timeout=e.timeout),
    Sleep: lambda port, e: port.sleep(e.seconds),
    InThread: lambda port, e: drive(e.steps, port),
}
_ASYNC: dict[type[Effect], Callable[[Port, Any], Awaitable[object]]] = {
    Read: lambda port, _: port.aread(),
    Write: lambda port, e: port.awrite(e.token, e.generation),
    Put: lambda port, e: port.store.aset(port.key, e.token),
    ReadSpare: lambda port, e: asyncio.to_thread(_SYNC[ReadSpare], port, e),
    PutSpare: lambda port, e: asyncio.to_thread(_SYNC[PutSpare], port, e),
    ReadPause: lambda port, _: port._pauses().aget_pause(port.key),
    WritePause: lambda port, e: port._pauses().aset_pause(port.key, e.pause),
    DeletePause: lambda port, _: port._pauses().adelete_pause(port.key),
    LockMachine: lambda port, _: asyncio.to_thread(port._lock_machine),
    LockStore: lambda port, _: port._alock_store(),
    TryLock: lambda port, _: port._atry_lock_store(),
    WaitRenewed: lambda port, e: port._await_renewed(e),
    Unlock: lambda _, e: Port._aunlock(e.held),
    Keep: lambda _, e: Port._akeep(e),
    Send: lambda port, e: port.sender.asend(e.request, timeout=e.timeout),
    Sleep: lambda port, e: port.async_sleep(e.seconds),
    InThread: lambda port, e: asyncio.to_thread(drive, e.steps, port),
}


def _exiter(held: contextlib.AbstractContextManager[object]) -> Callable[[], None]:
    """Release a lock from any thread."""

    def release() -> None:
        held.__exit__(None, None, None)

    return release


def _releaser(
    held: contextlib.AbstractAsyncContextManager[object], loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Release an async store lock from the writer thread: on its loop while that runs,
    else in a loop of the thread's own."""

    def release() -> None:
        exit_ = held.__aexit__(None, None, None)
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(exit_, loop).result(timeout=60)
        else:
            asyncio.run(exit_)

    return release


def both(first: Callable[[], None], second: Held | None) -> Callable[[], None]:
    """Release `first`, then `second` (the store's lock, then this machine's)."""

    def release() -> None:
        try:
            first()
        finally:
            if second is not None:
                second.release()

    return release
