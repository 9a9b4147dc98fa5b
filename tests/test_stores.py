"""Stores: the protocol, FileStore and RedisStore on their own, and many processes sharing one.

Processes share a clock (a `multiprocessing.Value` the test advances) with the fake provider,
and move in rounds behind a `multiprocessing.Barrier`: nothing waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import requests

from renewauth import (
    FileStore,
    MemoryStore,
    OAuth2Password,
    RedisStore,
    StoreError,
    Token,
    TokenStore,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import FlightWatch, ManualClock

LIFETIME, LEEWAY, STEP = 100.0, 5.0, 20.0
START = 1_800_000_000.0
CONTEXT = multiprocessing.get_context("spawn")
T = TypeVar("T")


# --- a real redis-server on a free loopback port ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it; under CI this fails)")
    port = _free_port()
    directory = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):  # readiness: bounded, each try answers at once or is refused
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                time.sleep(0.025)
        else:
            raise RuntimeError("redis-server did not start")
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


# --- the protocol, for every store ----------------------------------------------------------


@pytest.fixture(params=["memory", "file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "file":
        return FileStore(tmp_path / "tokens")
    url = request.getfixturevalue("redis_url")
    return RedisStore(url, prefix=f"test:{os.urandom(4).hex()}:")


TOKEN = Token(access_token="A", refresh_token="R", issued_at=1.0, expires_at=2.0, scope="s")


def test_store_round_trips_a_token(store: TokenStore) -> None:
    assert store.get("abc123") is None
    store.set("abc123", TOKEN)
    assert store.get("abc123") == TOKEN
    store.delete("abc123")
    assert store.get("abc123") is None


def test_store_async_methods_match_the_sync_ones(store: TokenStore) -> None:
    async def scenario() -> Token | None:
        async with store.alock("abc123"):
            await store.aset("abc123", TOKEN)
        token = await store.aget("abc123")
        await store.adelete("abc123")
        return token

    assert asyncio.run(scenario()) == TOKEN
    assert store.get("abc123") is None


@pytest.fixture(params=["file", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    """The stores that processes share (a MemoryStore's lock does nothing, by design)."""
    if request.param == "file":
        return FileStore(tmp_path / "tokens")
    return RedisStore(request.getfixturevalue("redis_url"), prefix=f"test:{os.urandom(4).hex()}:")


def test_store_lock_excludes_a_second_holder(shared_store: TokenStore) -> None:
    store = shared_store
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with store.lock("abc123"):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(10)
    waiter = threading.Thread(target=lambda: _enter(store, order))
    waiter.start()
    release.set()
    thread.join()
    waiter.join()
    assert order == ["first in", "first out", "second in"]


def _enter(store: TokenStore, order: list[str]) -> None:
    with store.lock("abc123"):
        order.append("second in")


# --- FileStore ------------------------------------------------------------------------------


def test_file_store_files_are_private(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "tokens")
    store.set("abc123", TOKEN)
    assert (tmp_path / "tokens").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "tokens" / "abc123.json").stat().st_mode & 0o777 == 0o600


def test_file_store_refuses_a_directory_others_can_read(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    from renewauth import ConfigurationError

    with pytest.raises(ConfigurationError, match="chmod 700"):
        FileStore(tmp_path / "open")


def test_file_store_treats_a_corrupt_file_as_empty_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(tmp_path)
    (tmp_path / "abc123.json").write_text('{"access_token": "A", "expi')
    assert store.get("abc123") is None
    assert "corrupt" in caplog.text
    assert "A" not in caplog.text.split("corrupt")[0][-40:]


def test_renewal_keeps_the_new_token_when_the_token_file_cannot_be_written(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        store = FileStore(tmp_path / "tokens")
        auth = _password_auth(fake.token_url, store, clock)
        first = auth.get_token()
        token_file = tmp_path / "tokens" / f"{auth._manager.key}.json"
        token_file.unlink()
        token_file.mkdir()  # the rename onto it now fails
        clock.now += LIFETIME + 1
        renewed = auth.get_token()  # the server spent the old refresh token: keep the new one
        assert renewed.refresh_token != first.refresh_token
        assert auth.token == renewed
        token_file.rmdir()  # the store takes writes again
        for _ in range(1000):  # bounded readiness poll for the writer thread
            if store.get(auth._manager.key) == renewed:
                break
            threading.Event().wait(0.02)
        assert store.get(auth._manager.key) == renewed


class _RefusingOneWrite(MemoryStore):
    """A store whose second write fails once (a disk that was full for a moment)."""

    writes = 0

    def set(self, key: str, token: Token) -> None:
        self.writes += 1
        if self.writes == 2:
            raise StoreError("disk full")
        super().set(key, token)


def test_rotated_token_that_could_not_be_stored_is_used_and_stored_later() -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        store = _RefusingOneWrite()
        seen: list[Token] = []
        auth = OAuth2Password(
            fake.token_url,
            "client-id",
            "alice",
            "alice-password",
            client_secret="client-secret",
            store=store,
            clock=clock,
            leeway=LEEWAY,
            on_token=seen.append,
        )
        first = auth.get_token()
        clock.now += LIFETIME + 1
        renewed = auth.get_token()
        assert renewed != first
        assert auth.token == renewed
        assert seen == [first, renewed]  # on_token has it even though the store did not
        for _ in range(1000):  # bounded readiness poll for the writer thread
            if store.get(auth._manager.key) == renewed:
                break
            threading.Event().wait(0.02)
        assert store.get(auth._manager.key) == renewed
        clock.now += LIFETIME + 1
        auth.get_token()
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant.get("password") == 1


# --- RedisStore -----------------------------------------------------------------------------


def test_redis_store_down_names_the_url_without_its_password() -> None:
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{_free_port()}/0")
    with pytest.raises(StoreError) as caught:
        store.get("abc123")
    assert "127.0.0.1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)


def test_redis_lock_of_a_dead_owner_expires_with_its_lease(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, prefix=f"test:{os.urandom(4).hex()}:", lease=0.5)
    lock_key = f"{store.prefix}lock:abc123"  # the lease as every process reads it
    with redis.Redis.from_url(redis_url) as client, client.pubsub() as events:
        # What happens to the lease key, in order: Redis says when a key expires.
        client.config_set("notify-keyspace-events", "Kgx$")
        events.subscribe(f"__keyspace@0__:{lock_key}")
        assert _next_event(events) == "subscribe"
        dead_owner = _kill_a_lock_holder(
            "redis", redis_url, store.prefix, lambda: client.get(lock_key)
        )
        assert dead_owner is not None  # the holder's lease, in Redis when it died
        with store.lock("abc123"):  # free again once the dead owner's 0.5 s lease has run out
            ours = client.get(lock_key)
            assert ours is not None
            assert ours != dead_owner  # taken over, not shared
            assert client.pttl(lock_key) > 0  # a lease of its own
        assert client.get(lock_key) is None  # and given back by its owner
        seen = [_next_event(events)]
        while seen[-1] != "del":
            seen.append(_next_event(events))
    # The dead owner's lease ran out before this process set its own: it waited, not stole
    # ("expire" events are leases extended, by the owner's watchdog or by the SET itself).
    assert [event for event in seen if event != "expire"] == ["set", "expired", "set", "del"]


def _next_event(events: Any) -> str:
    """The next keyspace event (or subscription) on `events`; each comes at once."""
    message = events.get_message(timeout=10)
    assert message is not None, "Redis sent no keyspace event"
    return str(message["type"] if message["type"] == "subscribe" else message["data"].decode())


def test_redis_lease_keeper_warns_once_per_outage_and_ends_with_the_renewal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchdog's rules, driven by hand with no Redis: a third of the lease between
    extensions, a poll while Redis fails (one warning per outage), done when the hold ends."""
    from renewauth.stores._redis_steps import Call, Hold, Wait

    hold = Hold(lock_key="lock:abc123", lease=3.0, where="redis://h:1", errors=(OSError,))
    keeping = hold.keeping()
    assert next(keeping) == Wait(1.0)
    extend = keeping.send(False)
    assert isinstance(extend, Call)
    assert extend.command[0] == "EVAL"
    assert extend.command[2:] == (1, "lock:abc123", hold.owner, 3000)
    for _ in range(2):  # Redis does not answer, twice
        assert keeping.throw(OSError()) == Wait(0.02)
        assert keeping.send(False) == extend
    assert keeping.send(1) == Wait(1.0)  # extended: back to a third of the lease
    with pytest.raises(StopIteration):
        keeping.send(True)  # the renewal ended
    assert [r.getMessage() for r in caplog.records if r.name == "renewauth.stores.redis"] == [
        "could not extend the renewal lock in redis://h:1 (OSError); trying again"
    ]


def test_file_lock_of_a_dead_owner_is_released_at_once(tmp_path: Path) -> None:
    lock_file = str(tmp_path / "abc123.lock")  # the OS lock as every process takes it
    held_by_the_owner = _kill_a_lock_holder(
        "file", str(tmp_path), "", lambda: _is_locked(lock_file)
    )
    assert held_by_the_owner
    assert not _is_locked(lock_file)  # released at once: the OS dropped the dead owner's lock
    with FileStore(tmp_path).lock("abc123"):
        assert _is_locked(lock_file)  # and this process holds it now: nobody else gets in
    assert not _is_locked(lock_file)


def _is_locked(lock_file: str) -> bool:
    """Whether another holder has the OS lock on `lock_file`: a try that does not wait."""
    import filelock

    probe = filelock.FileLock(lock_file, thread_local=False)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return True
    probe.release()
    return False


def _kill_a_lock_holder(kind: str, where: str, prefix: str, while_held: Callable[[], T]) -> T:
    """Start a process that takes the lock of key "abc123" and holds it; SIGKILL it.

    Returns what `while_held` saw while the holder had the lock, just before the kill.
    """
    ready = CONTEXT.Event()
    holder = CONTEXT.Process(target=_hold_lock_forever, args=(kind, where, prefix, ready))
    holder.start()
    assert ready.wait(60)
    seen = while_held()
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()
    return seen


def _hold_lock_forever(kind: str, where: str, prefix: str, ready: Any) -> None:
    store: TokenStore = (
        FileStore(where) if kind == "file" else RedisStore(where, prefix=prefix, lease=0.5)
    )
    with store.lock("abc123"):
        ready.set()
        threading.Event().wait()


# --- many processes -------------------------------------------------------------------------


class _SharedClock:
    """A clock every process reads from one `multiprocessing.Value`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> float:
        return float(self.value.value)


def _password_auth(token_url: str, store: TokenStore, clock: Any) -> OAuth2Password:
    return OAuth2Password(
        token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=store,
        clock=clock,
        leeway=LEEWAY,
    )


def _store_from(spec: tuple[str, str, str]) -> TokenStore:
    kind, where, prefix = spec
    return FileStore(where) if kind == "file" else RedisStore(where, prefix=prefix)


THREADS = 8  # per worker process


@dataclass
class _LineUp:
    """Counters the worker processes share with the test, so that a renewal round's token
    call is released only once every other thread waits for it: the process leaders that
    asked for the store's lock, and the threads that joined their process's renewal."""

    changed: Any  # a multiprocessing Condition
    lock_asks: Any  # multiprocessing Values
    joined: Any

    def bump(self, counter: Any) -> None:
        with self.changed:
            counter.value += 1
            self.changed.notify_all()

    def wait_for(self, lock_asks: int, joined: int) -> bool:
        with self.changed:
            return bool(
                self.changed.wait_for(
                    lambda: self.lock_asks.value >= lock_asks and self.joined.value >= joined,
                    60,
                )
            )


def _count_waiters(store: TokenStore, line_up: _LineUp) -> None:
    """In a worker process: count its leader asking for the store's lock, and its threads
    joining the renewal in flight."""
    from renewauth import _flight

    begin = _flight.begin

    def counting(*args: Any, **kwargs: Any) -> Any:
        flight, is_leader = begin(*args, **kwargs)
        if not is_leader:
            line_up.bump(line_up.joined)
        return flight, is_leader

    _flight.begin = counting  # type: ignore[assignment]
    lock = store.lock

    def counted_lock(key: str) -> Any:
        line_up.bump(line_up.lock_asks)
        return lock(key)

    store.lock = counted_lock  # type: ignore[method-assign]
    try_lock = store.try_lock  # type: ignore[attr-defined]

    def counted_try(key: str) -> Any:  # a leader tries once, then waits for the write
        line_up.bump(line_up.lock_asks)
        return try_lock(key)

    store.try_lock = counted_try  # type: ignore[attr-defined]


def _worker(
    spec: tuple[str, str, str],
    token_url: str,
    api_url: str,
    clock_value: Any,
    barrier: Any,
    rounds: int,
    results: Any,
    line_up: _LineUp | None = None,
) -> None:
    """8 threads per round, in step with every other process."""
    store = _store_from(spec)
    if line_up is not None:
        _count_waiters(store, line_up)
    auth = _password_auth(token_url, store, _SharedClock(clock_value))
    client = httpx.Client(auth=auth, timeout=20)
    failed = sent = 0
    lock = threading.Lock()
    for _ in range(rounds):
        barrier.wait()
        start = threading.Barrier(THREADS)

        def request(index: int, start: threading.Barrier = start) -> None:
            nonlocal failed, sent
            start.wait()
            try:
                if index % 2:
                    status = requests.get(api_url, auth=auth, timeout=20).status_code
                else:
                    status = client.get(api_url).status_code
            except Exception:
                status = 0
            with lock:
                sent += 1
                failed += status != 200

        threads = [threading.Thread(target=request, args=(index,)) for index in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        barrier.wait()
    results.put((sent, failed))


def _free_runner(
    spec: tuple[str, str, str], token_url: str, api_url: str, clock_value: Any, started: Any
) -> None:
    """Requests without pause until killed."""
    auth = _password_auth(token_url, _store_from(spec), _SharedClock(clock_value))
    with httpx.Client(auth=auth, timeout=20) as client:
        started.set()
        while True:
            client.get(api_url)


@dataclass
class _Run:
    token_calls_after_first_round: int
    sent: int
    failed: int


def _run_processes(
    spec: tuple[str, str, str],
    fake: FakeOAuth2Provider,
    clock_value: Any,
    *,
    workers: int = 6,
    rounds: int = 25,
    kill_after: int | None = None,
    line_up: bool = False,
) -> _Run:
    """Run `workers` processes for `rounds` rounds. With `line_up`, each round that renews
    (the cold start, then every token lifetime) holds the token call until the other
    processes' leaders wait for the store's lock and every other thread for its process's
    renewal."""
    barrier = CONTEXT.Barrier(workers + 1)
    results = CONTEXT.Queue()
    counters = (
        _LineUp(CONTEXT.Condition(), CONTEXT.Value("i", 0), CONTEXT.Value("i", 0))
        if line_up
        else None
    )
    processes = [
        CONTEXT.Process(
            target=_worker,
            args=(
                spec,
                fake.token_url,
                fake.api_url + "items",
                clock_value,
                barrier,
                rounds,
                results,
                counters,
            ),
        )
        for _ in range(workers)
    ]
    victim = None
    if kill_after is not None:
        started = CONTEXT.Event()
        victim = CONTEXT.Process(
            target=_free_runner,
            args=(spec, fake.token_url, fake.api_url + "items", clock_value, started),
        )
        victim.start()
        assert started.wait(60)
    for process in processes:
        process.start()
    first_round_calls = -1
    renewals = 0
    for index in range(rounds):
        if counters is not None and (index * STEP) % LIFETIME == 0:  # every token expired
            renewals += 1
            with fake.hold_token_requests():  # before the round starts: no call slips by
                barrier.wait()  # round starts
                assert fake.wait_for_held_token_requests(1)
                assert counters.wait_for(
                    lock_asks=workers * renewals, joined=workers * (THREADS - 1) * renewals
                )
        else:
            barrier.wait()  # round starts
        barrier.wait()  # round ends
        if index == 0:
            first_round_calls = fake.token_calls
        if victim is not None and index == kill_after:
            os.kill(victim.pid or 0, signal.SIGKILL)
            victim.join()
        with clock_value.get_lock():
            clock_value.value += STEP
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return _Run(first_round_calls, sum(sent for sent, _ in outcomes), sum(f for _, f in outcomes))


@pytest.fixture(params=["file", "redis"])
def shared_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    if request.param == "file":
        return ("file", str(tmp_path / "tokens"), "")
    return ("redis", request.getfixturevalue("redis_url"), f"test:{os.urandom(4).hex()}:")


def test_six_processes_of_eight_threads_renew_once_per_lifetime(
    shared_spec: tuple[str, str, str],
) -> None:
    clock_value = CONTEXT.Value("d", START)
    clock = _SharedClock(clock_value)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        run = _run_processes(shared_spec, fake, clock_value, line_up=True)
        assert run.token_calls_after_first_round == 1  # cold start: one call for 48 threads
        assert fake.max_concurrent_token_calls == 1
        assert run.failed == 0
        assert run.sent == 6 * 8 * 25
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls <= 1.3 * (25 * STEP / LIFETIME)
        assert fake.api_unauthorized == 0


def test_processes_survive_one_killed_and_a_fresh_one_renews_from_the_store(
    shared_spec: tuple[str, str, str],
) -> None:
    clock_value = CONTEXT.Value("d", START)
    clock = _SharedClock(clock_value)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        run = _run_processes(shared_spec, fake, clock_value, workers=5, rounds=15, kill_after=7)
        assert run.failed == 0
        with clock_value.get_lock():
            clock_value.value += LIFETIME + 1  # expired: a fresh process must renew
        fresh = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, json; from tests.test_stores import _fresh_renewal; "
                "_fresh_renewal(*json.loads(sys.argv[1]))",
                json.dumps([list(shared_spec), fake.token_url, clock_value.value]),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=Path(__file__).parent.parent,
        )
        assert fresh.returncode == 0, fresh.stderr
        assert fake.token_calls_by_grant.get("password") == 1  # only the very first login
        assert fake.stale_refresh_tokens == 0


def _fresh_renewal(spec: list[str], token_url: str, now: float) -> None:
    auth = _password_auth(token_url, _store_from((spec[0], spec[1], spec[2])), ManualClock(now))
    auth.get_token()


def test_redis_store_with_an_asyncio_client_serves_200_tasks_with_one_token_call(
    redis_url: str, flights: FlightWatch
) -> None:
    import redis.asyncio

    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:

        async def scenario() -> list[int]:
            client = redis.asyncio.Redis.from_url(redis_url)
            try:
                store = RedisStore(client, prefix=f"test:{os.urandom(4).hex()}:")
                auth = _password_auth(fake.token_url, store, clock)
                go = asyncio.Event()
                async with httpx.AsyncClient(
                    auth=auth, limits=httpx.Limits(max_connections=50)
                ) as http:

                    async def one() -> int:
                        await go.wait()
                        return (await http.get(fake.api_url)).status_code

                    tasks = [asyncio.create_task(one()) for _ in range(200)]
                    with fake.hold_token_requests():
                        await asyncio.sleep(0)
                        go.set()
                        # The leader's call is held until the 199 others wait for it.
                        assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)
                        assert await asyncio.to_thread(flights.wait_for_joined, 199)
                    return list(await asyncio.gather(*tasks))
            finally:
                await client.aclose()

        assert asyncio.run(scenario()) == [200] * 200
        assert fake.token_calls == 1


def test_redis_store_with_an_asyncio_client_refuses_blocking_use_naming_the_fix(
    redis_url: str,
) -> None:
    import redis.asyncio

    from renewauth import ConfigurationError

    store = RedisStore(redis.asyncio.Redis.from_url(redis_url))
    with pytest.raises(ConfigurationError, match="pass a URL"):
        store.get("abc123")
