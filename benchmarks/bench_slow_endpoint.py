"""Benchmarks: does a request wait for a renewal while a valid token is at hand?

Run ``python benchmarks/bench_slow_endpoint.py`` (about 2½ minutes) or ``--quick`` (about
1¾ minutes). It prints Markdown tables:

(a) a token endpoint that answers in 2 s, 6 s tokens: 8 threads on one `requests.Session` and
    50 tasks on one `httpx.AsyncClient` loop for 15 s (8 s with ``--quick``) after a warm-up
    request that fetched the first token; renewauth, Authlib and a static header side by side:
    requests failed, token calls per lifetime, and the slowest request beside the static
    header's;
(b) a `RedisStore` whose redis-server is paused (SIGSTOP) for 4 s, from 1 s before the cached
    token's soft window opens, then resumed (SIGCONT): the slowest request of a renewauth
    client that had a valid token cached all along.

Nothing here asserts a timing: the numbers are for people to read. `README.md` in this folder
says what each row means. The contenders are built as `bench_core.py` builds them (imported
from it); the fake token server runs in a child process, as there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGCONT, SIGSTOP
from typing import Any, TypeVar

import httpx
import requests
import requests.adapters
from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    Counters,
    FakeHost,
    RedisServer,
    RemoteFake,
    Tally,
    describe,
    failures_cell,
    header_line,
    markdown_table,
    package_version,
    print_part,
    redis_server,
)
from bench_core import ASYNC_CONTENDERS, REQUESTS_CONTENDERS, STATIC, Contender, Setup

import renewauth

THREADS = 8
TASKS = 50
TOKEN_DELAY_SECONDS = 2.0  # the slow token endpoint
LIFETIME_SECONDS = 6.0
# Authlib's leeway (its default, 60 s, would renew a 6 s token on every request); renewauth
# renews a token that lives less than twice its leeway at half its life, 3 s, all the same.
LEEWAY_SECONDS = 3.0
CONTENDERS = ("renewauth", "Authlib", STATIC)
# Each caller pauses between requests: the fake (one Python process, a thread per connection)
# then answers at once, and the slowest request shows what the auth object made it wait.
THREAD_PAUSE_SECONDS = 0.01
TASK_PAUSE_SECONDS = 0.2
TICK_SECONDS = 0.005  # the event-loop watcher's sleep

# (b): the store stalls from 1 s before the soft window opens (half a 12 s life) for 4 s;
# the token is sendable until 0.5 s before it expires, 2.5 s after the stall ends.
STALL_LIFETIME_SECONDS = 12.0
STALL_LEEWAY_SECONDS = 6.0
STALL_LEAD_SECONDS = 1.0  # SIGSTOP this long before the soft window opens
STALL_SECONDS = 4.0
STALL_TOKEN_DELAY_SECONDS = 0.02
STALL_THREADS = 4
STALL_TASKS = 10
STALL_PAUSE_SECONDS = 0.02  # between one caller's requests
LONG_WAIT_SECONDS = 0.5  # a request slower than this is counted as one that waited
RENEWAL_WATCH_SECONDS = 20.0  # how long past the callers' end a new token is looked for

CAVEATS = (
    f"(a) leeway {LEEWAY_SECONDS:g} s for every contender: renewauth renews a "
    f"{LIFETIME_SECONDS:g} s token at half its life either way; Authlib renews when its "
    "token has less than the leeway left (its default, 60 s, would renew on every request). "
    "Authlib keeps expiry in whole seconds, counted from the answer, not from the request.",
    "Token calls per lifetime: the fake's token calls in the measured window divided by the "
    f"lifetimes it lasted. One renewal per half-life is 2; each renewal takes "
    f"{TOKEN_DELAY_SECONDS:g} s, so a token's life counts from a request sent "
    f"{TOKEN_DELAY_SECONDS:g} s before its answer.",
    "Authlib's sync client renews without a lock: every thread that finds the token expired "
    "fetches one; its AsyncOAuth2Client takes a lock on every request, so every task waits "
    "for a renewal.",
    "static: a fixed header with a token that outlives the run: the load's own cost. "
    "Slowest − static: how much longer the slowest request took than the static header's "
    "slowest, for the same client.",
    "(b) the token is valid during the whole stall: every request there had a sendable token "
    f"at hand, so none should wait more than {LONG_WAIT_SECONDS:g} s. The RedisStore "
    "has its default timeouts (2 s per command, one reconnection).",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each part runs: the full run, or `--quick` for a smoke test."""

    seconds: float  # the measured window of (a)


T = TypeVar("T")

FULL = Settings(seconds=15.0)
QUICK = Settings(seconds=8.0)


# --- callers: threads or tasks that send a request, pause, and send again -------------------


@dataclass(slots=True)
class Sent:
    """The requests of a load: when each started (monotonic), how long each took, and (with
    asyncio) the event loop's largest stall."""

    tally: Tally = field(default_factory=Tally)
    starts: list[float] = field(default_factory=list)
    seconds: float = 0.0  # from the release of the callers to the end of the last one
    stall_seconds: float | None = None

    def add(self, other: Sent) -> None:
        self.tally.add(other.tally)
        self.starts.extend(other.starts)

    def slowest(self) -> float:
        return max(self.tally.latencies, default=0.0)

    def waited(self) -> str:
        """How many requests took longer than `LONG_WAIT_SECONDS`, and their share."""
        latencies = self.tally.latencies
        waited = sum(latency > LONG_WAIT_SECONDS for latency in latencies)
        return f"{waited} ({waited / max(1, len(latencies)):.1%})"


@dataclass(frozen=True, slots=True)
class Pace:
    """When a caller starts, how long it pauses between requests, and when it stops."""

    start: float
    pause: float
    until: float


def _paces(count: int, pause: float, start: float, seconds: float) -> list[Pace]:
    """Callers start spread over one pause, not all at once (no burst of new connections)."""
    return [Pace(start + index * pause / count, pause, start + seconds) for index in range(count)]


def _caller(get: Callable[[str], Any], url: str, pace: Pace, sent: Sent) -> None:
    time.sleep(max(0.0, pace.start - time.monotonic()))
    while time.monotonic() < pace.until:
        sent.starts.append(time.monotonic())
        sent.tally.send(get, url)
        time.sleep(pace.pause)


def thread_load(
    get: Callable[[str], Any],
    url: str,
    *,
    count: int,
    pause: float,
    seconds: float,
    meanwhile: Callable[[], T],
) -> tuple[Sent, T]:
    """`count` threads send requests through `get` for `seconds`, each pausing `pause` between
    two; this thread runs `meanwhile()` and then waits for them."""
    start = time.monotonic()
    sents = [Sent() for _ in range(count)]
    threads = [
        threading.Thread(target=_caller, args=(get, url, pace, sent), daemon=True)
        for pace, sent in zip(_paces(count, pause, start, seconds), sents, strict=True)
    ]
    for thread in threads:
        thread.start()
    outcome = meanwhile()
    for thread in threads:
        thread.join(max(0.0, start + seconds + HANG_LIMIT_SECONDS - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"threads still running {HANG_LIMIT_SECONDS:.0f} s past the end")
    return _merged(sents, time.monotonic() - start), outcome


async def _acaller(client: httpx.AsyncClient, url: str, pace: Pace, sent: Sent) -> None:
    await asyncio.sleep(max(0.0, pace.start - time.monotonic()))
    while time.monotonic() < pace.until:
        started = time.monotonic()
        sent.starts.append(started)
        try:
            sent.tally.record(await client.get(url), started)
        except Exception as exc:
            sent.tally.record_error(exc, started)
        await asyncio.sleep(pace.pause)


async def _watch_loop(stop: asyncio.Event) -> float:
    """The largest delay, beyond `TICK_SECONDS`, with which a `TICK_SECONDS` sleep woke up."""
    worst = 0.0
    while not stop.is_set():
        expected = time.perf_counter() + TICK_SECONDS
        await asyncio.sleep(TICK_SECONDS)
        worst = max(worst, time.perf_counter() - expected)
    return worst


async def task_load(
    client: httpx.AsyncClient,
    url: str,
    *,
    count: int,
    pause: float,
    seconds: float,
    meanwhile: Callable[[], T],
) -> tuple[Sent, T]:
    """`thread_load` with `count` tasks on this loop; `meanwhile` runs in a thread."""
    start = time.monotonic()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_loop(stop))
    sents = [Sent() for _ in range(count)]
    callers = [
        asyncio.create_task(_acaller(client, url, pace, sent))
        for pace, sent in zip(_paces(count, pause, start, seconds), sents, strict=True)
    ]
    try:
        # A thread of its own: the default executor is the library's (RedisStore's calls).
        with ThreadPoolExecutor(1, thread_name_prefix="bench meanwhile") as own:
            outcome = await asyncio.get_running_loop().run_in_executor(own, meanwhile)
        await asyncio.wait_for(
            asyncio.gather(*callers),
            max(0.0, start + seconds + HANG_LIMIT_SECONDS - time.monotonic()),
        )
    finally:
        stop.set()
        stall = await watcher
    sent = _merged(sents, time.monotonic() - start)
    sent.stall_seconds = stall
    return sent, outcome


def _merged(sents: Sequence[Sent], seconds: float) -> Sent:
    merged = Sent(seconds=seconds)
    for sent in sents:
        merged.add(sent)
    return merged


def _nothing() -> None:
    """`meanwhile` for a load that needs nothing else done."""


def _warmed(response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"warm-up answered {response.status_code}")


# --- (a) a slow token endpoint -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One contender's measured window: its requests and what the fake saw."""

    sent: Sent
    counters: Counters


def _setup(library: str, fake: RemoteFake) -> Setup:
    if library == STATIC:
        # Fetched by hand (it takes the endpoint's 2 s); the counters are reset after warm-up.
        return Setup(token_url=fake.token_url, leeway=0.0, static_token=fake.fetch_access_token())
    return Setup(token_url=fake.token_url, leeway=LEEWAY_SECONDS)


def _lifetime(library: str) -> float:
    return LONG_LIFETIME_SECONDS if library == STATIC else LIFETIME_SECONDS


def run_sync(host: FakeHost, contender: Contender[Any], settings: Settings) -> Run | str:
    """`THREADS` threads on one client, after a warm-up request that fetched the first token."""
    try:
        with host.provider(token_lifetime=_lifetime(contender.library)) as fake:
            client = contender.build(_setup(contender.library, fake))
            try:
                _warmed(client.get(fake.api_url))
                fake.reset_counters()
                sent, _ = thread_load(
                    client.get,
                    fake.api_url,
                    count=THREADS,
                    pause=THREAD_PAUSE_SECONDS,
                    seconds=settings.seconds,
                    meanwhile=_nothing,
                )
            finally:
                client.close()
            return Run(sent, fake.counters())
    except Exception as exc:
        return describe(exc)


async def _async_window(
    fake: RemoteFake, contender: Contender[httpx.AsyncClient], settings: Settings
) -> Run:
    client = contender.build(_setup(contender.library, fake))
    try:
        _warmed(await client.get(fake.api_url))
        fake.reset_counters()
        sent, _ = await task_load(
            client,
            fake.api_url,
            count=TASKS,
            pause=TASK_PAUSE_SECONDS,
            seconds=settings.seconds,
            meanwhile=_nothing,
        )
    finally:
        await client.aclose()
    return Run(sent, fake.counters())


def run_async(
    host: FakeHost, contender: Contender[httpx.AsyncClient], settings: Settings
) -> Run | str:
    """`TASKS` tasks on one `httpx.AsyncClient`, after a warm-up request."""
    try:
        with host.provider(token_lifetime=_lifetime(contender.library)) as fake:
            return asyncio.run(_async_window(fake, contender, settings))
    except Exception as exc:
        return describe(exc)


def _row(client: str, library: str, run: Run | str, static: Run | str) -> list[str]:
    if isinstance(run, str):
        return [client, library, *[run] * 7]
    sent = run.sent
    calls = run.counters.token_calls
    per_lifetime = (
        "—"
        if library == STATIC
        else f"{calls / (sent.seconds / LIFETIME_SECONDS):.2f} ({calls} in {sent.seconds:.1f} s)"
    )
    latencies = sorted(sent.tally.latencies)
    median = latencies[len(latencies) // 2] if latencies else 0.0
    above = (
        "—"
        if isinstance(static, str) or library == STATIC
        else f"{sent.slowest() - static.sent.slowest():+.2f} s"
    )
    stall = "—" if sent.stall_seconds is None else f"{sent.stall_seconds * 1000:.0f} ms"
    return [
        client,
        library,
        f"{len(latencies):,}",
        failures_cell(sent.tally),
        sent.waited(),
        per_lifetime,
        f"{median * 1000:.0f} ms / {sent.slowest():.2f} s",
        above,
        stall,
    ]


def part_a(host: FakeHost, settings: Settings) -> str:
    """Table (a): each contender with each client, one after another."""
    rows = []
    shapes: Sequence[tuple[str, Sequence[Contender[Any]], Callable[..., Run | str]]] = (
        (f"requests, {THREADS} threads", REQUESTS_CONTENDERS, run_sync),
        (f"httpx async, {TASKS} tasks", ASYNC_CONTENDERS, run_async),
    )
    for client, contenders, run in shapes:
        chosen = {each.library: each for each in contenders if each.library in CONTENDERS}
        results = {library: run(host, chosen[library], settings) for library in CONTENDERS}
        rows += [_row(client, library, results[library], results[STATIC]) for library in CONTENDERS]
    return markdown_table(
        [
            "client",
            "auth",
            "requests",
            "requests failed",
            f"slower than {LONG_WAIT_SECONDS:g} s",
            "token calls per lifetime",
            "median / slowest request",
            "slowest − static",
            "event-loop stall",
        ],
        rows,
    )


# --- (b) a stalled Redis ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """The moments of (b), on the monotonic clock."""

    soft_opens: float  # the cached token's soft window opens
    stop: float  # SIGSTOP
    resume: float  # SIGCONT
    spent: float  # the cached token stops being sent (0.5 s before it expires)
    end: float  # the callers stop


@dataclass(frozen=True, slots=True)
class StallResult:
    sent: Sent
    schedule: Schedule
    renewed_at: float | None  # when the auth object held a new token
    token_calls: int


def _monotonic(wall: float) -> float:
    return time.monotonic() + (wall - time.time())


def _schedule(auth: renewauth.OAuth2ClientCredentials) -> Schedule:
    token = auth.token
    if token is None or token.expires_at is None:
        raise RuntimeError("the warm-up left no token with an expiry")
    soft_opens = _monotonic(token.renew_at(STALL_LEEWAY_SECONDS))
    expires = _monotonic(token.expires_at)
    stop = soft_opens - STALL_LEAD_SECONDS
    return Schedule(soft_opens, stop, stop + STALL_SECONDS, expires - 0.5, expires + 1.0)


def _stall_auth(server: RedisServer, token_url: str) -> renewauth.OAuth2ClientCredentials:
    store = renewauth.RedisStore(server.url, prefix=f"bench:{os.urandom(4).hex()}:")
    return renewauth.OAuth2ClientCredentials(
        token_url, CLIENT_ID, CLIENT_SECRET, leeway=STALL_LEEWAY_SECONDS, store=store
    )


def _pausing(
    server: RedisServer, schedule: Schedule, auth: renewauth.OAuth2ClientCredentials
) -> Callable[[], float | None]:
    """`meanwhile` for (b): SIGSTOP and SIGCONT redis-server on schedule, then watch `auth`
    every 10 ms, up to `RENEWAL_WATCH_SECONDS` past the callers' end; when it held a new
    token, or None."""
    first = auth.token

    def pause() -> float | None:
        time.sleep(max(0.0, schedule.stop - time.monotonic()))
        server.process.send_signal(SIGSTOP)
        try:
            time.sleep(max(0.0, schedule.resume - time.monotonic()))
        finally:
            server.process.send_signal(SIGCONT)
        while time.monotonic() < schedule.end + RENEWAL_WATCH_SECONDS:
            if auth.token is not first:
                return time.monotonic()
            time.sleep(0.01)
        return None

    return pause


def stall_sync(host: FakeHost, server: RedisServer) -> StallResult:
    """`STALL_THREADS` threads on one `requests.Session` through the stall."""
    with host.provider(token_lifetime=STALL_LIFETIME_SECONDS) as fake:
        auth = _stall_auth(server, fake.token_url)
        with requests.Session() as session:
            session.auth = auth
            session.trust_env = False
            session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=STALL_THREADS))
            _warmed(session.get(fake.api_url))
            fake.reset_counters()
            schedule = _schedule(auth)
            sent, renewed_at = thread_load(
                session.get,
                fake.api_url,
                count=STALL_THREADS,
                pause=STALL_PAUSE_SECONDS,
                seconds=schedule.end - time.monotonic(),
                meanwhile=_pausing(server, schedule, auth),
            )
        return StallResult(sent, schedule, renewed_at, fake.counters().token_calls)


async def _stall_async(fake: RemoteFake, server: RedisServer) -> StallResult:
    auth = _stall_auth(server, fake.token_url)
    async with httpx.AsyncClient(auth=auth, timeout=30.0, trust_env=False) as client:
        _warmed(await client.get(fake.api_url))
        fake.reset_counters()
        schedule = _schedule(auth)
        sent, renewed_at = await task_load(
            client,
            fake.api_url,
            count=STALL_TASKS,
            pause=STALL_PAUSE_SECONDS,
            seconds=schedule.end - time.monotonic(),
            meanwhile=_pausing(server, schedule, auth),
        )
    return StallResult(sent, schedule, renewed_at, fake.counters().token_calls)


def stall_async(host: FakeHost, server: RedisServer) -> StallResult:
    """`STALL_TASKS` tasks on one `httpx.AsyncClient` through the stall."""
    with host.provider(token_lifetime=STALL_LIFETIME_SECONDS) as fake:
        return asyncio.run(_stall_async(fake, server))


def _stall_row(client: str, result: StallResult | str) -> list[str]:
    if isinstance(result, str):
        return [client, *[result] * 8]
    schedule, sent = result.schedule, result.sent
    pairs = list(zip(sent.starts, sent.tally.latencies, strict=True))
    slowest_start, slowest = max(pairs, key=lambda pair: pair[1], default=(0.0, 0.0))
    # Requests that left while the cached token was valid and still sendable.
    valid = [latency for start, latency in pairs if start < schedule.spent]
    in_stall = [latency for start, latency in pairs if schedule.stop <= start < schedule.resume]
    renewed = (
        f"not by SIGCONT {schedule.end + RENEWAL_WATCH_SECONDS - schedule.resume:+.0f} s"
        if result.renewed_at is None
        else f"at SIGCONT {result.renewed_at - schedule.resume:+.2f} s"
    )
    stall = "—" if sent.stall_seconds is None else f"{sent.stall_seconds * 1000:.0f} ms"
    return [
        client,
        f"{len(pairs):,}",
        failures_cell(sent.tally),
        sent.waited(),
        f"{max(valid, default=0.0):.2f} s",
        f"{max(in_stall, default=0.0):.2f} s ({len(in_stall)})",
        f"{slowest:.2f} s, sent at SIGSTOP {slowest_start - schedule.stop:+.2f} s",
        f"{renewed}; token calls: {result.token_calls}",
        stall,
    ]


def part_b(host: FakeHost, server: RedisServer | str) -> str:
    """Table (b): the stall, once with threads on requests, once with asyncio tasks."""
    rows = []
    runs: Sequence[tuple[str, Callable[[FakeHost, RedisServer], StallResult]]] = (
        (f"requests, {STALL_THREADS} threads", stall_sync),
        (f"httpx async, {STALL_TASKS} tasks", stall_async),
    )
    for client, run in runs:
        result: StallResult | str
        if isinstance(server, str):
            result = server
        else:
            try:
                result = run(host, server)
            except Exception as exc:
                result = describe(exc)
        rows.append(_stall_row(client, result))
    return markdown_table(
        [
            "client",
            "requests",
            "requests failed",
            f"slower than {LONG_WAIT_SECONDS:g} s",
            "slowest sent with a valid token cached",
            "slowest sent during the stall (how many)",
            "slowest of all",
            "new token held",
            "event-loop stall",
        ],
        rows,
    )


# --- output --------------------------------------------------------------------------------


PACKAGES = ("renewauth", "Authlib", "requests", "httpx", "redis")


@contextmanager
def _redis() -> Iterator[RedisServer | str]:
    with (
        tempfile.TemporaryDirectory(prefix="renewauth-bench-") as name,
        redis_server(Path(name) / "redis") as server,
    ):
        yield server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter window in (a)")
    settings = QUICK if parser.parse_args(argv).quick else FULL
    with _redis() as server:
        server_version = server.version if isinstance(server, RedisServer) else "not running"
        versions = [f"{name} {package_version(name)}" for name in PACKAGES]
        print(header_line([*versions, f"redis-server {server_version}"]))
        print()
        with FakeHost(token_delay=TOKEN_DELAY_SECONDS) as host:
            print_part(
                f"(a) A token endpoint that answers in {TOKEN_DELAY_SECONDS:g} s, "
                f"{LIFETIME_SECONDS:g} s tokens: {settings.seconds:g} s of requests after a "
                "warm-up that fetched the first token",
                lambda: [part_a(host, settings)],
            )
        with FakeHost(token_delay=STALL_TOKEN_DELAY_SECONDS) as host:
            print_part(
                f"(b) A RedisStore paused (SIGSTOP) for {STALL_SECONDS:g} s, from "
                f"{STALL_LEAD_SECONDS:g} s before the cached token's soft window opens "
                f"({STALL_LIFETIME_SECONDS:g} s tokens, soft window from "
                f"{STALL_LIFETIME_SECONDS - STALL_LEEWAY_SECONDS:g} s, a request every "
                f"{STALL_PAUSE_SECONDS * 1000:.0f} ms per caller)",
                lambda: [part_b(host, server)],
            )
    print("Caveats:")
    for caveat in CAVEATS:
        print(f"- {caveat}")


if __name__ == "__main__":
    main()
