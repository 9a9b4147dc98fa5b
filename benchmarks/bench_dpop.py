"""What DPoP (RFC 9449) adds to each request: instructions (callgrind) and time, cached token.

Run ``python benchmarks/bench_dpop.py`` (a few minutes; needs ``valgrind`` and the
``renewauth[jwt]`` extra). The same renewauth client is built twice, with a Bearer token and
with ``dpop=True`` and a DPoP token, both put in its store beforehand (no token endpoint is
called), and sends requests through the canned transports of ``bench_core`` (answered in
memory, no socket). As in ``bench_cost.py``, each is run under ``valgrind --tool=callgrind``
with N and 5N requests after the same warm-up; the difference over 4N is one request's cost.
With DPoP every request carries a fresh ES256 proof (``htm``, ``htu``, ``iat``, ``jti``,
``ath``): one P-256 signature and two small JSON encodings per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import httpx
import requests
from _common import CANNED_URL, callgrind_instructions, header_line, markdown_table
from bench_core import Setup, _async_options, _httpx_options, _pooled

import renewauth

WARM_UP = 50
N = 100
TIMED_BATCH = 500
TIMED_REPETITIONS = 9
CLIENTS = ("requests", "httpx", "httpx async")
MODES = ("Bearer", "DPoP")
_SETUP = Setup(
    token_url="https://idp.example.com/token",
    leeway=30.0,
    static_token="",
    authlib_token={},
    canned=True,
)


def _auth(mode: str) -> renewauth.OAuth2ClientCredentials:
    auth = renewauth.OAuth2ClientCredentials(
        _SETUP.token_url,
        "bench-client",
        "bench-secret",
        store=renewauth.MemoryStore(),
        dpop=mode == "DPoP",
    )
    token = renewauth.Token(access_token="a" * 40, token_type=mode, expires_at=time.time() + 86_400)
    auth._manager.store.set(auth._manager.key, token)  # cached: no token call is made
    return auth


def _build(client: str, mode: str) -> Any:
    if client == "requests":
        session = requests.Session()
        session.auth = _auth(mode)
        return _pooled(session, _SETUP)
    if client == "httpx":
        return httpx.Client(auth=_auth(mode), **_httpx_options(_SETUP))
    return httpx.AsyncClient(auth=_auth(mode), **_async_options(_SETUP))


def _check(response: Any, mode: str) -> None:
    headers = response.request.headers
    if response.status_code != 200 or not headers.get("Authorization", "").startswith(mode):
        raise RuntimeError(f"warm-up answered {response.status_code}")
    if (mode == "DPoP") != ("DPoP" in headers):
        raise RuntimeError("the DPoP header is missing or unexpected")


def _send_sync(http: Any, count: int) -> Any:
    response = None
    for _ in range(count):
        response = http.get(CANNED_URL)
    return response


async def _send_async(http: httpx.AsyncClient, count: int) -> Any:
    response = None
    for _ in range(count):
        response = await http.get(CANNED_URL)
    return response


def worker(client: str, mode: str, count: int) -> None:
    """Child process (under valgrind): warm up, then send `count` requests."""
    if client == "httpx async":

        async def main() -> None:
            async with _build(client, mode) as http:
                _check(await _send_async(http, WARM_UP), mode)
                gc.collect()
                gc.freeze()
                await _send_async(http, count)

        asyncio.run(main())
        return
    http = _build(client, mode)
    _check(_send_sync(http, WARM_UP), mode)
    gc.collect()
    gc.freeze()
    _send_sync(http, count)
    http.close()


def _instructions(client: str, mode: str, count: int) -> int:
    arguments = ["--worker", client, mode, str(count)]
    return callgrind_instructions(__file__, arguments, f"{mode} on {client}")


def _per_request(client: str, mode: str) -> float:
    return (_instructions(client, mode, 5 * N) - _instructions(client, mode, N)) / (4 * N)


def _seconds(client: str) -> dict[str, float]:
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    if client == "httpx async":

        async def main() -> None:
            clients = {mode: _build(client, mode) for mode in MODES}
            for mode, http in clients.items():
                _check(await _send_async(http, WARM_UP), mode)
            for _ in range(TIMED_REPETITIONS):
                for mode, http in clients.items():
                    started = time.perf_counter()
                    await _send_async(http, TIMED_BATCH)
                    seconds[mode].append((time.perf_counter() - started) / TIMED_BATCH)
            for http in clients.values():
                await http.aclose()

        asyncio.run(main())
    else:
        clients = {mode: _build(client, mode) for mode in MODES}
        for mode, http in clients.items():
            _check(_send_sync(http, WARM_UP), mode)
        for _ in range(TIMED_REPETITIONS):
            for mode, http in clients.items():
                started = time.perf_counter()
                _send_sync(http, TIMED_BATCH)
                seconds[mode].append((time.perf_counter() - started) / TIMED_BATCH)
        for http in clients.values():
            http.close()
    return {mode: statistics.median(values) for mode, values in seconds.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        client, mode, count = options.worker
        worker(client, mode, int(count))
        return
    packages = ["renewauth", "requests", "httpx", "PyJWT", "cryptography"]
    print(header_line([f"{name} {version(name)}" for name in packages]))
    print()
    rows = []
    for client in CLIENTS:
        counted = {mode: _per_request(client, mode) for mode in MODES}
        timed = _seconds(client)
        rows.append(
            [
                client,
                f"{counted['Bearer']:,.0f}",
                f"{counted['DPoP']:,.0f}",
                f"+{counted['DPoP'] - counted['Bearer']:,.0f}",
                f"{timed['Bearer'] * 1e6:.1f} µs",
                f"{timed['DPoP'] * 1e6:.1f} µs",
                f"+{(timed['DPoP'] - timed['Bearer']) * 1e6:.1f} µs",
            ]
        )
        print(f"measured {client}", file=sys.stderr, flush=True)
    print(
        f"### DPoP per request, cached token (callgrind: 5N − N requests, N = {N}; "
        f"time: median of {TIMED_REPETITIONS} batches of {TIMED_BATCH})"
    )
    print()
    print(
        markdown_table(
            [
                "client",
                "Bearer instr.",
                "DPoP instr.",
                "DPoP adds",
                "Bearer time",
                "DPoP time",
                "DPoP adds",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
