"""One way to drive requests, httpx, httpx2 and aiohttp, sync and async, from a test body, a
manual clock, and stand-ins for a user's own store."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import httpx2
import requests

from renewauth import (
    FileStore,
    MemoryStore,
    OAuth2RefreshToken,
    StoreError,
    Token,
    TokenAuth,
    TokenStore,
    _background,
)
from renewauth.testing import FakeOAuth2Provider

KINDS = ("requests", "httpx", "httpx-async")
# Every client renewauth signs for: the tests of what each one must do run over all of them.
ALL_KINDS = (*KINDS, "httpx2", "httpx2-async", "aiohttp")
ASYNC_KINDS = frozenset({"httpx-async", "httpx2-async", "aiohttp"})


def _module(kind: str) -> Any:
    """The httpx module (httpx or its fork httpx2) a kind of client runs on."""
    return httpx2 if kind.startswith("httpx2") else httpx


class SyncOnlyStore:
    """A user's store written for requests only: the sync token methods, no async ones.

    Each method is defined on the class: from Python 3.12 a runtime protocol check looks
    methods up statically, so a ``__getattr__`` forwarder would not count as a store at all.
    """

    def __init__(self, inner: MemoryStore | None = None) -> None:
        self._inner = inner if inner is not None else MemoryStore()

    def get(self, key: str) -> Token | None:
        return self._inner.get(key)

    def set(self, key: str, token: Token) -> None:
        self._inner.set(key, token)

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._inner.lock(key)


class TokensOnlyStore(SyncOnlyStore):
    """A user's store with every token method and none of the optional ones (no pauses, no
    generations): the plain `TokenStore` protocol, forwarded to a `MemoryStore`."""

    async def aget(self, key: str) -> Token | None:
        return await self._inner.aget(key)

    async def aset(self, key: str, token: Token) -> None:
        await self._inner.aset(key, token)

    async def adelete(self, key: str) -> None:
        await self._inner.adelete(key)

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        return self._inner.alock(key)


class FullDiskStore(FileStore):
    """A FileStore whose disk fills up on command: while `full` is set, every fenced write
    raises `StoreError` (and releases `refused`); `written` is set by every write that lands."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.full = threading.Event()
        self.refused = threading.Semaphore(0)
        self.written = threading.Event()

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        if self.full.is_set():
            self.refused.release()
            raise StoreError("the token store cannot write the token file: No space left")
        written = super().set_if_generation(key, token, generation)
        self.written.set()
        return written


class ManualClock:
    """A clock that moves only when a test says so (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        # A soft-window renewal that a request started runs on in the background and reads
        # this clock: time moves once it is over, as it would have when it ran inline.
        settle()
        with self._lock:
            self.now += seconds


def started(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """`call` running in a thread of its own; the list gets its result or its exception."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def settle(timeout: float = 10.0) -> None:
    """Wait for the background renewals in flight (those a soft window started) to end."""
    assert _background.wait_idle(timeout), "a background renewal did not end"


@dataclass(frozen=True)
class Reply:
    status: int
    history: int  # answers before this one (a 401 that was retried)
    body: bytes


Body = bytes | Callable[[], Iterable[bytes]] | None


def send(
    kind: str,
    auth: TokenAuth,
    url: str,
    *,
    method: str = "GET",
    body: Body = None,
) -> Reply:
    """Send one request through `kind` with `auth`; `body` may be a generator factory."""
    if kind == "requests":
        data = body() if callable(body) else body
        with requests.Session() as session:
            session.auth = auth
            response = session.request(method, url, data=data, timeout=10)
            return Reply(response.status_code, len(response.history), response.content)
    if kind in ("httpx", "httpx2"):
        content = body() if callable(body) else body
        with _module(kind).Client(auth=auth, timeout=10, follow_redirects=True) as client:
            reply = client.request(method, url, content=content)
            return Reply(reply.status_code, len(reply.history), reply.content)
    if kind == "aiohttp":
        return asyncio.run(_send_aiohttp(auth, url, method, body))
    return asyncio.run(_send_async(kind, auth, url, method, body))


def _async_body(body: Body) -> object:
    """`body` as an async client sends it: a generator factory becomes an async stream."""
    if not callable(body):
        return body
    parts = list(body())

    async def stream():  # type: ignore[no-untyped-def]
        for part in parts:
            yield part

    return stream()


async def _send_async(kind: str, auth: TokenAuth, url: str, method: str, body: Body) -> Reply:
    content = _async_body(body)
    module = _module(kind)
    async with module.AsyncClient(auth=auth, timeout=10, follow_redirects=True) as client:
        reply = await client.request(method, url, content=content)
        return Reply(reply.status_code, len(reply.history), reply.content)


async def _send_aiohttp(auth: TokenAuth, url: str, method: str, body: Body) -> Reply:
    """aiohttp with `auth` as its middleware. A resend after a 401 happens inside the
    middleware, so aiohttp's `history` holds redirects only."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(middlewares=(auth,), timeout=timeout) as session,
        session.request(method, url, data=_async_body(body)) as reply,
    ):
        return Reply(reply.status, len(reply.history), await reply.read())


def send_concurrently(kind: str, auth: TokenAuth, url: str, workers: int) -> list[int]:
    """`workers` requests released together: threads behind a barrier, or asyncio tasks
    behind an event, on one shared client. Returns their statuses."""
    if kind in ASYNC_KINDS:
        return asyncio.run(_send_tasks(kind, auth, url, workers))
    barrier = threading.Barrier(workers)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    module = _module(kind)
    shared = module.Client(auth=auth, timeout=20, limits=module.Limits(max_connections=workers))

    def work() -> None:
        try:
            barrier.wait()
            if kind == "requests":
                status = requests.get(url, auth=auth, timeout=20).status_code
            else:
                status = shared.get(url).status_code
            with lock:
                statuses.append(status)
        except BaseException as exc:  # reported below, with the others
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.close()
    if errors:
        raise errors[0]
    return statuses


async def _send_tasks(kind: str, auth: TokenAuth, url: str, workers: int) -> list[int]:
    go = asyncio.Event()
    if kind == "aiohttp":
        connector = aiohttp.TCPConnector(limit=workers)
        async with aiohttp.ClientSession(middlewares=(auth,), connector=connector) as session:

            async def call() -> int:
                async with session.get(url) as reply:
                    await reply.read()
                    return reply.status

            return await _released_together(go, call, workers)
    module = _module(kind)
    limits = module.Limits(max_connections=workers)
    async with module.AsyncClient(auth=auth, timeout=20, limits=limits) as client:

        async def get() -> int:
            return int((await client.get(url)).status_code)

        return await _released_together(go, get, workers)


async def _released_together(go: asyncio.Event, call: Callable[[], Any], workers: int) -> list[int]:
    """`workers` tasks that each `call()` once the event is set, all set waiting first."""

    async def work() -> int:
        await go.wait()
        return int(await call())

    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    await asyncio.sleep(0)  # let every task reach the event before it is set
    go.set()
    return list(await asyncio.gather(*tasks))


def job_chain(
    fake: FakeOAuth2Provider, store: TokenStore, clock: ManualClock, **options: object
) -> OAuth2RefreshToken:
    """One process of a job that runs a technical user: every process starts from the same
    configured refresh token (issued once per fake) and shares `store`."""
    if not hasattr(fake, "job_refresh_token"):
        fake.job_refresh_token = fake.issue_refresh_token()  # type: ignore[attr-defined]
    return OAuth2RefreshToken(
        fake.token_url,
        "client-id",
        fake.job_refresh_token,  # type: ignore[attr-defined]
        client_secret="client-secret",
        store=store,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


class FlightWatch:
    """Counts the callers that joined a renewal already in flight (the single flight's
    followers), as `renewauth._flight.begin` answers them.

    With the fake holding the leader's token call, a test waits until every caller it started
    has joined, then releases the call: the callers meet the renewal for certain, instead of
    a token delay that hopes they arrive in time.
    """

    def __init__(self, monkeypatch: Any) -> None:
        from renewauth import _flight

        self._changed = threading.Condition()
        self._joined = 0
        begin = _flight.begin

        def counting(*args: Any, **kwargs: Any) -> Any:
            flight, is_leader = begin(*args, **kwargs)
            if not is_leader:
                with self._changed:
                    self._joined += 1
                    self._changed.notify_all()
            return flight, is_leader

        monkeypatch.setattr(_flight, "begin", counting)

    def wait_for_joined(self, n: int, timeout: float = 30.0) -> bool:
        """Wait until at least `n` callers joined a renewal in flight; False after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._joined >= n, timeout)


def send_concurrently_while_held(
    kind: str,
    auth: TokenAuth,
    url: str,
    workers: int,
    fake: FakeOAuth2Provider,
    flights: FlightWatch,
) -> list[int]:
    """`send_concurrently`, with the first token call held until the `workers - 1` others
    have joined its renewal: one renewal for all of them is tested, not hoped for."""
    outcome: list[list[int] | BaseException] = []

    def run() -> None:
        try:
            outcome.append(send_concurrently(kind, auth, url, workers))
        except BaseException as exc:  # raised in the test's thread below
            outcome.append(exc)

    sender = threading.Thread(target=run)
    with fake.hold_token_requests():
        sender.start()
        assert fake.wait_for_held_token_requests(1)
        assert flights.wait_for_joined(workers - 1)
    sender.join()
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return result
