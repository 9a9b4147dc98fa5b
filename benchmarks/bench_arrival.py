"""Saturated pools: do tokens arrive alive when requests queue longer than a token lives?

Run ``python benchmarks/bench_arrival.py`` (about 8 minutes; ``--quick``: 2 s runs, once). Three
load shapes, each against a pool far smaller than the load, with 1 s tokens and a token
endpoint that answers in 20 ms:

- requests: 32 threads, one `Session` with `HTTPAdapter(pool_maxsize=4, pool_block=True)`;
- httpx: 32 threads, one `httpx.Client(limits=httpx.Limits(max_connections=4))`;
- httpx async: 200 tasks, one `httpx.AsyncClient(limits=httpx.Limits(max_connections=10))`;

at each library's default leeway and at 0.1 s, then renewauth's provider classes (Keycloak
with rotating refresh tokens, Van Marcke) with the async shape. The fakes run in a child
process. Each cell runs ``--repeat`` times (3 unless told), the contenders interleaved and in a
different order each round, so that a machine that slows down for a while slows all of them;
requests/s is the median round (with the slowest and fastest), the other rows add the rounds
up. Nothing here asserts a timing; `README.md` in this folder says what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
import httpx_auth
import requests
import requests.adapters
from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    EXPIRED_AUTHLIB_TOKEN,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    STATIC,
    Counters,
    FakeHost,
    RemoteFake,
    Tally,
    failures_cell,
    header_line,
    latency_cell,
    markdown_table,
)
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
from authlib.integrations.requests_client import OAuth2Session
from bench_core import AUTHLIB_ON_HTTPX, AUTHLIB_ON_HTTPX2, StaticHttpxAuth, StaticRequestsAuth

import renewauth
from renewauth.providers import Keycloak, VanMarcke

LIFETIME_SECONDS = 1.0
TOKEN_DELAY_SECONDS = 0.02
THREADS, SYNC_CONNECTIONS = 32, 4
TASKS, ASYNC_CONNECTIONS = 200, 10
DEFAULT = None  # the library's own default leeway
LEEWAYS: Sequence[float | None] = (DEFAULT, 0.1)
# httpcore 1.0.9's sync pool can close a connection it has just handed to a queued request
# (encode/httpcore#1110), whatever the auth: such a request fails with ReadError, or hangs
# until this timeout and fails with ReadTimeout.
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Run:
    """What one contender did in one shape: its requests, the fake's counters, the time.

    `in_window` counts the successful answers that came before the load's deadline: a request
    stuck past it (httpcore's pool bug, below) is not allowed to stretch the time.
    """

    tally: Tally
    counters: Counters
    seconds: float
    in_window: int

    @property
    def rate(self) -> float:
        """Successful requests per second within the load's window."""
        return self.in_window / self.seconds


@dataclass(frozen=True, slots=True)
class Rounds:
    """One contender's runs of one cell, in the order they ran."""

    runs: Sequence[Run]

    @property
    def total(self) -> Run:
        """The rounds added up: their requests, the fake's counters and their time."""
        tally = Tally()
        for run in self.runs:
            tally.add(run.tally)
        counts = [run.counters for run in self.runs]
        counters = Counters(
            token_calls=sum(c.token_calls for c in counts),
            api_ok=sum(c.api_ok for c in counts),
            api_unauthorized=sum(c.api_unauthorized for c in counts),
            stale_refresh_tokens=sum(c.stale_refresh_tokens for c in counts),
        )
        seconds = sum(run.seconds for run in self.runs)
        return Run(tally, counters, seconds, sum(run.in_window for run in self.runs))

    def rate_cell(self) -> str:
        rates = [run.rate for run in self.runs]
        median = f"{statistics.median(rates):.0f}"
        return median if len(rates) == 1 else f"{median} ({min(rates):.0f}–{max(rates):.0f})"


# --- the contenders, built as a user would ---------------------------------------------------


def _leeway_kw(name: str, leeway: float | None) -> dict[str, Any]:
    return {} if leeway is None else {name: leeway}


def _authlib(leeway: float | None, token_url: str) -> dict[str, Any]:
    return {
        "token_endpoint": token_url,
        "grant_type": "client_credentials",
        "token": dict(EXPIRED_AUTHLIB_TOKEN),  # its own renewal path makes the first fetch
        **_leeway_kw("leeway", leeway),
    }


def _renewauth(leeway: float | None, token_url: str) -> renewauth.OAuth2ClientCredentials:
    return renewauth.OAuth2ClientCredentials(
        token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        store=renewauth.MemoryStore(),
        **_leeway_kw("leeway", leeway),
    )


def _session(auth: Any = None, session: requests.Session | None = None) -> requests.Session:
    session = session or requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=1, pool_maxsize=SYNC_CONNECTIONS, pool_block=True
    )
    session.mount("http://", adapter)
    if auth is not None:
        session.auth = auth
    return session


def _httpx_options(connections: int) -> dict[str, Any]:
    return {
        "limits": httpx.Limits(max_connections=connections),
        "timeout": REQUEST_TIMEOUT_SECONDS,
        "trust_env": False,
    }


Build = Callable[[float | None, RemoteFake], Any]


def _requests_oauth2client(leeway: float | None, fake: RemoteFake) -> requests.Session:
    from requests_oauth2client import OAuth2Client as RoClient
    from requests_oauth2client import OAuth2ClientCredentialsAuth

    # testing=True: it refuses a plain-http token endpoint otherwise (the fake is on loopback).
    client = RoClient(
        fake.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, testing=True
    )
    return _session(OAuth2ClientCredentialsAuth(client, **_leeway_kw("leeway", leeway)))


REQUESTS: dict[str, Build] = {
    STATIC: lambda leeway, fake: _session(StaticRequestsAuth(fake.fetch_access_token())),
    "renewauth": lambda leeway, fake: _session(_renewauth(leeway, fake.token_url)),
    "Authlib": lambda leeway, fake: _session(
        session=OAuth2Session(CLIENT_ID, CLIENT_SECRET, **_authlib(leeway, fake.token_url))
    ),
    "requests-oauth2client": _requests_oauth2client,
}
HTTPX: dict[str, Build] = {
    STATIC: lambda leeway, fake: httpx.Client(
        auth=StaticHttpxAuth(fake.fetch_access_token()), **_httpx_options(SYNC_CONNECTIONS)
    ),
    "renewauth": lambda leeway, fake: httpx.Client(
        auth=_renewauth(leeway, fake.token_url), **_httpx_options(SYNC_CONNECTIONS)
    ),
    "Authlib": lambda leeway, fake: OAuth2Client(
        CLIENT_ID,
        CLIENT_SECRET,
        **_authlib(leeway, fake.token_url),
        **_httpx_options(SYNC_CONNECTIONS),
    ),
    "httpx-auth": lambda leeway, fake: httpx.Client(
        auth=httpx_auth.OAuth2ClientCredentials(
            fake.token_url, CLIENT_ID, CLIENT_SECRET, **_leeway_kw("early_expiry", leeway)
        ),
        **_httpx_options(SYNC_CONNECTIONS),
    ),
}
ASYNC: dict[str, Build] = {
    STATIC: lambda leeway, fake: httpx.AsyncClient(
        auth=StaticHttpxAuth(fake.fetch_access_token()), **_httpx_options(ASYNC_CONNECTIONS)
    ),
    "renewauth": lambda leeway, fake: httpx.AsyncClient(
        auth=_renewauth(leeway, fake.token_url), **_httpx_options(ASYNC_CONNECTIONS)
    ),
    "Authlib": lambda leeway, fake: AsyncOAuth2Client(
        CLIENT_ID,
        CLIENT_SECRET,
        **_authlib(leeway, fake.token_url),
        **_httpx_options(ASYNC_CONNECTIONS),
    ),
    "httpx-auth": lambda leeway, fake: httpx.AsyncClient(
        auth=httpx_auth.OAuth2ClientCredentials(
            fake.token_url, CLIENT_ID, CLIENT_SECRET, **_leeway_kw("early_expiry", leeway)
        ),
        **_httpx_options(ASYNC_CONNECTIONS),
    ),
}
if not AUTHLIB_ON_HTTPX:
    del HTTPX["Authlib"], ASYNC["Authlib"]
LIBRARIES = ("renewauth", "Authlib", "httpx-auth", "requests-oauth2client", STATIC)
NOTES = (
    "Default leeways: renewauth 30 s (a 1 s token renews at half its life), Authlib 60 s (a "
    "1 s token is always due: it renews on every request), httpx-auth 30 s, "
    "requests-oauth2client 20 s.",
    "Token calls per lifetime count renewals in the steady phase, after a first request.",
    "ReadError and ReadTimeout with httpx sync are httpcore 1.0.9's pool closing a connection "
    "it has handed to a queued request (encode/httpcore#1110); the static column meets them "
    "too. They are no 401s and no auth errors.",
    "successful requests/s counts answers that came before the load's deadline: the median "
    "round, with the slowest and the fastest in brackets; the other rows add the rounds up.",
)


# --- the loads -------------------------------------------------------------------------------


def _in_window(tally: Tally, deadline: float) -> int:
    """Successes so far, if it is not past `deadline` yet (else the count stays frozen)."""
    return tally.ok if time.monotonic() <= deadline else -1


def _threads(client: Any, url: str, seconds: float) -> tuple[Tally, float, int]:
    tallies = [Tally() for _ in range(THREADS)]
    in_window = [0] * THREADS
    deadline = [0.0]

    def release() -> None:
        deadline[0] = time.monotonic() + seconds

    barrier = threading.Barrier(THREADS, action=release)

    def work(index: int) -> None:
        barrier.wait()
        tally = tallies[index]
        while time.monotonic() < deadline[0]:
            tally.send(client.get, url)
            if (ok := _in_window(tally, deadline[0])) >= 0:
                in_window[index] = ok

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + HANG_LIMIT_SECONDS)
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, seconds, sum(in_window)


async def _tasks(client: httpx.AsyncClient, url: str, seconds: float) -> tuple[Tally, float, int]:
    tallies = [Tally() for _ in range(TASKS)]
    in_window = [0] * TASKS
    start = asyncio.Event()
    deadline = [0.0]

    async def work(index: int) -> None:
        await start.wait()
        tally = tallies[index]
        while time.monotonic() < deadline[0]:
            started = time.monotonic()
            try:
                tally.record(await client.get(url), started)
            except Exception as exc:
                tally.record_error(exc, started)
            if (ok := _in_window(tally, deadline[0])) >= 0:
                in_window[index] = ok

    workers = [asyncio.create_task(work(i)) for i in range(TASKS)]
    await asyncio.sleep(0)
    deadline[0] = time.monotonic() + seconds
    start.set()
    await asyncio.wait_for(asyncio.gather(*workers), seconds + HANG_LIMIT_SECONDS)
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, seconds, sum(in_window)


def run_sync(build: Build, leeway: float | None, fake: RemoteFake, seconds: float) -> Run:
    client = build(leeway, fake)
    try:
        client.get(fake.api_url)  # the first token: steady state from here on
        fake.reset_counters()
        tally, elapsed, in_window = _threads(client, fake.api_url, seconds)
    finally:
        client.close()
    return Run(tally, fake.counters(), elapsed, in_window)


def run_async(build: Build, leeway: float | None, fake: RemoteFake, seconds: float) -> Run:
    async def main() -> Run:
        client = build(leeway, fake)
        try:
            await client.get(fake.api_url)
            fake.reset_counters()
            tally, elapsed, in_window = await _tasks(client, fake.api_url, seconds)
        finally:
            await client.aclose()
        return Run(tally, fake.counters(), elapsed, in_window)

    return asyncio.run(main())


# --- the tables ------------------------------------------------------------------------------


def _calls_per_lifetime(library: str, run: Run) -> str:
    if library == STATIC:
        return "—"
    calls = run.counters.token_calls
    return f"{calls / (run.seconds / LIFETIME_SECONDS):.2f} ({calls} in {run.seconds:.1f} s)"


def _met_401(library: str, run: Run) -> str:
    total = run.tally.ok + run.tally.failures.total()
    share = run.counters.api_unauthorized / total if total else 0.0
    return f"{run.counters.api_unauthorized} ({share:.1%})"


ROWS: Sequence[tuple[str, Callable[[str, Rounds], str]]] = (
    ("successful requests/s", lambda library, rounds: rounds.rate_cell()),
    ("requests failed", lambda library, rounds: failures_cell(rounds.total.tally)),
    ("requests that met a 401 at the API", lambda library, rounds: _met_401(library, rounds.total)),
    (
        "token calls per lifetime",
        lambda library, rounds: _calls_per_lifetime(library, rounds.total),
    ),
    ("latency, median / max", lambda library, rounds: latency_cell(rounds.total.tally)),
)


def table(title: str, runs: dict[str, Rounds | str]) -> str:
    columns = [library for library in LIBRARIES if library in runs]
    lines = []
    for label, cell in ROWS:
        line = [label]
        for library in columns:
            rounds = runs[library]
            line.append(rounds if isinstance(rounds, str) else cell(library, rounds))
        lines.append(line)
    return markdown_table([title, *columns], lines)


def _rotated(items: Sequence[str], turn: int) -> list[str]:
    """`items` starting at a different one each round, so no contender always runs first."""
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


def _leeway_name(leeway: float | None) -> str:
    return "each library's default leeway" if leeway is None else f"leeway {leeway} s"


def shape_tables(host: FakeHost, seconds: float, repeat: int) -> list[str]:
    shapes: Sequence[tuple[str, dict[str, Build], Callable[..., Run]]] = (
        (f"requests, {THREADS} threads / {SYNC_CONNECTIONS} connections", REQUESTS, run_sync),
        (f"httpx, {THREADS} threads / {SYNC_CONNECTIONS} connections", HTTPX, run_sync),
        (f"httpx async, {TASKS} tasks / {ASYNC_CONNECTIONS} connections", ASYNC, run_async),
    )
    tables = []
    for leeway in LEEWAYS:
        for title, builds, run in shapes:
            done: dict[str, list[Run]] = {library: [] for library in builds}
            errors: dict[str, str] = {}
            for turn in range(repeat):
                for library in _rotated(list(builds), turn):
                    if library in errors:
                        continue
                    lifetime = LONG_LIFETIME_SECONDS if library == STATIC else LIFETIME_SECONDS
                    try:
                        with host.provider(token_lifetime=lifetime) as fake:
                            done[library].append(run(builds[library], leeway, fake, seconds))
                    except Exception as exc:
                        errors[library] = f"error: {type(exc).__name__}"
            runs: dict[str, Rounds | str] = {
                library: errors.get(library) or Rounds(done[library]) for library in builds
            }
            tables.append(f"#### {title}, {_leeway_name(leeway)}\n\n{table(title, runs)}")
    return tables


# --- the provider classes: Keycloak (rotating refresh) and Van Marcke, async --------------------


def _host_provider(kind: str, **settings: Any) -> AbstractContextManager[RemoteFake]:
    return FakeHostFor(kind, settings)


class FakeHostFor:
    """A vendor fake in its own `FakeHost` child (the host's `kind` setting picks the fake)."""

    def __init__(self, kind: str, settings: dict[str, Any]) -> None:
        self._host = FakeHost(kind=kind, **settings)

    def __enter__(self) -> RemoteFake:
        self._host.__enter__()
        self._provider = self._host.provider(token_lifetime=LIFETIME_SECONDS)
        return self._provider.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._provider.__exit__(*exc_info)
        self._host.__exit__(*exc_info)


def _keycloak(leeway: float | None, fake: RemoteFake) -> httpx.AsyncClient:
    auth = Keycloak.from_token_url(
        fake.token_url,
        client_id="portal-client",
        client_secret="portal-secret",
        username="alice",
        password="alice-password",
        store=renewauth.MemoryStore(),
        **_leeway_kw("leeway", leeway),
    )
    return httpx.AsyncClient(auth=auth, **_httpx_options(ASYNC_CONNECTIONS))


def _vanmarcke(leeway: float | None, fake: RemoteFake) -> httpx.AsyncClient:
    auth = VanMarcke(
        "API-APP1-P123456",
        "service-password",
        client_id="vm-client",
        client_secret="vm-secret",
        api_key="test-api-key",
        token_url=fake.token_url,
        store=renewauth.MemoryStore(),
        **_leeway_kw("leeway", leeway),
    )
    return httpx.AsyncClient(auth=auth, **_httpx_options(ASYNC_CONNECTIONS))


PROVIDERS: Sequence[tuple[str, str, dict[str, Any], Build]] = (
    ("Keycloak, password + rotating refresh", "keycloak", {"rotate_refresh_tokens": True},
     _keycloak),
    ("Van Marcke, service user", "vanmarcke", {}, _vanmarcke),
)  # fmt: skip


def provider_table(seconds: float, repeat: int) -> str:
    lines = []
    for title, kind, own_settings, build in PROVIDERS:
        settings = {**own_settings, "token_delay": TOKEN_DELAY_SECONDS}
        for leeway in LEEWAYS:
            try:
                with _host_provider(kind, **settings) as fake:
                    rounds = Rounds(
                        [run_async(build, leeway, fake, seconds) for _ in range(repeat)]
                    )
            except Exception as exc:
                error = f"error: {type(exc).__name__}"
                lines.append([title, _leeway_name(leeway), *[error] * 5])
                continue
            run = rounds.total
            lines.append(
                [
                    title,
                    _leeway_name(leeway),
                    rounds.rate_cell(),
                    failures_cell(run.tally),
                    _met_401("renewauth", run),
                    _calls_per_lifetime("renewauth", run),
                    str(run.counters.stale_refresh_tokens),
                ]
            )
    headers = ["provider", "leeway", "requests/s", "failed", "met a 401 at the API",
               "token calls per lifetime", "stale refresh tokens"]  # fmt: skip
    return markdown_table(headers, lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s runs, once, instead of 5 s")
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds per cell (3; 1 with --quick)"
    )
    options = parser.parse_args(argv)
    seconds = 2.0 if options.quick else 5.0
    repeat = options.repeat or (1 if options.quick else 3)
    if repeat < 1:
        parser.error("--repeat takes 1 or more")
    packages = ("renewauth", "Authlib", "httpx-auth", "requests-oauth2client", "requests", "httpx")
    print(header_line([f"{name} {version(name)}" for name in packages]))
    print()
    print(
        f"{seconds:.0f} s of load per cell, {repeat} round{'s' if repeat > 1 else ''} of it; "
        "1 s tokens; token endpoint answers in 20 ms."
    )
    print()
    with FakeHost(token_delay=TOKEN_DELAY_SECONDS) as host:
        for text in shape_tables(host, seconds, repeat):
            print(text, flush=True)
            print()
    print("#### renewauth's provider classes, httpx async, 200 tasks / 10 connections")
    print()
    print(provider_table(seconds, repeat))
    print()
    for note in (
        NOTES if AUTHLIB_ON_HTTPX else (*NOTES, f"No Authlib on httpx: {AUTHLIB_ON_HTTPX2}")
    ):
        print(f"- {note}")


if __name__ == "__main__":
    main()
