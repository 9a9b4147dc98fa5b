"""Benchmarks: renewauth's shared token stores, FileStore and RedisStore, against MemoryStore.

Run ``python benchmarks/bench_stores.py`` (about 2 minutes) or ``--quick`` (under a minute, for
CI smoke tests). It starts its own ``redis-server`` on a free loopback port, without
persistence, stops it at the end, and prints Markdown tables:

(a) token calls, failed requests and stale refresh tokens when 6 processes of 8 threads share
    one FileStore or one RedisStore, against a fake with 1 s tokens and rotating refresh
    tokens, in real time; a MemoryStore in each process (each renews on its own) is the
    contrast;
(b) the cost of one request with a cached token in each store, with no network: a fresh token
    costs no file read and no Redis round trip, so FileStore and RedisStore should cost what
    MemoryStore costs.

Nothing here asserts a timing: the numbers are for people to read. `README.md` in this folder
says what each row means. The fake token server runs in a child process of its own, as in
`bench_core.py`, so that its threads never compete with the clients for a GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    contextmanager,
    suppress,
)
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import requests
import requests.adapters

import renewauth
from renewauth import Token, TokenStore

if TYPE_CHECKING:
    import redis

CLIENT_ID = "client-id"
CLIENT_SECRET = "client-secret"
USERNAME = "alice"
PASSWORD = "alice-password"
CANNED_URL = "http://api.invalid/items"  # answered in memory by the canned transports
MEMORY, FILE, REDIS = "MemoryStore", "FileStore", "RedisStore"
STORES = (MEMORY, FILE, REDIS)
# Table (a)'s column headings: MemoryStore is private to each process, the others are shared.
SHARING = {
    MEMORY: "MemoryStore, one per process",
    FILE: "FileStore, shared",
    REDIS: "RedisStore, shared",
}
PROCESSES = 6
THREADS_PER_PROCESS = 8
TOKEN_LIFETIME_SECONDS = 1.0
LEEWAY_SECONDS = 0.2
TOKEN_DELAY_SECONDS = 0.05
LONG_LIFETIME_SECONDS = 3600.0  # part (b): the token stays fresh for the whole run
HOT_LEEWAY_SECONDS = 30.0
HANG_LIMIT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 30.0
SCALE_KEY = "0123456789abcdef"  # part (b): the key `store.get()` is timed on, for scale
# Printed under the tables: what the numbers should be, and what else they depend on.
CAVEATS = (
    "Ideal values in (a), shared store: 1 cold-start token call, and about "
    f"lifetime ÷ (lifetime − leeway) = {TOKEN_LIFETIME_SECONDS:g} ÷ "
    f"{TOKEN_LIFETIME_SECONDS - LEEWAY_SECONDS:g} = "
    f"{TOKEN_LIFETIME_SECONDS / (TOKEN_LIFETIME_SECONDS - LEEWAY_SECONDS):.2f} token calls per "
    "lifetime (a token is renewed when its leeway window opens, and a token's lifetime starts "
    "when its request was sent). MemoryStore, one per process: "
    f"{PROCESSES} cold-start calls and about {PROCESSES} times as many per lifetime.",
    "MemoryStore, one per process: each process logs in with the password and follows its "
    "own chain of rotated refresh tokens, so it presents no stale one either; what it costs "
    "is the token calls.",
    "Real time on a shared machine: the fake (one Python process), redis-server and the "
    f"{PROCESSES} worker processes share the CPUs. requests/s is bounded by the fake and "
    "says little about the store. When request latency nears the leeway "
    f"({LEEWAY_SECONDS:g} s), a token can expire between signing and the API's check, "
    "whatever the store: the API answers 401 and renewauth renews and resends once.",
    "(b) wraps every store, MemoryStore included, in the same counting proxy; it costs only "
    "when the store is called, which is what its row shows.",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each part runs: the full run, or `--quick` for a smoke test."""

    iterations: int  # requests per timed batch in (b)
    repetitions: int  # interleaved batches per store in (b)
    seconds: float  # the steady phase of (a)


# Many short batches, interleaved, cancel a noisy machine's drift better than a few long ones.
FULL = Settings(iterations=2_000, repetitions=25, seconds=5.0)
QUICK = Settings(iterations=500, repetitions=5, seconds=2.0)


def describe(exc: BaseException) -> str:
    """A cell for a run that raised."""
    return f"error: {type(exc).__name__}"


# --- redis-server, on a free loopback port ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running redis-server: its URL, its version, and a client to ask it for statistics."""

    url: str
    version: str
    client: redis.Redis

    def commands_processed(self) -> int:
        """The server's count of commands so far; this call's own INFO is not in it."""
        stats: dict[str, Any] = self.client.info("stats")
        return int(stats["total_commands_processed"])


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer | str]:
    """A redis-server without persistence, stopped on exit; or why there is none (a cell)."""
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        binary = None
    if binary is None:
        yield "n/a: no redis-server or redis-py"
        return
    directory.mkdir(mode=0o700)
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(directory)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        yield _ready(client, url)
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _ready(client: redis.Redis, url: str) -> RedisServer | str:
    import redis

    for _ in range(400):  # bounded: each try answers at once or is refused
        try:
            if client.ping():
                info: dict[str, Any] = client.info("server")
                return RedisServer(url, str(info["redis_version"]), client)
        except redis.exceptions.ConnectionError:
            time.sleep(0.025)
    return "error: redis-server did not start"


# --- the fake token server, in a child process -------------------------------------------------


def _host_fakes(connection: Connection) -> None:
    """Child process: start, count and stop `FakeOAuth2Provider`s on the parent's command."""
    from renewauth.testing import FakeOAuth2Provider

    providers: dict[int, FakeOAuth2Provider] = {}
    while True:
        command, argument = connection.recv()
        reply: object = None
        try:
            if command == "start":
                provider = FakeOAuth2Provider(**argument)
                provider.start()
                providers[id(provider)] = provider
                reply = (id(provider), provider.token_url, provider.api_url)
            elif command == "counters":
                provider = providers[argument]
                reply = (
                    provider.token_calls,
                    provider.api_ok,
                    provider.api_unauthorized,
                    provider.stale_refresh_tokens,
                )
            elif command == "reset":
                providers[argument].reset_counters()
            elif command == "stop":
                providers.pop(argument).stop()
            elif command == "exit":
                for provider in providers.values():
                    provider.stop()
                connection.send(None)
                return
        except Exception as exc:
            reply = exc
        connection.send(reply)


@dataclass(frozen=True, slots=True)
class Counters:
    """What the fake saw: token-endpoint calls, API answers 200 and 401, stale refresh tokens."""

    token_calls: int
    api_ok: int
    api_unauthorized: int
    stale_refresh_tokens: int


class FakeHost:
    """Runs fake providers in one spawned child process; use it as a context manager."""

    def __enter__(self) -> FakeHost:
        context = get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_host_fakes, args=(child,), name="bench fakes", daemon=True
        )
        self._process.start()
        child.close()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with suppress(OSError, EOFError, TimeoutError):
            self.call("exit", None)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()

    def call(self, command: str, argument: object) -> Any:
        self._connection.send((command, argument))
        if not self._connection.poll(HANG_LIMIT_SECONDS):
            raise TimeoutError(f"the fake host did not answer {command!r}")
        reply = self._connection.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @contextmanager
    def provider(self, *, token_lifetime: float) -> Iterator[RemoteFake]:
        """A started fake with rotating refresh tokens, stopped on exit."""
        settings = {
            "token_lifetime": token_lifetime,
            "token_delay": TOKEN_DELAY_SECONDS,
            "rotate_refresh_tokens": True,
        }
        number, token_url, api_url = self.call("start", settings)
        try:
            yield RemoteFake(self, number, token_url, api_url + "items")
        finally:
            self.call("stop", number)


@dataclass(frozen=True, slots=True)
class RemoteFake:
    """A handle on one fake provider in the child process."""

    host: FakeHost
    number: int
    token_url: str
    api_url: str

    def counters(self) -> Counters:
        return Counters(*self.host.call("counters", self.number))

    def reset_counters(self) -> None:
        self.host.call("reset", self.number)


# --- stores and auth objects ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a process builds its store; picklable, for the spawned worker processes."""

    kind: str
    where: str = ""
    prefix: str = ""

    def build(self) -> TokenStore:
        if self.kind == FILE:
            return renewauth.FileStore(self.where)
        if self.kind == REDIS:
            return renewauth.RedisStore(self.where, prefix=self.prefix)
        return renewauth.MemoryStore()


def fresh_spec(kind: str, directory: Path, server: RedisServer | str) -> StoreSpec | str:
    """A store that holds nothing yet (a new directory, a new key prefix), or why there is none."""
    name = os.urandom(4).hex()
    if kind == FILE:
        return StoreSpec(FILE, str(directory / f"tokens-{name}"))
    if kind == REDIS:
        if isinstance(server, str):
            return server
        return StoreSpec(REDIS, server.url, f"bench:{name}:")
    return StoreSpec(MEMORY)


def password_auth(token_url: str, store: TokenStore, leeway: float) -> renewauth.OAuth2Password:
    return renewauth.OAuth2Password(
        token_url,
        CLIENT_ID,
        USERNAME,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=store,
        leeway=leeway,
    )


# --- (a) many processes share one store, against the fake, in real time ------------------------


@dataclass(slots=True)
class Tally:
    """Requests: how many succeeded, what the others ended with, how long each took."""

    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.failures.update(other.failures)
        self.latencies.extend(other.latencies)

    def send(self, get: Callable[[str], Any], url: str) -> None:
        started = time.monotonic()
        try:
            status = get(url).status_code
        except Exception as exc:
            self.failures[type(exc).__name__] += 1
        else:
            if status == 200:
                self.ok += 1
            else:
                self.failures[f"HTTP {status}"] += 1
        self.latencies.append(time.monotonic() - started)


@dataclass(slots=True)
class WorkerReport:
    """One worker process's requests, cold start and steady phase, or why it could not run."""

    cold: Tally = field(default_factory=Tally)
    steady: Tally = field(default_factory=Tally)
    errors: list[str] = field(default_factory=list)


def _worker_thread(
    get: Callable[[str], Any],
    url: str,
    barrier: Barrier,
    seconds: float,
    report: WorkerReport,
) -> None:
    """One thread of a worker: a cold-start request, then requests until the deadline."""
    cold, steady = Tally(), Tally()
    try:
        barrier.wait(HANG_LIMIT_SECONDS)  # 1: every thread of every process is released
        cold.send(get, url)
        barrier.wait(HANG_LIMIT_SECONDS)  # 2: cold start over; the parent reads the counters
        barrier.wait(HANG_LIMIT_SECONDS)  # 3: the steady phase starts
        deadline = time.monotonic() + seconds
        while True:  # no pause between requests
            steady.send(get, url)
            if time.monotonic() >= deadline:
                break
        barrier.wait(HANG_LIMIT_SECONDS)  # 4: over; the parent reads the counters again
    except threading.BrokenBarrierError as exc:
        report.errors.append(describe(exc))
    # Each thread adds its tallies once, at its end; list.append and these adds hold the GIL.
    report.cold.add(cold)
    report.steady.add(steady)


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker process needs to know: picklable, for the spawned processes."""

    spec: StoreSpec
    token_url: str
    api_url: str
    seconds: float  # the steady phase


def _worker_process(job: Job, barrier: Barrier, reports: Queue[WorkerReport]) -> None:
    """Child process: one auth object over its own handle on the store, shared by its threads.

    Half the threads send through an `httpx.Client`, half through a `requests.Session`; both
    carry the same auth object, as an application that uses both would.
    """
    report = WorkerReport()
    try:
        auth = password_auth(job.token_url, job.spec.build(), LEEWAY_SECONDS)
    except Exception as exc:
        barrier.abort()  # the others stop waiting at once
        report.errors.append(describe(exc))
        reports.put(report)
        return
    limits = httpx.Limits(
        max_connections=THREADS_PER_PROCESS, max_keepalive_connections=THREADS_PER_PROCESS
    )
    client = httpx.Client(
        auth=auth, timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False, limits=limits
    )
    session = requests.Session()
    session.auth = auth
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=THREADS_PER_PROCESS))
    gets: Sequence[Callable[[str], Any]] = (
        client.get,
        partial(session.get, timeout=REQUEST_TIMEOUT_SECONDS),
    )
    threads = [
        threading.Thread(
            target=_worker_thread,
            args=(gets[index % 2], job.api_url, barrier, job.seconds, report),
            daemon=True,
        )
        for index in range(THREADS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    give_up = time.monotonic() + job.seconds + 4 * HANG_LIMIT_SECONDS
    for thread in threads:
        thread.join(max(0.0, give_up - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        report.errors.append("error: threads still running")
    client.close()
    session.close()
    reports.put(report)


@dataclass(frozen=True, slots=True)
class SharedResult:
    """What the fake and the workers saw in one run of (a)."""

    cold_counters: Counters
    steady_counters: Counters
    cold: Tally
    steady: Tally
    seconds: float  # the steady phase, as the parent timed it between barriers 3 and 4


def run_processes(host: FakeHost, spec: StoreSpec, settings: Settings) -> SharedResult | str:
    """`PROCESSES` processes of `THREADS_PER_PROCESS` threads: a cold start, then a steady loop."""
    context = get_context("spawn")
    barrier = context.Barrier(PROCESSES * THREADS_PER_PROCESS + 1)  # + 1: this process
    reports: Queue[WorkerReport] = context.Queue()
    with host.provider(token_lifetime=TOKEN_LIFETIME_SECONDS) as fake:
        processes = [
            context.Process(
                target=_worker_process,
                args=(Job(spec, fake.token_url, fake.api_url, settings.seconds), barrier, reports),
                name=f"bench worker {number}",
                daemon=True,
            )
            for number in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        try:
            barrier.wait(HANG_LIMIT_SECONDS)  # 1: released (after the workers have started)
            barrier.wait(HANG_LIMIT_SECONDS)  # 2: every cold-start request has its answer
            cold_counters = fake.counters()
            fake.reset_counters()
            barrier.wait(HANG_LIMIT_SECONDS)  # 3
            started = time.monotonic()
            barrier.wait(settings.seconds + HANG_LIMIT_SECONDS)  # 4
            seconds = time.monotonic() - started
            steady_counters = fake.counters()
            collected = [reports.get(timeout=HANG_LIMIT_SECONDS) for _ in processes]
        except Exception as exc:
            return _first_error(reports) or describe(exc)
        finally:
            for process in processes:
                process.join(HANG_LIMIT_SECONDS if process.exitcode is None else 0)
                if process.is_alive():
                    process.kill()
                    process.join()
    errors = [error for report in collected for error in report.errors]
    if errors:
        return errors[0]
    cold, steady = Tally(), Tally()
    for report in collected:
        cold.add(report.cold)
        steady.add(report.steady)
    return SharedResult(cold_counters, steady_counters, cold, steady, seconds)


def _first_error(reports: Queue[WorkerReport]) -> str | None:
    """The error a worker reported, if one did: it says more than the broken barrier."""
    with suppress(Exception):
        while True:
            report = reports.get(timeout=1)
            for error in report.errors:
                if "BrokenBarrierError" not in error:
                    return error
    return None


def _failures(tally: Tally) -> str:
    failures = tally.failures
    if not failures:
        return "0"
    kinds = ", ".join(f"{kind} ×{count}" for kind, count in failures.most_common(3))
    return f"{failures.total()} ({kinds})"


def _per_lifetime(result: SharedResult) -> str:
    calls = result.steady_counters.token_calls
    lifetimes = result.seconds / TOKEN_LIFETIME_SECONDS
    return f"{calls / lifetimes:.2f} ({calls} in {result.seconds:.1f} s)"


def _stale(result: SharedResult) -> str:
    cold, steady = result.cold_counters, result.steady_counters
    return str(cold.stale_refresh_tokens + steady.stale_refresh_tokens)


def _latency(result: SharedResult) -> str:
    latencies = sorted(result.steady.latencies)
    if not latencies:
        return "—"
    median = latencies[len(latencies) // 2]
    return f"{median * 1000:.0f} / {latencies[-1] * 1000:.0f} ms"


SHARED_ROWS: Sequence[tuple[str, Callable[[SharedResult], str]]] = (
    ("cold start: token calls", lambda result: str(result.cold_counters.token_calls)),
    ("cold start: failed requests", lambda result: _failures(result.cold)),
    ("steady: token calls per lifetime", _per_lifetime),
    ("steady: failed requests", lambda result: _failures(result.steady)),
    ("steady: 401s answered by the API", lambda r: str(r.steady_counters.api_unauthorized)),
    ("stale refresh tokens presented", _stale),
    ("steady: successful requests/s", lambda result: f"{result.steady.ok / result.seconds:.0f}"),
    ("steady: request latency, median / max", _latency),
)


def part_a(host: FakeHost, server: RedisServer | str, directory: Path, settings: Settings) -> str:
    """Table (a): one run per store, each with a new fake and an empty store."""
    results: dict[str, SharedResult | str] = {}
    for kind in STORES:
        spec = fresh_spec(kind, directory, server)
        results[kind] = spec if isinstance(spec, str) else run_processes(host, spec, settings)
    rows = []
    for label, cell in SHARED_ROWS:
        line = [label]
        for kind in STORES:
            result = results[kind]
            line.append(result if isinstance(result, str) else cell(result))
        rows.append(line)
    return markdown_table(
        [f"{PROCESSES} processes × {THREADS_PER_PROCESS} threads", *SHARING.values()], rows
    )


# --- (b) cost per request with a cached token ------------------------------------------------


class CountedStore:
    """A `TokenStore` that counts the calls made to it and passes each on to `inner`."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.calls = 0

    def get(self, key: str) -> Token | None:
        self.calls += 1
        return self.inner.get(key)

    def set(self, key: str, token: Token) -> None:
        self.calls += 1
        self.inner.set(key, token)

    def delete(self, key: str) -> None:
        self.calls += 1
        self.inner.delete(key)

    def lock(self, key: str) -> AbstractContextManager[object]:
        self.calls += 1
        return self.inner.lock(key)

    async def aget(self, key: str) -> Token | None:
        self.calls += 1
        return await self.inner.aget(key)

    async def aset(self, key: str, token: Token) -> None:
        self.calls += 1
        await self.inner.aset(key, token)

    async def adelete(self, key: str) -> None:
        self.calls += 1
        await self.inner.adelete(key)

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        self.calls += 1
        return self.inner.alock(key)


class CannedAdapter(requests.adapters.BaseAdapter):
    """A requests adapter that answers every request with one prebuilt 200, without a socket."""

    def __init__(self) -> None:
        super().__init__()
        response = requests.Response()
        response.status_code = 200
        response.reason = "OK"
        response.headers["Content-Type"] = "application/json"
        response._content = b'{"ok": true}'
        self._response = response

    def send(  # type: ignore[override]  # the options requests passes are not needed here
        self, request: requests.PreparedRequest, **options: object
    ) -> requests.Response:
        response = self._response
        response.request = request
        response.url = request.url or ""
        response.connection = self  # type: ignore[assignment]  # typed as requests' HTTPAdapter
        return response

    def close(self) -> None:
        """Nothing to close."""


class CannedTransport(httpx.BaseTransport):
    """An httpx transport that answers every request with a 200, without a socket."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"{}")


class AsyncCannedTransport(httpx.AsyncBaseTransport):
    """`CannedTransport` for `httpx.AsyncClient`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"{}")


class SyncClient(Protocol):
    """What the benchmark uses of a `requests.Session` or an `httpx.Client`."""

    def get(self, url: str) -> Any: ...

    def close(self) -> None: ...


def _requests_client(auth: renewauth.OAuth2Password) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    # requests otherwise scans os.environ for proxy settings on every call.
    session.trust_env = False
    session.mount(CANNED_URL, CannedAdapter())
    return session


def _httpx_client(auth: renewauth.OAuth2Password) -> httpx.Client:
    return httpx.Client(auth=auth, transport=CannedTransport(), trust_env=False)


def _async_client(auth: renewauth.OAuth2Password) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=auth, transport=AsyncCannedTransport(), trust_env=False)


SYNC_CLIENTS: dict[str, Callable[[renewauth.OAuth2Password], SyncClient]] = {
    "requests": _requests_client,
    "httpx": _httpx_client,
}


@dataclass(slots=True)
class Timings:
    """Seconds per request of each repetition, the store calls they made, or an error."""

    seconds: list[float] = field(default_factory=list)
    store_calls: int = 0
    requests: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HotCase:
    """One column of (b): a store (counted), the auth object over it, and its timings."""

    store: CountedStore
    auth: renewauth.OAuth2Password
    timings: Timings


def _cases(
    token_url: str, directory: Path, server: RedisServer | str
) -> tuple[dict[str, HotCase], dict[str, str]]:
    """A fresh store and auth object per column; the columns that have none, with the reason."""
    cases: dict[str, HotCase] = {}
    missing: dict[str, str] = {}
    for kind in STORES:
        spec = fresh_spec(kind, directory, server)
        if isinstance(spec, str):
            missing[kind] = spec
            continue
        try:
            store = CountedStore(spec.build())
        except Exception as exc:
            missing[kind] = describe(exc)
            continue
        auth = password_auth(token_url, store, HOT_LEEWAY_SECONDS)
        cases[kind] = HotCase(store, auth, Timings())
    return cases, missing


def _check_signed(response: Any) -> None:
    """Fail unless the warm-up request went out with a bearer token."""
    sent = response.request.headers.get("Authorization", "")
    if response.status_code != 200 or not sent.startswith("Bearer ") or len(sent) < 8:
        raise RuntimeError(f"warm-up answered {response.status_code}, sent {sent[:7]!r}")


def _rotated(names: list[str], repetition: int) -> list[str]:
    """The order of one repetition: each store takes each position in turn."""
    shift = repetition % len(names) if names else 0
    return names[shift:] + names[:shift]


def _time_sync(client: SyncClient, iterations: int) -> float:
    get = client.get
    gc.collect()
    started = time.perf_counter()
    for _ in range(iterations):
        get(CANNED_URL)
    return (time.perf_counter() - started) / iterations


def measure_sync(
    build: Callable[[renewauth.OAuth2Password], SyncClient],
    cases: dict[str, HotCase],
    settings: Settings,
    timed: AbstractContextManager[None],
) -> None:
    """Interleaved batches of `settings.iterations` requests through each warmed-up client.

    `timed` wraps the batches, not the warm-up (which fetches the token and fills the store).
    """
    clients: dict[str, SyncClient] = {}
    for kind, case in cases.items():
        try:
            client = build(case.auth)
            for _ in range(100):  # fetch the token (the only store access expected), fill caches
                response = client.get(CANNED_URL)
            _check_signed(response)
            clients[kind] = client
        except Exception as exc:
            case.timings.error = describe(exc)
        case.store.calls = 0  # from here on, a fresh token should need no store at all
    with timed:
        for repetition in range(settings.repetitions):
            for kind in _rotated(list(clients), repetition):
                timings = cases[kind].timings
                try:
                    timings.seconds.append(_time_sync(clients[kind], settings.iterations))
                    timings.requests += settings.iterations
                except Exception as exc:
                    timings.error = describe(exc)
                    clients.pop(kind).close()
    for kind, client in clients.items():
        cases[kind].timings.store_calls = cases[kind].store.calls
        client.close()


async def _time_async(client: httpx.AsyncClient, iterations: int) -> float:
    get = client.get
    gc.collect()
    started = time.perf_counter()
    for _ in range(iterations):
        await get(CANNED_URL)
    return (time.perf_counter() - started) / iterations


async def measure_async(
    cases: dict[str, HotCase], settings: Settings, timed: AbstractContextManager[None]
) -> None:
    """`measure_sync` for `httpx.AsyncClient`s, in one event loop."""
    clients: dict[str, httpx.AsyncClient] = {}
    for kind, case in cases.items():
        try:
            client = _async_client(case.auth)
            for _ in range(100):
                response = await client.get(CANNED_URL)
            _check_signed(response)
            clients[kind] = client
        except Exception as exc:
            case.timings.error = describe(exc)
        case.store.calls = 0
    with timed:
        for repetition in range(settings.repetitions):
            for kind in _rotated(list(clients), repetition):
                timings = cases[kind].timings
                try:
                    timings.seconds.append(await _time_async(clients[kind], settings.iterations))
                    timings.requests += settings.iterations
                except Exception as exc:
                    timings.error = describe(exc)
                    await clients.pop(kind).aclose()
    for kind, client in clients.items():
        cases[kind].timings.store_calls = cases[kind].store.calls
        await client.aclose()


@contextmanager
def _count_redis(server: RedisServer | str, total: list[int]) -> Iterator[None]:
    """Add the commands redis-server processed inside the block to `total[0]`."""
    if isinstance(server, str):
        yield
        return
    before = server.commands_processed()
    yield
    total[0] += server.commands_processed() - before - 1  # - 1: the INFO that took `before`


def _hot_path_cell(timings: Timings, baseline: Timings) -> str:
    if timings.error is not None:
        return timings.error
    median = statistics.median(timings.seconds)
    if timings is baseline:
        return f"{median * 1e6:.1f} µs"
    if baseline.error is not None or not baseline.seconds:
        return f"{median * 1e6:.1f} µs (no baseline)"
    # Each repetition times the baseline next to the others: the ratio of a pair cancels what
    # the machine did during that repetition; the median of the pairs resists outliers.
    ratios = [mine / base for mine, base in zip(timings.seconds, baseline.seconds, strict=False)]
    return f"{median * 1e6:.1f} µs ({statistics.median(ratios):.2f}×)"


def _get_for_scale(store: TokenStore, iterations: int) -> str:
    """µs per `store.get()` of a stored token: what reading the store per request would add."""
    try:
        store.set(SCALE_KEY, Token(access_token="A", issued_at=1.0, expires_at=2.0))
        get = store.get
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(iterations):
                get(SCALE_KEY)
            samples.append((time.perf_counter() - started) / iterations)
    except Exception as exc:
        return describe(exc)
    return f"{statistics.median(samples) * 1e6:.1f} µs"


def part_b(host: FakeHost, server: RedisServer | str, directory: Path, settings: Settings) -> str:
    """Table (b): µs per request with a cached token in each store, and the ratio to memory."""
    results: dict[str, dict[str, HotCase]] = {}
    missing: dict[str, str] = {}
    redis_commands = [0]
    with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
        for client, build in SYNC_CLIENTS.items():
            cases, missing = _cases(fake.token_url, directory, server)
            measure_sync(build, cases, settings, _count_redis(server, redis_commands))
            results[client] = cases
        cases, missing = _cases(fake.token_url, directory, server)
        asyncio.run(measure_async(cases, settings, _count_redis(server, redis_commands)))
        results["httpx async"] = cases
    rows = []
    for client, cases in results.items():
        baseline = cases[MEMORY].timings
        cells = [
            _hot_path_cell(cases[kind].timings, baseline) if kind in cases else missing[kind]
            for kind in STORES
        ]
        rows.append([client, *cells])
    calls_row = ["store calls in the timed batches"]
    commands_row = ["Redis commands in the timed batches"]
    scale_row = ["one `store.get()` alone, for scale"]
    for kind in STORES:
        timed = [cases[kind].timings for cases in results.values() if kind in cases]
        if not timed:
            calls_row.append(missing[kind])
            commands_row.append(missing[kind])
            scale_row.append(missing[kind])
            continue
        calls = sum(timings.store_calls for timings in timed)
        sent = sum(timings.requests for timings in timed)
        calls_row.append(f"{calls} in {sent:,} requests")
        commands_row.append(str(redis_commands[0]) if kind == REDIS else "—")
        scale_row.append(_get_for_scale(results["requests"][kind].store.inner, 1_000))
    rows += [calls_row, commands_row, scale_row]
    return markdown_table(["client", *STORES], rows)


# --- output --------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(str(line[column])) for line in [headers, *rows]) for column in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def header_line(server: RedisServer | str) -> str:
    server_version = server.version if isinstance(server, RedisServer) else "not running"
    versions = " · ".join(
        (
            f"renewauth {_version('renewauth')}",
            f"redis-py {_version('redis')}",
            f"redis-server {server_version}",
            f"filelock {_version('filelock')}",
            f"httpx {_version('httpx')}",
            f"requests {_version('requests')}",
        )
    )
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Python {platform.python_version()} · {versions} · {os.cpu_count()} CPUs · {today}"


def print_part(title: str, part: Callable[[], Sequence[str]]) -> None:
    """Print a section's title and tables; a part that raises prints its error instead."""
    print(f"## {title}")
    try:
        tables = part()
    except Exception as exc:
        tables = [describe(exc)]
    for table in tables:
        print()
        print(table, flush=True)
    print()


@contextmanager
def _workspace() -> Iterator[tuple[Path, RedisServer | str]]:
    """A private temporary directory (FileStores, redis-server's), and the redis-server."""
    with tempfile.TemporaryDirectory(prefix="renewauth-bench-") as name:
        directory = Path(name)
        with redis_server(directory / "redis") as server:
            yield directory, server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI smoke tests")
    settings = QUICK if parser.parse_args(argv).quick else FULL
    with _workspace() as (directory, server), FakeHost() as host:
        print(header_line(server))
        print()
        print_part(
            f"(a) {PROCESSES} processes × {THREADS_PER_PROCESS} threads: cold start, then "
            f"{settings.seconds:g} s of requests in real time ({TOKEN_LIFETIME_SECONDS:g} s "
            f"tokens, rotating refresh tokens, leeway {LEEWAY_SECONDS:g} s, token endpoint "
            f"answers in {TOKEN_DELAY_SECONDS * 1000:.0f} ms)",
            lambda: [part_a(host, server, directory, settings)],
        )
        print_part(
            f"(b) Cost per request with a cached token: median of {settings.repetitions} "
            f"batches of {settings.iterations} requests, no network; (ratio to MemoryStore)",
            lambda: [part_b(host, server, directory, settings)],
        )
    print("Caveats:")
    for caveat in CAVEATS:
        print(f"- {caveat}")


if __name__ == "__main__":
    main()
