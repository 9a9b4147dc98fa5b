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
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    contextmanager,
    suppress,
)
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
import requests
import requests.adapters
from _common import (
    CANNED_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    AsyncCannedTransport,
    CannedAdapter,
    CannedTransport,
    Counters,
    FakeHost,
    RedisServer,
    SyncClient,
    Tally,
    Timings,
    check_signed,
    describe,
    failures_cell,
    header_line,
    hot_path_cell,
    latency_cell,
    markdown_table,
    package_version,
    print_part,
    redis_server,
    rotated,
    time_async,
    time_sync,
)

import renewauth
from renewauth import Token, TokenStore

USERNAME = "alice"
PASSWORD = "alice-password"
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
HOT_LEEWAY_SECONDS = 30.0
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


def _per_lifetime(result: SharedResult) -> str:
    calls = result.steady_counters.token_calls
    lifetimes = result.seconds / TOKEN_LIFETIME_SECONDS
    return f"{calls / lifetimes:.2f} ({calls} in {result.seconds:.1f} s)"


def _stale(result: SharedResult) -> str:
    cold, steady = result.cold_counters, result.steady_counters
    return str(cold.stale_refresh_tokens + steady.stale_refresh_tokens)


SHARED_ROWS: Sequence[tuple[str, Callable[[SharedResult], str]]] = (
    ("cold start: token calls", lambda result: str(result.cold_counters.token_calls)),
    ("cold start: failed requests", lambda result: failures_cell(result.cold)),
    ("steady: token calls per lifetime", _per_lifetime),
    ("steady: failed requests", lambda result: failures_cell(result.steady)),
    ("steady: 401s answered by the API", lambda r: str(r.steady_counters.api_unauthorized)),
    ("stale refresh tokens presented", _stale),
    ("steady: successful requests/s", lambda result: f"{result.steady.ok / result.seconds:.0f}"),
    ("steady: request latency, median / max", lambda result: latency_cell(result.steady)),
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
class StoreTimings(Timings):
    """`Timings`, and the store calls the timed requests made."""

    store_calls: int = 0
    requests: int = 0


@dataclass(frozen=True, slots=True)
class HotCase:
    """One column of (b): a store (counted), the auth object over it, and its timings."""

    store: CountedStore
    auth: renewauth.OAuth2Password
    timings: StoreTimings


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
        cases[kind] = HotCase(store, auth, StoreTimings())
    return cases, missing


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
            check_signed(response)
            clients[kind] = client
        except Exception as exc:
            case.timings.error = describe(exc)
        case.store.calls = 0  # from here on, a fresh token should need no store at all
    with timed:
        for repetition in range(settings.repetitions):
            for kind in rotated(list(clients), repetition):
                timings = cases[kind].timings
                try:
                    timings.seconds.append(time_sync(clients[kind], settings.iterations))
                    timings.requests += settings.iterations
                except Exception as exc:
                    timings.error = describe(exc)
                    clients.pop(kind).close()
    for kind, client in clients.items():
        cases[kind].timings.store_calls = cases[kind].store.calls
        client.close()


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
            check_signed(response)
            clients[kind] = client
        except Exception as exc:
            case.timings.error = describe(exc)
        case.store.calls = 0
    with timed:
        for repetition in range(settings.repetitions):
            for kind in rotated(list(clients), repetition):
                timings = cases[kind].timings
                try:
                    timings.seconds.append(await time_async(clients[kind], settings.iterations))
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
            hot_path_cell(cases[kind].timings, baseline) if kind in cases else missing[kind]
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


def _header_line(server: RedisServer | str) -> str:
    server_version = server.version if isinstance(server, RedisServer) else "not running"
    return header_line(
        (
            f"renewauth {package_version('renewauth')}",
            f"redis-py {package_version('redis')}",
            f"redis-server {server_version}",
            f"filelock {package_version('filelock')}",
            f"httpx {package_version('httpx')}",
            f"requests {package_version('requests')}",
        )
    )


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
    with (
        _workspace() as (directory, server),
        FakeHost(
            token_delay=TOKEN_DELAY_SECONDS, rotate_refresh_tokens=True, api_path="items"
        ) as host,
    ):
        print(_header_line(server))
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
