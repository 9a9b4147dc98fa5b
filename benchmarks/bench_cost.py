"""Cost per request with a cached token, in CPU instructions and in time, against a static header.

Run ``python benchmarks/bench_cost.py`` (about 10 minutes; ``--quick`` measures renewauth and the
static baseline only). It needs ``valgrind`` on the PATH.

Wall time on a shared machine swings by tens of percent between runs; instruction counts do
not. Each client is run twice under ``valgrind --tool=callgrind``, once with N and once with 5N
requests through a canned transport (answered in memory, no socket), after the same warm-up;
the difference divided by 4N is the cost of one request, start-up and warm-up cancelled out.
The same clients are also timed without valgrind (median of interleaved batches).

Every contender is built as a user would build it; renewauth, httpx-auth and
requests-oauth2client fetch their one token from a fake token endpoint in this process before
the counted requests, Authlib and the static baseline are handed a long-lived token.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import httpx
import requests
from _common import (
    CANNED_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    LONG_LIFETIME_SECONDS,
    FakeHost,
    callgrind_instructions,
    check_signed,
    header_line,
    markdown_table,
)
from bench_core import (
    ASYNC_CONTENDERS,
    AUTHLIB_ON_HTTPX,
    AUTHLIB_ON_HTTPX2,
    HTTPX_CONTENDERS,
    REQUESTS_CONTENDERS,
    STATIC,
    Contender,
    Setup,
    _pooled,
)

WARM_UP = 50
N = 100  # requests in the short run; the long run sends 5N
TIMED_BATCH = 1_000
TIMED_REPETITIONS = 15


def _requests_oauth2client(setup: Setup) -> requests.Session:
    from requests_oauth2client import OAuth2Client, OAuth2ClientCredentialsAuth

    # testing=True: it refuses a plain-http token endpoint otherwise (the fake is on loopback).
    client = OAuth2Client(token_endpoint=setup.token_url, client_id=CLIENT_ID,
                          client_secret=CLIENT_SECRET, testing=True)  # fmt: skip
    session = requests.Session()
    session.auth = OAuth2ClientCredentialsAuth(client, leeway=int(setup.leeway))
    return _pooled(session, setup)


CLIENTS: dict[str, Sequence[Contender[Any]]] = {
    "requests": (*REQUESTS_CONTENDERS, Contender("requests-oauth2client", _requests_oauth2client)),
    "httpx": HTTPX_CONTENDERS,
    "httpx async": ASYNC_CONTENDERS,
}
LIBRARIES = (STATIC, "renewauth", "Authlib", "httpx-auth", "requests-oauth2client")


def _setup(token_url: str, token: str) -> Setup:
    return Setup(
        token_url=token_url,
        leeway=30.0,
        static_token=token,
        authlib_token={
            "access_token": token,
            "token_type": "Bearer",
            "expires_at": int(time.time() + LONG_LIFETIME_SECONDS),
        },
        canned=True,
    )


def _contender(client: str, library: str) -> Contender[Any]:
    for contender in CLIENTS[client]:
        if contender.library == library:
            return contender
    raise KeyError(library)


def _send_sync(client: Any, count: int) -> Any:
    get = client.get
    response = None
    for _ in range(count):
        response = get(CANNED_URL)
    return response


async def _send_async(client: httpx.AsyncClient, count: int) -> httpx.Response | None:
    get = client.get
    response = None
    for _ in range(count):
        response = await get(CANNED_URL)
    return response


def _settle() -> None:
    # Everything alive after the warm-up (modules, clients, caches) is moved out of the
    # collector's sight: otherwise a full collection, which walks the whole heap, falls into
    # one run and not the other and swamps the per-request difference.
    gc.collect()
    gc.freeze()


def worker(client: str, library: str, count: int, token_url: str, token: str) -> None:
    """Child process (under valgrind): warm up, then send `count` requests."""
    build = _contender(client, library).build
    setup = _setup(token_url, token)
    if client == "httpx async":

        async def main() -> None:
            async with build(setup) as http:
                check_signed(await _send_async(http, WARM_UP))
                _settle()
                await _send_async(http, count)

        asyncio.run(main())
    else:
        http = build(setup)
        check_signed(_send_sync(http, WARM_UP))
        _settle()
        _send_sync(http, count)
        http.close()


def _instructions(client: str, library: str, count: int, token_url: str, token: str) -> int:
    arguments = ["--worker", client, library, str(count), token_url, token]
    return callgrind_instructions(__file__, arguments, f"{library} on {client}")


def instructions_per_request(client: str, library: str, token_url: str, token: str) -> float:
    """(instructions for 5N requests − for N) / 4N."""
    short = _instructions(client, library, N, token_url, token)
    long = _instructions(client, library, 5 * N, token_url, token)
    return (long - short) / (4 * N)


def seconds_per_request(
    client: str, libraries: Sequence[str], token_url: str, token: str
) -> dict[str, list[float]]:
    """Interleaved timed batches of each contender, without valgrind."""
    setup = _setup(token_url, token)
    seconds: dict[str, list[float]] = {library: [] for library in libraries}
    if client == "httpx async":

        async def main() -> None:
            clients = {library: _contender(client, library).build(setup) for library in libraries}
            for http in clients.values():
                check_signed(await _send_async(http, WARM_UP))
            for _ in range(TIMED_REPETITIONS):
                for library, http in clients.items():
                    started = time.perf_counter()
                    await _send_async(http, TIMED_BATCH)
                    seconds[library].append((time.perf_counter() - started) / TIMED_BATCH)
            for http in clients.values():
                await http.aclose()

        asyncio.run(main())
        return seconds
    sync_clients = {library: _contender(client, library).build(setup) for library in libraries}
    for http in sync_clients.values():
        check_signed(_send_sync(http, WARM_UP))
    for _ in range(TIMED_REPETITIONS):
        for library, http in sync_clients.items():
            started = time.perf_counter()
            _send_sync(http, TIMED_BATCH)
            seconds[library].append((time.perf_counter() - started) / TIMED_BATCH)
    for http in sync_clients.values():
        http.close()
    return seconds


def _cell(value: float, baseline: float, unit: Callable[[float], str]) -> str:
    return unit(value) if value is baseline else f"{unit(value)} ({value / baseline:.3f}×)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="static and renewauth only")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        client, library, count, token_url, token = options.worker
        worker(client, library, int(count), token_url, token)
        return
    libraries = (STATIC, "renewauth") if options.quick else LIBRARIES
    packages = ["renewauth", "requests", "httpx"]
    if not options.quick:
        packages += ["Authlib", "httpx-auth", "requests-oauth2client"]
    print(header_line([f"{name} {version(name)}" for name in packages]))
    print()
    with FakeHost() as host, host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
        token = fake.fetch_access_token()
        counted: list[list[str]] = []
        timed: list[list[str]] = []
        for client, contenders in CLIENTS.items():
            present = [c.library for c in contenders if c.library in libraries]
            per_request = {
                library: instructions_per_request(client, library, fake.token_url, token)
                for library in present
            }
            seconds = seconds_per_request(client, present, fake.token_url, token)
            medians = {library: statistics.median(values) for library, values in seconds.items()}
            base_instructions, base_seconds = per_request[STATIC], medians[STATIC]
            counted.append(
                [client]
                + [
                    _cell(per_request[library], base_instructions, lambda v: f"{v:,.0f}")
                    if library in per_request
                    else "n/a"
                    for library in libraries
                ]
            )
            timed.append(
                [client]
                + [
                    _cell(medians[library], base_seconds, lambda v: f"{v * 1e6:.1f} µs")
                    if library in medians
                    else "n/a"
                    for library in libraries
                ]
            )
            print(f"measured {client}", file=sys.stderr, flush=True)
    print(f"### (a) Instructions per request (callgrind: 5N − N requests, N = {N}), "
          "ratio to static")  # fmt: skip
    print()
    print(markdown_table(["client", *libraries], counted))
    print()
    print(f"### (b) Time per request (median of {TIMED_REPETITIONS} interleaved batches of "
          f"{TIMED_BATCH}), ratio to static")  # fmt: skip
    print()
    print(markdown_table(["client", *libraries], timed))
    print()
    print("n/a: httpx-auth is an httpx.Auth only; requests-oauth2client a requests AuthBase only.")
    if not AUTHLIB_ON_HTTPX:
        print()
        print(f"n/a for Authlib on httpx: {AUTHLIB_ON_HTTPX2}")


if __name__ == "__main__":
    main()
