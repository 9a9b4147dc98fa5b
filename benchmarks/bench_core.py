"""Benchmarks: renewauth against Authlib and httpx-auth, side by side.

Run ``python benchmarks/bench_core.py`` (about 3 minutes) or ``--quick`` (under a minute, for
CI smoke tests). It prints Markdown tables:

(a) the cost of one request with a cached token, against a static auth object, with no network;
(b) token calls and failed requests when 32 threads start cold together, then loop for a few
    token lifetimes;
(c) the same with 200 asyncio tasks, and the event loop's largest stall.

Nothing here asserts a timing: the numbers are for people to read. `README.md` in this folder
says what each row means. The fake token server runs in a child process, so that its threads
never compete with the contenders for this process's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Generic, TypeVar

import httpx
import httpx_auth
import requests
import requests.adapters
from _common import (
    CANNED_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    STATIC,
    AsyncCannedTransport,
    CannedAdapter,
    CannedTransport,
    Counters,
    FakeHost,
    RemoteFake,
    Setup,
    SyncClient,
    Tally,
    Timings,
    authlib_options,
    check_signed,
    describe,
    failures_cell,
    header_line,
    hot_path_cell,
    latency_cell,
    markdown_table,
    print_part,
    renewauth_credentials,
    rotated,
    time_async,
    time_sync,
)

with warnings.catch_warnings():  # Authlib 1.9 warns at import that it prefers "httpx2"
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - sets an "always" filter

    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
        OAuth2Client,
    )
    from authlib.integrations.requests_client import (  # type: ignore[import-untyped]
        OAuth2Session,
    )

# Authlib 1.9 builds `authlib.integrations.httpx_client` on httpx2 whenever httpx2 is installed
# (bench_clients.py measures it there): its clients are httpx's only where httpx2 is not.
AUTHLIB_ON_HTTPX = issubclass(OAuth2Client, httpx.Client)
AUTHLIB_ON_HTTPX2 = (
    "Authlib 1.9 builds its httpx clients on httpx2 when httpx2 is installed, as here: "
    "bench_clients.py measures them on httpx2."
)

LIBRARIES = ("renewauth", "Authlib", "httpx-auth")
THREADS = 32
TASKS = 200
TOKEN_DELAY_SECONDS = 0.02
SHORT_LIFETIME_SECONDS = 1.0
SHORT_LEEWAY_SECONDS = 0.1
TICK_SECONDS = 0.005
# Printed under the tables: library behaviours, read in their sources, that the numbers reflect.
CAVEATS = (
    "Authlib fetches no first token by itself (a request without one raises "
    "MissingTokenError); in (b) and (c) it starts from an expired token, so that its own "
    "renewal path makes the cold-start fetch.",
    "Authlib keeps expiry in whole seconds (`int(time.time()) + int(expires_in)`), so with "
    "1 s tokens a token may look expired on arrival and is fetched again; its sync clients "
    "renew without a lock (every thread that sees expiry fetches), its AsyncOAuth2Client "
    "takes a lock on every request.",
    "httpx-auth fetches under a lock but does not look in its cache again once it holds it "
    "(N waiting threads fetch N tokens, one after another), and in async mode fetches with "
    "a blocking httpx.Client inside the event loop.",
    "static: a fixed header with a token that outlives the run: the load's own cost, without "
    "renewal.",
    "Steady 401s: httpx signs a request before it waits for a pooled connection. When the "
    "latency row shows waits near or beyond the token lifetime, a token can expire after "
    "signing, before sending. renewauth checks the token again as the headers are written "
    "(and, with httpx.AsyncClient, waits for room in the pool before signing); the other "
    "columns send the token they signed.",
)
NOT_AVAILABLE = {
    ("requests", "httpx-auth"): (
        "httpx-auth is an `httpx.Auth` only; requests has its own sibling package, requests-auth."
    ),
    ("httpx", "Authlib"): AUTHLIB_ON_HTTPX2,
    ("httpx async", "Authlib"): AUTHLIB_ON_HTTPX2,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each part runs: the full run, or `--quick` for a smoke test."""

    iterations: int  # requests per timed batch in (a)
    repetitions: int  # interleaved batches per contender in (a)
    lifetimes: int  # token lifetimes the steady phase of (b) and (c) lasts


# Many short batches, interleaved, cancel a noisy machine's drift better than a few long ones.
FULL = Settings(iterations=2_000, repetitions=25, lifetimes=5)
QUICK = Settings(iterations=1_000, repetitions=5, lifetimes=2)


# --- the static baseline -------------------------------------------------------------------


class StaticRequestsAuth(requests.auth.AuthBase):
    """The baseline for requests: sets a fixed `Authorization` header."""

    def __init__(self, token: str) -> None:
        self._authorization = f"Bearer {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._authorization
        return request


class StaticHttpxAuth(httpx.Auth):
    """The baseline for httpx, sync and async: sets a fixed `Authorization` header."""

    def __init__(self, token: str) -> None:
        self._authorization = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._authorization
        yield request


# --- the contenders --------------------------------------------------------------------------


ClientT = TypeVar("ClientT")


@dataclass(frozen=True, slots=True)
class Contender(Generic[ClientT]):
    """One column of a table: a library, and how it builds a client as a user would."""

    library: str
    build: Callable[[Setup], ClientT]


def _httpx_auth(setup: Setup) -> httpx_auth.OAuth2ClientCredentials:
    return httpx_auth.OAuth2ClientCredentials(
        setup.token_url, CLIENT_ID, CLIENT_SECRET, early_expiry=setup.leeway
    )


def _pooled(session: requests.Session, setup: Setup) -> requests.Session:
    """Mount a pool big enough for every thread, and the canned adapter when asked."""
    # requests otherwise scans os.environ for proxy settings on every call: a cost that
    # depends on the environment and would drown the auth object's own.
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=THREADS))
    if setup.canned:
        session.mount(CANNED_URL, CannedAdapter())
    return session


def _requests_static(setup: Setup) -> requests.Session:
    session = requests.Session()
    session.auth = StaticRequestsAuth(setup.static_token)
    return _pooled(session, setup)


def _requests_renewauth(setup: Setup) -> requests.Session:
    session = requests.Session()
    session.auth = renewauth_credentials(setup)
    return _pooled(session, setup)


def _requests_authlib(setup: Setup) -> requests.Session:
    session = OAuth2Session(CLIENT_ID, CLIENT_SECRET, **authlib_options(setup))
    return _pooled(session, setup)


def _httpx_options(setup: Setup) -> dict[str, Any]:
    options: dict[str, Any] = {
        "timeout": 30.0,
        "trust_env": False,
        "limits": httpx.Limits(max_connections=100, max_keepalive_connections=100),
    }
    if setup.canned:
        options["transport"] = CannedTransport()
    return options


def _async_options(setup: Setup) -> dict[str, Any]:
    options = _httpx_options(setup)
    if setup.canned:
        options["transport"] = AsyncCannedTransport()
    return options


def _httpx_static(setup: Setup) -> httpx.Client:
    return httpx.Client(auth=StaticHttpxAuth(setup.static_token), **_httpx_options(setup))


def _httpx_renewauth(setup: Setup) -> httpx.Client:
    return httpx.Client(auth=renewauth_credentials(setup), **_httpx_options(setup))


def _httpx_authlib(setup: Setup) -> httpx.Client:
    options = authlib_options(setup) | _httpx_options(setup)
    return OAuth2Client(CLIENT_ID, CLIENT_SECRET, **options)  # type: ignore[no-any-return]


def _httpx_httpx_auth(setup: Setup) -> httpx.Client:
    return httpx.Client(auth=_httpx_auth(setup), **_httpx_options(setup))


def _async_static(setup: Setup) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=StaticHttpxAuth(setup.static_token), **_async_options(setup))


def _async_renewauth(setup: Setup) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=renewauth_credentials(setup), **_async_options(setup))


def _async_authlib(setup: Setup) -> httpx.AsyncClient:
    options = authlib_options(setup) | _async_options(setup)
    return AsyncOAuth2Client(CLIENT_ID, CLIENT_SECRET, **options)  # type: ignore[no-any-return]


def _async_httpx_auth(setup: Setup) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=_httpx_auth(setup), **_async_options(setup))


REQUESTS_CONTENDERS: Sequence[Contender[requests.Session]] = (
    Contender(STATIC, _requests_static),
    Contender("renewauth", _requests_renewauth),
    Contender("Authlib", _requests_authlib),
)
HTTPX_CONTENDERS: Sequence[Contender[httpx.Client]] = (
    Contender(STATIC, _httpx_static),
    Contender("renewauth", _httpx_renewauth),
    *([Contender("Authlib", _httpx_authlib)] if AUTHLIB_ON_HTTPX else []),
    Contender("httpx-auth", _httpx_httpx_auth),
)
ASYNC_CONTENDERS: Sequence[Contender[httpx.AsyncClient]] = (
    Contender(STATIC, _async_static),
    Contender("renewauth", _async_renewauth),
    *([Contender("Authlib", _async_authlib)] if AUTHLIB_ON_HTTPX else []),
    Contender("httpx-auth", _async_httpx_auth),
)
SYNC_CLIENTS: Mapping[str, Sequence[Contender[Any]]] = {
    "requests": REQUESTS_CONTENDERS,
    "httpx": HTTPX_CONTENDERS,
}


# --- (a) cost per request with a cached token -------------------------------------------------


def _expected_token(library: str, setup: Setup) -> str | None:
    """The token a contender must send: the baseline's, unless it fetched its own."""
    return setup.static_token if library in (STATIC, "Authlib") else None


def measure_sync_hot_path(
    contenders: Sequence[Contender[Any]], setup: Setup, settings: Settings
) -> dict[str, Timings]:
    """Interleaved batches of `settings.iterations` requests through each warmed-up client."""
    timings = {contender.library: Timings() for contender in contenders}
    clients: dict[str, SyncClient] = {}
    for contender in contenders:
        try:
            client = contender.build(setup)
            for _ in range(100):  # fetch the token, fill caches
                response = client.get(CANNED_URL)
            check_signed(response, _expected_token(contender.library, setup))
            clients[contender.library] = client
        except Exception as exc:
            timings[contender.library].error = describe(exc)
    for repetition in range(settings.repetitions):
        for library in rotated(list(clients), repetition):
            try:
                timings[library].seconds.append(time_sync(clients[library], settings.iterations))
            except Exception as exc:
                timings[library].error = describe(exc)
                clients.pop(library).close()
    for client in clients.values():
        client.close()
    return timings


async def measure_async_hot_path(
    contenders: Sequence[Contender[httpx.AsyncClient]], setup: Setup, settings: Settings
) -> dict[str, Timings]:
    """`measure_sync_hot_path` for `httpx.AsyncClient`s, in one event loop."""
    timings = {contender.library: Timings() for contender in contenders}
    clients: dict[str, httpx.AsyncClient] = {}
    for contender in contenders:
        try:
            client = contender.build(setup)
            for _ in range(100):
                response = await client.get(CANNED_URL)
            check_signed(response, _expected_token(contender.library, setup))
            clients[contender.library] = client
        except Exception as exc:
            timings[contender.library].error = describe(exc)
    for repetition in range(settings.repetitions):
        for library in rotated(list(clients), repetition):
            try:
                timings[library].seconds.append(
                    await time_async(clients[library], settings.iterations)
                )
            except Exception as exc:
                timings[library].error = describe(exc)
                await clients.pop(library).aclose()
    for client in clients.values():
        await client.aclose()
    return timings


def part_a(host: FakeHost, settings: Settings, notes: Notes) -> str:
    """Table (a): µs per request with a cached token, and the ratio to the static baseline."""
    with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
        token = fake.fetch_access_token()
        setup = Setup(
            token_url=fake.token_url,
            leeway=30.0,
            static_token=token,
            authlib_token={
                "access_token": token,
                "token_type": "Bearer",
                "expires_at": int(time.time() + LONG_LIFETIME_SECONDS),
            },
            canned=True,
        )
        results = {
            name: measure_sync_hot_path(contenders, setup, settings)
            for name, contenders in SYNC_CLIENTS.items()
        }
        results["httpx async"] = asyncio.run(
            measure_async_hot_path(ASYNC_CONTENDERS, setup, settings)
        )
    columns = (STATIC, *LIBRARIES)
    rows = []
    for client, timings in results.items():
        cells = [
            hot_path_cell(timings[library], timings[STATIC])
            if library in timings
            else notes.not_available(client, library)
            for library in columns
        ]
        rows.append([client, *cells])
    return markdown_table(["client", *columns], rows)


# --- (b) and (c): many threads or tasks against the fake -------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a run (cold start, or steady looping), as the fake and the workers saw it."""

    tally: Tally
    counters: Counters
    seconds: float
    stall_seconds: float | None = None  # asyncio only


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A contender's cold start and steady phase."""

    cold: Phase
    steady: Phase


def _setup_for(library: str, fake: RemoteFake) -> Setup:
    if library == STATIC:
        # The baseline cannot fetch a token: it gets one by hand, which the fake does not count.
        token = fake.fetch_access_token()
        fake.reset_counters()
        return Setup(token_url=fake.token_url, leeway=0.0, static_token=token)
    return Setup(token_url=fake.token_url, leeway=SHORT_LEEWAY_SECONDS)


def _steady_lifetime(library: str) -> float:
    # The static baseline cannot renew: its token outlives the run.
    return LONG_LIFETIME_SECONDS if library == STATIC else SHORT_LIFETIME_SECONDS


def _thread_worker(
    client: SyncClient, url: str, barrier: threading.Barrier, deadline: list[float], tally: Tally
) -> None:
    barrier.wait()
    while True:  # at least one request; more until the deadline
        tally.send(client.get, url)
        if time.monotonic() >= deadline[0]:
            return


def run_threads(client: SyncClient, url: str, duration: float) -> tuple[Tally, float]:
    """`THREADS` threads released together by a barrier, each looping for `duration` s.

    With `duration` 0, each thread sends one request: a cold start.
    """
    started = [0.0]
    deadline = [0.0]

    def release() -> None:
        started[0] = time.monotonic()
        deadline[0] = started[0] + duration

    barrier = threading.Barrier(THREADS, action=release)
    tallies = [Tally() for _ in range(THREADS)]
    threads = [
        threading.Thread(
            target=_thread_worker, args=(client, url, barrier, deadline, tally), daemon=True
        )
        for tally in tallies
    ]
    for thread in threads:
        thread.start()
    give_up = time.monotonic() + duration + HANG_LIMIT_SECONDS
    for thread in threads:
        thread.join(max(0.0, give_up - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"threads still running {HANG_LIMIT_SECONDS:.0f} s past the deadline")
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, time.monotonic() - started[0]


def _sync_phase(fake: RemoteFake, contender: Contender[Any], duration: float) -> Phase:
    client: SyncClient = contender.build(_setup_for(contender.library, fake))
    try:
        if duration > 0:
            client.get(fake.api_url)  # the first token: steady state from here on
            fake.reset_counters()
        tally, seconds = run_threads(client, fake.api_url, duration)
    finally:
        client.close()
    return Phase(tally, fake.counters(), seconds)


def load_sync(host: FakeHost, contender: Contender[Any], settings: Settings) -> LoadResult | str:
    """Cold start with `THREADS` threads, then `THREADS` threads looping for a few lifetimes."""
    try:
        with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
            cold = _sync_phase(fake, contender, 0.0)
        with host.provider(token_lifetime=_steady_lifetime(contender.library)) as fake:
            steady = _sync_phase(fake, contender, settings.lifetimes * SHORT_LIFETIME_SECONDS)
    except Exception as exc:
        return describe(exc)
    return LoadResult(cold, steady)


async def _watch_loop(stop: asyncio.Event) -> float:
    """The largest delay, beyond `TICK_SECONDS`, with which a `TICK_SECONDS` sleep woke up."""
    worst = 0.0
    while not stop.is_set():
        expected = time.perf_counter() + TICK_SECONDS
        await asyncio.sleep(TICK_SECONDS)
        worst = max(worst, time.perf_counter() - expected)
    return worst


async def _task_worker(
    client: httpx.AsyncClient, url: str, start: asyncio.Event, deadline: list[float], tally: Tally
) -> None:
    await start.wait()
    while True:
        started = time.monotonic()
        try:
            tally.record(await client.get(url), started)
        except Exception as exc:
            tally.record_error(exc, started)
        if time.monotonic() >= deadline[0]:
            return


async def run_tasks(
    client: httpx.AsyncClient, url: str, duration: float
) -> tuple[Tally, float, float]:
    """`TASKS` tasks released together by an event, each looping for `duration` s.

    Returns the tally, the seconds it took and the event loop's largest stall meanwhile.
    """
    start, stop = asyncio.Event(), asyncio.Event()
    tallies = [Tally() for _ in range(TASKS)]
    deadline = [0.0]
    watcher = asyncio.create_task(_watch_loop(stop))
    workers = [
        asyncio.create_task(_task_worker(client, url, start, deadline, tally)) for tally in tallies
    ]
    await asyncio.sleep(0)  # every worker now waits on `start`
    started = time.monotonic()
    deadline[0] = started + duration
    start.set()
    try:
        await asyncio.wait_for(asyncio.gather(*workers), duration + HANG_LIMIT_SECONDS)
    finally:
        stop.set()
        stall = await watcher
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, time.monotonic() - started, stall


async def _async_phase(
    fake: RemoteFake, contender: Contender[httpx.AsyncClient], duration: float
) -> Phase:
    client = contender.build(_setup_for(contender.library, fake))
    try:
        if duration > 0:
            await client.get(fake.api_url)
            fake.reset_counters()
        tally, seconds, stall = await run_tasks(client, fake.api_url, duration)
    finally:
        await client.aclose()
    return Phase(tally, fake.counters(), seconds, stall)


def load_async(
    host: FakeHost, contender: Contender[httpx.AsyncClient], settings: Settings
) -> LoadResult | str:
    """Cold start with `TASKS` tasks, then `TASKS` tasks looping; each phase in a new loop."""
    try:
        with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
            cold = asyncio.run(_async_phase(fake, contender, 0.0))
        with host.provider(token_lifetime=_steady_lifetime(contender.library)) as fake:
            duration = settings.lifetimes * SHORT_LIFETIME_SECONDS
            steady = asyncio.run(_async_phase(fake, contender, duration))
    except Exception as exc:
        return describe(exc)
    return LoadResult(cold, steady)


# --- (b) and (c): the rows -------------------------------------------------------------------


def cold_token_calls(library: str, result: LoadResult) -> str:
    return "—" if library == STATIC else str(result.cold.counters.token_calls)


def cold_failures(library: str, result: LoadResult) -> str:
    return failures_cell(result.cold.tally)


def steady_token_calls(library: str, result: LoadResult) -> str:
    if library == STATIC:
        return "—"
    seconds = result.steady.seconds
    calls = result.steady.counters.token_calls
    return f"{calls / (seconds / SHORT_LIFETIME_SECONDS):.2f} ({calls} in {seconds:.1f} s)"


def steady_failures(library: str, result: LoadResult) -> str:
    return failures_cell(result.steady.tally)


def steady_unauthorized(library: str, result: LoadResult) -> str:
    return str(result.steady.counters.api_unauthorized)


def steady_throughput(library: str, result: LoadResult) -> str:
    return f"{result.steady.tally.ok / result.steady.seconds:.0f}"


def steady_latency(library: str, result: LoadResult) -> str:
    return latency_cell(result.steady.tally)


def _stall(phase: Phase) -> str:
    return "—" if phase.stall_seconds is None else f"{phase.stall_seconds * 1000:.0f} ms"


def cold_stall(library: str, result: LoadResult) -> str:
    return _stall(result.cold)


def steady_stall(library: str, result: LoadResult) -> str:
    return _stall(result.steady)


Row = tuple[str, Callable[[str, LoadResult], str]]
LOAD_ROWS: Sequence[Row] = (
    ("cold start: token calls", cold_token_calls),
    ("cold start: failed requests", cold_failures),
    ("steady: token calls per lifetime", steady_token_calls),
    ("steady: failed requests", steady_failures),
    ("steady: 401s answered by the API", steady_unauthorized),
    ("steady: successful requests/s", steady_throughput),
    ("steady: request latency, median / max", steady_latency),
)
STALL_ROWS: Sequence[Row] = (
    ("cold start: largest event-loop stall", cold_stall),
    ("steady: largest event-loop stall", steady_stall),
)


def load_table(
    client: str, results: Mapping[str, LoadResult | str], notes: Notes, rows: Sequence[Row]
) -> str:
    columns = (*LIBRARIES, STATIC)
    lines: list[list[str]] = []
    for label, cell in rows:
        line = [label]
        for library in columns:
            result = results.get(library)
            if result is None:
                line.append(notes.not_available(client, library))
            elif isinstance(result, str):
                line.append(result)  # the error that stopped this contender
            else:
                line.append(cell(library, result))
        lines.append(line)
    return markdown_table([client, *columns], lines)


def part_b(host: FakeHost, settings: Settings, notes: Notes) -> list[str]:
    """Tables (b), one per sync client: token calls and failures under `THREADS` threads."""
    tables = []
    for client, contenders in SYNC_CLIENTS.items():
        results = {each.library: load_sync(host, each, settings) for each in contenders}
        tables.append(load_table(client, results, notes, LOAD_ROWS))
    return tables


def part_c(host: FakeHost, settings: Settings, notes: Notes) -> str:
    """Table (c): the same under `TASKS` asyncio tasks, and the event loop's largest stall."""
    results = {each.library: load_async(host, each, settings) for each in ASYNC_CONTENDERS}
    return load_table("httpx async", results, notes, [*LOAD_ROWS, *STALL_ROWS])


# --- output --------------------------------------------------------------------------------


class Notes:
    """Numbered footnotes for the cells that say "n/a"."""

    def __init__(self) -> None:
        self._texts: list[str] = []

    def not_available(self, client: str, library: str) -> str:
        text = NOT_AVAILABLE.get((client, library), f"{library} has no {client} contender here.")
        if text not in self._texts:
            self._texts.append(text)
        return f"n/a [{self._texts.index(text) + 1}]"

    def render(self) -> str:
        return "\n".join(f"[{number}] {text}" for number, text in enumerate(self._texts, 1))


PACKAGES = ("renewauth", "Authlib", "httpx-auth", "requests", "httpx")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI smoke tests")
    settings = QUICK if parser.parse_args(argv).quick else FULL
    notes = Notes()
    print(header_line([f"{name} {version(name)}" for name in PACKAGES]))
    print()
    with FakeHost(token_delay=TOKEN_DELAY_SECONDS) as host:
        print_part(
            f"(a) Cost per request with a cached token: median of {settings.repetitions} "
            f"batches of {settings.iterations} requests, no network; (ratio to static)",
            lambda: [part_a(host, settings, notes)],
        )
        print_part(
            f"(b) {THREADS} threads, one shared client: cold start, then "
            f"{settings.lifetimes} × {SHORT_LIFETIME_SECONDS:.0f} s token lifetimes "
            f"(leeway {SHORT_LEEWAY_SECONDS} s, token endpoint answers in "
            f"{TOKEN_DELAY_SECONDS * 1000:.0f} ms)",
            lambda: part_b(host, settings, notes),
        )
        print_part(
            f"(c) {TASKS} asyncio tasks, one shared client: the same, and the event loop's "
            f"largest stall ({TICK_SECONDS * 1000:.0f} ms ticker)",
            lambda: [part_c(host, settings, notes)],
        )
    print(notes.render())
    print()
    print("Caveats:")
    for caveat in CAVEATS:
        print(f"- {caveat}")


if __name__ == "__main__":
    main()
