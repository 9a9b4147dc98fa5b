"""httpx2 and aiohttp: renewauth beside their peers and a static header, in one run.

Run ``python benchmarks/bench_clients.py`` (about 7 minutes; ``--quick``: one 2 s round per
cell, and callgrind for renewauth and the static header only). It needs valgrind for (d).

(a) 1 s tokens, a token endpoint that answers in 20 ms: a cold start (100 tasks, or 32
    threads for `httpx2.Client`, with no token yet), then rounds of 200 tasks on 10
    connections (32 threads on 4 for `httpx2.Client`): failed requests, 401s at the API,
    token calls per lifetime, requests/s;
(b) a cached token that outlives the run: requests/s with 200 tasks on 10 connections, and
    the ratio to the static header in the same round;
(c) does httpcore2's pool need renewauth's admission gate? A static header with 200 tasks on
    10 connections, every task in the pool, or a semaphore of 20 in front of it; httpx
    (httpcore 1.0) and aiohttp beside httpx2;
(d) cost per request with a cached token, in instructions under callgrind (5N − N requests,
    one at a time), answered in memory (a canned transport or connector, as `bench_cost.py`
    counts them) or by the fake over a loopback connection (httpcore2's `trace` events run).

The contenders: renewauth (`OAuth2ClientCredentials`, as `httpx2.Client(auth=…)`,
`httpx2.AsyncClient(auth=…)` and `aiohttp.ClientSession(middlewares=(auth,))`), Authlib's
`OAuth2Client` and `AsyncOAuth2Client` (which Authlib 1.9 builds on httpx2), aiohttp-oauth2-
client's `OAuth2Middleware` with a `ClientCredentialsGrant`, and a static header (an
`httpx2.Auth`, or a middleware that sets it). The fakes run in a child process; within a
round the contenders take turns, in a different order each round. Nothing here asserts a
timing: `README.md` in this folder says what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import httpx2
from _common import (
    CANNED_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    STATIC,
    FakeHost,
    RemoteFake,
    Setup,
    Tally,
    authlib_options,
    callgrind_counted,
    counted,
    describe,
    failures_cell,
    header_line,
    latency_cell,
    markdown_table,
    print_part,
    renewauth_credentials,
    rotated,
)

if TYPE_CHECKING:
    from bench_arrival import Rounds, Run

# bench_arrival and bench_core (Authlib, httpx-auth, requests-oauth2client) are imported only
# where the loads need them: a callgrind worker of (d) then starts without paying for them.

LIFETIME_SECONDS = 1.0
TOKEN_DELAY_SECONDS = 0.02
COLD_TASKS = 100
TASKS, ASYNC_CONNECTIONS = 200, 10
THREADS, SYNC_CONNECTIONS = 32, 4
GATE = 20  # (c): the semaphore in front of the pool, as docs/design.md measured httpx with
REQUEST_TIMEOUT_SECONDS = 30.0
WARM_UP = 50  # (d): requests before the counted ones
N = 100  # (d): requests in the short callgrind run; the long one sends 5N
LIVE_N = 40  # (d) over a loopback connection, where a request costs about 4 times as much
PEER = {"aiohttp": "aiohttp-oauth2-client", "httpx2 async": "Authlib", "httpx2": "Authlib"}
LIBRARIES = (STATIC, "renewauth", "Authlib", "aiohttp-oauth2-client")

AsyncSend = Callable[[str], Awaitable[int]]  # one GET, its status
SyncSend = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float  # of load per round in (a)
    repeat: int  # rounds per cell in (a)
    ratio_seconds: float  # in (b) and (c), where a ratio to the round beside it is the figure:
    ratio_repeat: int  # more, shorter rounds
    callgrind: Sequence[str]  # the libraries (d) counts


FULL = Settings(seconds=3.0, repeat=3, ratio_seconds=2.0, ratio_repeat=5, callgrind=LIBRARIES)
QUICK = Settings(seconds=2.0, repeat=1, ratio_seconds=2.0, ratio_repeat=1,
                 callgrind=(STATIC, "renewauth"))  # fmt: skip


# --- answers without a socket: a 200 when the request carries a bearer token, else a 401 -------


def _signed(authorization: str | None) -> bool:
    return (
        authorization is not None and authorization.startswith("Bearer ") and len(authorization) > 7
    )


class CannedHttpx2(httpx2.BaseTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        status = 200 if _signed(request.headers.get("Authorization")) else 401
        return httpx2.Response(status, headers={"Content-Type": "application/json"}, content=b"{}")


class AsyncCannedHttpx2(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        status = 200 if _signed(request.headers.get("Authorization")) else 401
        return httpx2.Response(status, headers={"Content-Type": "application/json"}, content=b"{}")


_ANSWERS = {
    True: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    False: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
}


class _CannedSocket(asyncio.Transport):
    """An asyncio transport that answers each request written to it, kept alive."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._written = b""
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._written += bytes(data)
        if b"\r\n\r\n" in self._written:  # a GET ends with its headers
            signed = b"\r\nAuthorization: Bearer " in self._written
            self._written = b""
            self._loop.call_soon(self._protocol.data_received, _ANSWERS[signed])

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class CannedConnector(aiohttp.BaseConnector):
    """An aiohttp connector whose connections answer in memory: aiohttp's whole client path
    (request, writer, parser, pool) runs, only the socket is missing."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        from aiohttp.client_proto import ResponseHandler

        protocol = ResponseHandler(asyncio.get_running_loop())
        protocol.connection_made(_CannedSocket(protocol))
        return protocol


# --- the contenders, built as a user would ---------------------------------------------------


class StaticHttpx2Auth(httpx2.Auth):
    """The baseline for httpx2, sync and async: sets a fixed `Authorization` header."""

    def __init__(self, token: str) -> None:
        self._authorization = f"Bearer {token}"

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self._authorization
        yield request


def static_middleware(token: str) -> Callable[..., Awaitable[aiohttp.ClientResponse]]:
    """The baseline for aiohttp: a middleware that sets a fixed `Authorization` header."""
    authorization = f"Bearer {token}"

    async def static(
        request: aiohttp.ClientRequest, handler: Callable[..., Awaitable[aiohttp.ClientResponse]]
    ) -> aiohttp.ClientResponse:
        request.headers["Authorization"] = authorization
        return await handler(request)

    return static


def _httpx2_options(setup: Setup, connections: int, *, is_async: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "timeout": REQUEST_TIMEOUT_SECONDS,
        "trust_env": False,
        "limits": httpx2.Limits(max_connections=connections),
    }
    if setup.canned:
        options["transport"] = AsyncCannedHttpx2() if is_async else CannedHttpx2()
    return options


@asynccontextmanager
async def _async_client(client: httpx.AsyncClient | httpx2.AsyncClient) -> AsyncIterator[AsyncSend]:
    async with client:
        get = client.get

        async def send(url: str) -> int:
            return (await get(url)).status_code

        yield send


@contextmanager
def _sync_client(client: httpx2.Client) -> Iterator[SyncSend]:
    with client:
        get = client.get

        def send(url: str) -> int:
            return get(url).status_code

        yield send


def _httpx2_async(setup: Setup, auth: Any) -> Any:
    options = _httpx2_options(setup, ASYNC_CONNECTIONS, is_async=True)
    return _async_client(httpx2.AsyncClient(auth=auth, **options))


def _httpx2_sync(setup: Setup, auth: Any) -> Any:
    options = _httpx2_options(setup, SYNC_CONNECTIONS, is_async=False)
    return _sync_client(httpx2.Client(auth=auth, **options))


def _authlib_async(setup: Setup) -> httpx2.AsyncClient:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    options = authlib_options(setup) | _httpx2_options(setup, ASYNC_CONNECTIONS, is_async=True)
    return AsyncOAuth2Client(CLIENT_ID, CLIENT_SECRET, **options)  # type: ignore[no-any-return]


def _authlib_sync(setup: Setup) -> httpx2.Client:
    from authlib.integrations.httpx_client import OAuth2Client

    options = authlib_options(setup) | _httpx2_options(setup, SYNC_CONNECTIONS, is_async=False)
    return OAuth2Client(CLIENT_ID, CLIENT_SECRET, **options)  # type: ignore[no-any-return]


@asynccontextmanager
async def _aiohttp_session(middleware: Any, setup: Setup) -> AsyncIterator[AsyncSend]:
    connector = CannedConnector() if setup.canned else aiohttp.TCPConnector(limit=ASYNC_CONNECTIONS)
    async with aiohttp.ClientSession(
        connector=connector,
        middlewares=(middleware,),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    ) as session:
        get = session.get

        async def send(url: str) -> int:
            async with get(url) as response:
                await response.read()
                return response.status

        yield send


@asynccontextmanager
async def _aiohttp_oauth2_client(setup: Setup) -> AsyncIterator[AsyncSend]:
    from aiohttp_oauth2_client.grant.client_credentials import ClientCredentialsGrant
    from aiohttp_oauth2_client.middleware import OAuth2Middleware

    # The grant opens its own aiohttp session (for token requests) on the running loop.
    async with (
        ClientCredentialsGrant(setup.token_url, CLIENT_ID, CLIENT_SECRET) as grant,
        _aiohttp_session(OAuth2Middleware(grant), setup) as send,
    ):
        yield send


Build = Callable[[Setup], Any]  # an (async) context manager that yields a send function
CLIENTS: Mapping[str, Mapping[str, Build]] = {
    "aiohttp": {
        STATIC: lambda setup: _aiohttp_session(static_middleware(setup.static_token), setup),
        "renewauth": lambda setup: _aiohttp_session(renewauth_credentials(setup), setup),
        "aiohttp-oauth2-client": _aiohttp_oauth2_client,
    },
    "httpx2 async": {
        STATIC: lambda setup: _httpx2_async(setup, StaticHttpx2Auth(setup.static_token)),
        "renewauth": lambda setup: _httpx2_async(setup, renewauth_credentials(setup)),
        "Authlib": lambda setup: _async_client(_authlib_async(setup)),
    },
    "httpx2": {
        STATIC: lambda setup: _httpx2_sync(setup, StaticHttpx2Auth(setup.static_token)),
        "renewauth": lambda setup: _httpx2_sync(setup, renewauth_credentials(setup)),
        "Authlib": lambda setup: _sync_client(_authlib_sync(setup)),
    },
}
SHAPES = {
    "aiohttp": f"{TASKS} tasks / TCPConnector(limit={ASYNC_CONNECTIONS})",
    "httpx2 async": f"{TASKS} tasks / {ASYNC_CONNECTIONS} connections",
    "httpx2": f"{THREADS} threads / {SYNC_CONNECTIONS} connections",
}


def _cached_setup(fake: RemoteFake) -> Setup:
    """A token that outlives the run: the static header and Authlib are handed it, renewauth
    and aiohttp-oauth2-client fetch their own (as long-lived) from `fake`."""
    token = fake.fetch_access_token()
    fake.reset_counters()
    expires_at = int(time.time() + LONG_LIFETIME_SECONDS)
    authlib_token = {"access_token": token, "token_type": "Bearer", "expires_at": expires_at}
    return Setup(token_url=fake.token_url, leeway=30.0, static_token=token,
                 authlib_token=authlib_token)  # fmt: skip


# --- the loads -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One round of one contender: the run, and the event loop's largest stall (async)."""

    run: Run
    stall: float | None = None


async def _tasks(
    send: AsyncSend, url: str, tasks: int, seconds: float, gate: asyncio.Semaphore | None = None
) -> tuple[Tally, int, float]:
    """`tasks` tasks released together, each sending until `seconds` have passed (one request
    each when 0), through `gate` when given: the tally, the successes before the deadline and
    the event loop's largest stall."""
    from bench_core import _watch_loop

    tallies = [Tally() for _ in range(tasks)]
    in_window = [0] * tasks
    start, stop = asyncio.Event(), asyncio.Event()
    deadline = [0.0]

    async def one(tally: Tally) -> None:
        started = time.monotonic()
        try:
            if gate is None:
                status = await send(url)
            else:
                async with gate:
                    status = await send(url)
        except Exception as exc:
            tally.record_error(exc, started)
        else:
            tally.record_status(status, started)

    async def work(index: int) -> None:
        await start.wait()
        tally = tallies[index]
        while True:
            await one(tally)
            if time.monotonic() > deadline[0]:
                return
            in_window[index] = tally.ok

    watcher = asyncio.create_task(_watch_loop(stop))
    workers = [asyncio.create_task(work(index)) for index in range(tasks)]
    await asyncio.sleep(0)  # every worker now waits on `start`
    deadline[0] = time.monotonic() + seconds
    start.set()
    try:
        await asyncio.wait_for(asyncio.gather(*workers), seconds + HANG_LIMIT_SECONDS)
    finally:
        stop.set()
        stall = await watcher
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, sum(in_window), stall


def _threads(send: SyncSend, url: str, threads: int, seconds: float) -> tuple[Tally, int]:
    """`_tasks` with threads released by a barrier."""
    tallies = [Tally() for _ in range(threads)]
    in_window = [0] * threads
    deadline = [0.0]

    def release() -> None:
        deadline[0] = time.monotonic() + seconds

    barrier = threading.Barrier(threads, action=release)

    def work(index: int) -> None:
        barrier.wait()
        tally = tallies[index]
        while True:
            started = time.monotonic()
            try:
                status = send(url)
            except Exception as exc:
                tally.record_error(exc, started)
            else:
                tally.record_status(status, started)
            if time.monotonic() > deadline[0]:
                return
            in_window[index] = tally.ok

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    give_up = time.monotonic() + seconds + HANG_LIMIT_SECONDS
    for worker in workers:
        worker.join(max(0.0, give_up - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        raise TimeoutError(f"threads still running {HANG_LIMIT_SECONDS:.0f} s past the deadline")
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, sum(in_window)


def run(
    client: str,
    build: Build,
    setup: Setup,
    fake: RemoteFake,
    seconds: float,
    *,
    callers: int | None = None,
    gate: int | None = None,
) -> Outcome:
    """One round: build the client, send one request first unless this is a cold start
    (`seconds` 0), then load it; the fake's counters count from after that first request."""
    from bench_arrival import Run

    if client == "httpx2":
        with build(setup) as send:
            if seconds > 0:
                send(fake.api_url)
                fake.reset_counters()
            tally, in_window = _threads(send, fake.api_url, callers or THREADS, seconds)
        return Outcome(Run(tally, fake.counters(), seconds, in_window))

    async def main() -> Outcome:
        async with build(setup) as send:
            if seconds > 0:
                await send(fake.api_url)
                fake.reset_counters()
            semaphore = None if gate is None else asyncio.Semaphore(gate)
            tally, in_window, stall = await _tasks(
                send, fake.api_url, callers or TASKS, seconds, semaphore
            )
        return Outcome(Run(tally, fake.counters(), seconds, in_window), stall)

    return asyncio.run(main())


def rounds(
    host: FakeHost,
    builds: Mapping[Any, Callable[[RemoteFake], Outcome]],
    repeat: int,
    lifetime: Callable[[Any], float],
) -> dict[Any, list[Outcome] | str]:
    """`repeat` rounds of each of `builds`, taking turns, a new fake for each."""
    done: dict[Any, list[Outcome]] = {name: [] for name in builds}
    errors: dict[Any, str] = {}
    for turn in range(repeat):
        for name in rotated(list(builds), turn):
            if name in errors:
                continue
            try:
                with host.provider(token_lifetime=lifetime(name)) as fake:
                    done[name].append(builds[name](fake))
            except Exception as exc:
                errors[name] = describe(exc)
                print(f"{name}: {exc!r}", file=sys.stderr, flush=True)
    return {name: errors.get(name) or done[name] for name in builds}


# --- (a) 1 s tokens --------------------------------------------------------------------------


def _steady_lifetime(library: str) -> float:
    return LONG_LIFETIME_SECONDS if library == STATIC else LIFETIME_SECONDS


def _cold(host: FakeHost, client: str, library: str, build: Build) -> Outcome | str:
    from bench_core import _setup_for

    callers = THREADS if client == "httpx2" else COLD_TASKS
    try:
        with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
            return run(client, build, _setup_for(library, fake), fake, 0.0, callers=callers)
    except Exception as exc:
        print(f"{client} {library} cold: {exc!r}", file=sys.stderr, flush=True)
        return describe(exc)


def _rounds(outcomes: Sequence[Outcome]) -> Rounds:
    from bench_arrival import Rounds

    return Rounds([each.run for each in outcomes])


def _rate(outcomes: Sequence[Outcome]) -> str:
    return _rounds(outcomes).rate_cell()


def _token_calls(library: str, outcomes: Sequence[Outcome]) -> str:
    if library == STATIC:
        return "—"
    total = _rounds(outcomes).total
    calls = total.counters.token_calls
    lifetimes = total.seconds / LIFETIME_SECONDS
    return f"{calls / lifetimes:.2f} ({calls} in {total.seconds:.0f} s)"


def _met_401(outcomes: Sequence[Outcome]) -> str:
    total = _rounds(outcomes).total
    sent = total.tally.ok + total.tally.failures.total()
    share = total.counters.api_unauthorized / sent if sent else 0.0
    return f"{total.counters.api_unauthorized} ({share:.1%})"


def _stall(outcomes: Sequence[Outcome]) -> str:
    stalls = [each.stall for each in outcomes if each.stall is not None]
    return f"{max(stalls) * 1000:.0f} ms" if stalls else "—"


def _tally(outcomes: Sequence[Outcome]) -> Tally:
    return _rounds(outcomes).total.tally


COLD_ROWS: Sequence[tuple[str, Callable[[str, Outcome], str]]] = (
    ("token calls", lambda library, cold: "—" if library == STATIC
     else str(cold.run.counters.token_calls)),
    ("failed requests", lambda library, cold: failures_cell(cold.run.tally)),
)  # fmt: skip
STEADY_ROWS: Sequence[tuple[str, Callable[[str, Sequence[Outcome]], str]]] = (
    ("successful requests/s", lambda library, steady: _rate(steady)),
    ("requests failed", lambda library, steady: failures_cell(_tally(steady))),
    ("requests that met a 401 at the API", lambda library, steady: _met_401(steady)),
    ("token calls per lifetime", _token_calls),
    ("latency, median / max", lambda library, steady: latency_cell(_tally(steady))),
    ("largest event-loop stall", lambda library, steady: _stall(steady)),
)


def part_a(host: FakeHost, client: str, settings: Settings) -> str:
    """A cold start, then `settings.repeat` rounds of load with 1 s tokens, for each contender."""
    from bench_core import _setup_for

    builds = CLIENTS[client]
    cold = {library: _cold(host, client, library, build) for library, build in builds.items()}

    def steady(library: str) -> Callable[[RemoteFake], Outcome]:
        build = builds[library]
        return lambda fake: run(client, build, _setup_for(library, fake), fake, settings.seconds)

    loads = rounds(host, {library: steady(library) for library in builds}, settings.repeat,
                   _steady_lifetime)  # fmt: skip
    columns = ["renewauth", PEER[client], STATIC]
    callers = f"{THREADS} threads" if client == "httpx2" else f"{COLD_TASKS} tasks"
    lines = []
    for label, cell in COLD_ROWS:
        line = [f"cold start ({callers}): {label}"]
        for library in columns:
            result = cold[library]
            line.append(result if isinstance(result, str) else cell(library, result))
        lines.append(line)
    for label, cells in STEADY_ROWS:
        if label == "largest event-loop stall" and client == "httpx2":
            continue
        line = [f"{SHAPES[client]}: {label}"]
        for library in columns:
            outcomes = loads[library]
            line.append(outcomes if isinstance(outcomes, str) else cells(library, outcomes))
        lines.append(line)
    return markdown_table([client, *columns], lines)


# --- (b) a cached token, 200 tasks on 10 connections -------------------------------------------


def _ratio_cell(outcomes: list[Outcome] | str, baseline: list[Outcome] | str) -> str:
    """Requests/s (the median round), and the median over rounds of the ratio to the baseline's
    round run next to it."""
    if isinstance(outcomes, str):
        return outcomes
    rate = _rate(outcomes)
    if outcomes is baseline or isinstance(baseline, str):
        return rate
    pairs = zip(outcomes, baseline, strict=False)
    ratio = statistics.median(mine.run.rate / base.run.rate for mine, base in pairs)
    failed = _tally(outcomes).failures.total()
    return f"{rate} ({ratio:.2f}×)" + (f", {failed} failed" if failed else "")


def part_b(host: FakeHost, settings: Settings) -> str:
    """Requests/s with a cached token, each contender beside the static header of its client."""
    lines = []
    for client in ("httpx2 async", "aiohttp"):
        builds = CLIENTS[client]

        def cached(library: str, client: str = client) -> Callable[[RemoteFake], Outcome]:
            build = CLIENTS[client][library]
            seconds = settings.ratio_seconds
            return lambda fake: run(client, build, _cached_setup(fake), fake, seconds)

        loads = rounds(host, {library: cached(library) for library in builds},
                       settings.ratio_repeat, lambda library: LONG_LIFETIME_SECONDS)  # fmt: skip
        cells = [
            _ratio_cell(loads[library], loads[STATIC]) if library in loads else "n/a"
            for library in LIBRARIES
        ]
        lines.append([f"{client}, {SHAPES[client]}", *cells])
    return markdown_table(["client", *LIBRARIES], lines)


# --- (c) the pool's queue: every task in it, or a semaphore in front ---------------------------


def _httpx_async(setup: Setup, auth: Any, **options: Any) -> Any:
    options |= {"timeout": REQUEST_TIMEOUT_SECONDS, "trust_env": False,
                "limits": httpx.Limits(max_connections=ASYNC_CONNECTIONS)}  # fmt: skip
    return _async_client(httpx.AsyncClient(auth=auth, **options))


def _httpx_static(setup: Setup) -> Any:
    from bench_core import StaticHttpxAuth

    return _httpx_async(setup, StaticHttpxAuth(setup.static_token))


async def _drop_trace(request: httpx.Request | httpx2.Request) -> None:
    """A request hook that takes the request's `trace` away: renewauth then never sees it
    leave, and opens its admission gate for good (docs/design.md): renewauth without a gate."""
    request.extensions.pop("trace", None)


UNGATED = {"event_hooks": {"request": [_drop_trace]}}
# (c)'s rows: what runs with every task in the pool, and what runs with a gate in front.
HTTPX = f"httpx {version('httpx')} (httpcore {version('httpcore')})"
HTTPX2 = f"httpx2 {version('httpx2')} (httpcore2 {version('httpcore2')})"
QUEUES: Mapping[str, tuple[Build, Build | None]] = {
    f"{HTTPX}, static header": (_httpx_static, None),
    f"{HTTPX2}, static header": (CLIENTS["httpx2 async"][STATIC], None),
    f"aiohttp {version('aiohttp')}, static header": (CLIENTS["aiohttp"][STATIC], None),
    f"{HTTPX}, renewauth": (
        lambda setup: _httpx_async(setup, renewauth_credentials(setup), **UNGATED),
        lambda setup: _httpx_async(setup, renewauth_credentials(setup)),
    ),
    # renewauth on httpx2 has no admission gate (this table's httpx2 rows are why): its
    # requests queue in httpcore2's pool, as the static header's do; (a) has its figures.
}


def part_c(host: FakeHost, settings: Settings) -> str:
    """A cached token, 200 tasks on 10 connections: every task in the pool, or a gate in front
    (a semaphore of 20 for the static header; renewauth's own admission gate)."""

    def load(build: Build, gate: int | None) -> Callable[[RemoteFake], Outcome]:
        return lambda fake: run(
            "async", build, _cached_setup(fake), fake, settings.ratio_seconds, gate=gate
        )

    builds = {}
    for name, (free, gated) in QUEUES.items():
        builds[(name, False)] = load(free, None)
        builds[(name, True)] = load(free, GATE) if gated is None else load(gated, None)
    loads = rounds(host, builds, settings.ratio_repeat, lambda key: LONG_LIFETIME_SECONDS)
    lines = []
    for name in QUEUES:
        free, gated = loads[(name, False)], loads[(name, True)]
        lines.append([name, _ratio_cell(free, free), _ratio_cell(gated, free),
                      _latency(free), _latency(gated)])  # fmt: skip
    headers = [f"{TASKS} tasks / {ASYNC_CONNECTIONS} connections, a cached token",
               f"requests/s, all {TASKS} in the pool", "with a gate in front (ratio)",
               "latency, all in the pool", "latency, with the gate"]  # fmt: skip
    return markdown_table(headers, lines)


def _latency(outcomes: list[Outcome] | str) -> str:
    return outcomes if isinstance(outcomes, str) else latency_cell(_tally(outcomes))


# --- (d) instructions per request with a cached token ------------------------------------------


def _settle() -> None:
    # As in bench_cost: what is alive after the warm-up leaves the collector's sight, so that
    # a full collection does not fall into one run and not the other.
    gc.collect()
    gc.freeze()


def worker(client: str, library: str, count: int, *, token_url: str, token: str, url: str) -> None:
    """Child process (under valgrind): warm up, then send `count` requests to `url`, counted.
    `url` "canned": through the canned transport or connector, no socket."""
    build = CLIENTS[client][library]
    setup = replace(_cached_setup_from(token_url, token), canned=url == "canned")
    url = CANNED_URL if setup.canned else url
    if client == "httpx2":
        with build(setup) as send:
            _check({send(url) for _ in range(WARM_UP)})
            _settle()
            with counted():
                for _ in range(count):
                    send(url)
        return

    async def main() -> None:
        async with build(setup) as send:
            _check({await send(url) for _ in range(WARM_UP)})
            _settle()
            with counted():
                for _ in range(count):
                    await send(url)

    asyncio.run(main())


def _cached_setup_from(token_url: str, token: str) -> Setup:
    expires_at = int(time.time() + LONG_LIFETIME_SECONDS)
    authlib_token = {"access_token": token, "token_type": "Bearer", "expires_at": expires_at}
    return Setup(token_url=token_url, leeway=30.0, static_token=token,
                 authlib_token=authlib_token)  # fmt: skip


def _check(statuses: set[int]) -> None:
    """The canned answers are 200 only for a request that carried a bearer token."""
    if statuses != {200}:
        raise RuntimeError(f"warm-up answered {sorted(statuses)}, not only 200")


def instructions_per_request(
    client: str, library: str, fake: RemoteFake, *, token: str, url: str, n: int
) -> float:
    """(instructions for 5n requests − for n) / 4n."""

    def counted(count: int) -> int:
        arguments = ["--worker", client, library, str(count), fake.token_url, token, url]
        return callgrind_counted(__file__, arguments, f"{library} on {client}")

    return (counted(5 * n) - counted(n)) / (4 * n)


WAYS = {  # (d)'s rows: how the requests are answered, and N
    "canned": ("canned", N),
    "loopback": ("live", LIVE_N),
}


def part_d(host: FakeHost, settings: Settings) -> str:
    lines = []
    with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
        token = fake.fetch_access_token()
        for client in ("aiohttp", "httpx2", "httpx2 async"):
            for way, (kind, n) in WAYS.items():
                url = "canned" if kind == "canned" else fake.api_url
                counts: dict[str, float | str] = {}
                for library in CLIENTS[client]:
                    if library not in settings.callgrind:
                        continue
                    try:
                        counts[library] = instructions_per_request(
                            client, library, fake, token=token, url=url, n=n
                        )
                    except Exception as exc:
                        print(f"{client} {library}: {exc}", file=sys.stderr, flush=True)
                        counts[library] = describe(exc)
                cells = (_count_cell(counts, library) for library in LIBRARIES)
                lines.append([f"{client}, {way} (N = {n})", *cells])
    return markdown_table(["client, answered by", *LIBRARIES], lines)


def _count_cell(counts: Mapping[str, float | str], library: str) -> str:
    value, base = counts.get(library), counts.get(STATIC)
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if library == STATIC or not isinstance(base, float):
        return f"{value:,.0f}"
    return f"{value:,.0f} ({value / base:.3f}×)"


# --- output --------------------------------------------------------------------------------


PACKAGES = ("renewauth", "httpx2", "httpcore2", "aiohttp", "Authlib", "aiohttp-oauth2-client",
            "httpx", "httpcore")  # fmt: skip
NOTES = (
    "Authlib 1.9's `authlib.integrations.httpx_client` runs on httpx2 when it is installed "
    "(its `OAuth2Client` and `AsyncOAuth2Client` subclass `httpx2.Client` and "
    "`httpx2.AsyncClient`); it fetches no first token by itself, so in (a) it starts from an "
    "expired one and its renewal path makes the cold-start fetch; in (b) and (d) it is handed "
    "the long-lived token.",
    "aiohttp-oauth2-client renews a token 30 s before it expires, a margin it does not let "
    "its user set: a 1 s token is always due, so in (a) it fetches a token for every request, "
    "one at a time under its lock. It keeps expiry in whole seconds.",
    "Leeway 0.1 s for renewauth and Authlib in (a); 30 s in (b) and (d), where tokens live an "
    "hour.",
    "requests/s counts answers that came before the load's deadline: the median round, with "
    "the slowest and the fastest in brackets; in (b) and (c) the ratio is the median over "
    "rounds of the contender's rate ÷ the static header's (or the ungated pool's) in the same "
    "round. Other rows add the rounds up.",
    "(d) runs aiohttp's whole client path with a connector whose connections answer in memory "
    "(request, writer, response parser, pool); httpx2's canned transports answer in place of "
    "httpcore2, as bench_cost's do for httpx.",
)


def _rounds_text(repeat: int) -> str:
    return f"{repeat} round{'s' if repeat > 1 else ''}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 2 s round per cell")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="abcd", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        client, library, count, token_url, token, url = options.worker
        worker(client, library, int(count), token_url=token_url, token=token, url=url)
        return
    settings = QUICK if options.quick else FULL
    print(header_line([f"{name} {version(name)}" for name in PACKAGES]))
    print()
    print(
        f"(a): {settings.seconds:.0f} s of load per round, {_rounds_text(settings.repeat)} per "
        f"cell; (b) and (c): {settings.ratio_seconds:.0f} s, {_rounds_text(settings.ratio_repeat)}."
    )
    print()
    parts = options.parts
    with FakeHost(token_delay=TOKEN_DELAY_SECONDS) as host:
        if "a" in parts:
            print_part(
                f"(a) 1 s tokens (leeway 0.1 s), token endpoint answers in "
                f"{TOKEN_DELAY_SECONDS * 1000:.0f} ms: a cold start, then the load",
                lambda: [part_a(host, client, settings) for client in CLIENTS],
            )
        if "b" in parts:
            print_part(
                f"(b) A cached token, {TASKS} tasks / {ASYNC_CONNECTIONS} connections: "
                "requests/s (ratio to static)",
                lambda: [part_b(host, settings)],
            )
        if "c" in parts:
            print_part(
                f"(c) Does the pool need a gate? {TASKS} tasks / {ASYNC_CONNECTIONS} "
                f"connections: all in the pool, or a semaphore of {GATE} in front (static "
                "header), or renewauth's admission gate",
                lambda: [part_c(host, settings)],
            )
        if "d" in parts:
            print_part(
                "(d) Instructions per request with a cached token (callgrind: 5N − N "
                "requests, one at a time), ratio to static: answered in memory (canned), or "
                "by the fake over a loopback connection",
                lambda: [part_d(host, settings)],
            )
    for note in NOTES:
        print(f"- {note}")


if __name__ == "__main__":
    main()
