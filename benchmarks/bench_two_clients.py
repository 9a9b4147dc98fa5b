"""Two clients share one auth object, one of them saturated: does the idle one wait for it?

Run ``python benchmarks/bench_two_clients.py`` (about 40 s; ``--quick``: fewer requests).
Client A (`httpx.AsyncClient`, one connection) keeps 8 requests in flight, each holding its
connection for 0.2 s (a slow API: a `trace` hook of the caller's own waits when the headers
go), so 7 always queue. Client B, on the same event loop and otherwise idle, sends requests
one after another meanwhile, 50 ms apart. Both clients use one auth object: renewauth's
`OAuth2ClientCredentials` given to both (`auth=`), the same through `renewauth.patch()` (the
clients get no auth; one route's object signs every client, as in a retrofitted program), or
a static `httpx.Auth` that sets a fixed header (the baseline). httpx's default timeouts apply
(5 s, the pool's included). The fake runs in a child process. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    LONG_LIFETIME_SECONDS,
    FakeHost,
    RemoteFake,
    Tally,
    failures_cell,
    header_line,
    latency_cell,
    markdown_table,
)
from bench_core import STATIC, StaticHttpxAuth

import renewauth

A_REQUESTS = 8  # in flight on client A's one connection: one holds it, seven queue
HOLD_SECONDS = 0.2  # how long each of A's requests holds the connection
B_REQUESTS, B_REQUESTS_QUICK = 40, 10
B_PAUSE_SECONDS = 0.05  # between two of B's requests, so that they spread over A's holds
ROUNDS, ROUNDS_QUICK = 3, 1


@dataclass(frozen=True, slots=True)
class Wiring:
    """How one column gives its auth object to both clients: `options` for each client, and
    what to undo after the run."""

    options: Mapping[str, Any]
    undo: Callable[[], None] = lambda: None


def _renewauth(fake: RemoteFake) -> renewauth.OAuth2ClientCredentials:
    return renewauth.OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=renewauth.MemoryStore()
    )


def _given(fake: RemoteFake) -> Wiring:
    return Wiring({"auth": _renewauth(fake)})


def _patched(fake: RemoteFake) -> Wiring:
    renewauth.patch({fake.api_url: _renewauth(fake)})
    return Wiring({}, renewauth.unpatch)


def _static(fake: RemoteFake) -> Wiring:
    return Wiring({"auth": StaticHttpxAuth(fake.fetch_access_token())})


COLUMNS: Mapping[str, Callable[[RemoteFake], Wiring]] = {
    "renewauth (auth=)": _given,
    "renewauth (patch())": _patched,
    STATIC: _static,
}


@dataclass(slots=True)
class Run:
    """What the idle client B and the saturated client A did in one or more rounds: A's
    answers that came while B was sending (`in_window`, over `seconds`) count for its rate."""

    idle: Tally
    saturated: Tally
    seconds: float = 0.0
    in_window: int = 0

    def add(self, other: Run) -> None:
        self.idle.add(other.idle)
        self.saturated.add(other.saturated)
        self.seconds += other.seconds
        self.in_window += other.in_window


async def _one_round(options: Mapping[str, Any], url: str, b_requests: int) -> Run:
    run = Run(Tally(), Tally())
    done, b_sends = asyncio.Event(), asyncio.Event()
    a_holds = asyncio.Event()

    async def slow_api(event: str, info: Mapping[str, Any]) -> None:
        if event == "http11.send_request_headers.started":
            a_holds.set()
            await asyncio.sleep(HOLD_SECONDS)

    async with (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1), **options) as client_a,
        httpx.AsyncClient(**options) as client_b,
    ):
        await client_a.get(url)  # the token, and each client's connection
        await client_b.get(url)

        async def keep_a_saturated() -> None:
            while not done.is_set():
                started = time.monotonic()
                try:
                    response = await client_a.get(url, extensions={"trace": slow_api})
                    run.saturated.record(response, started)
                    if b_sends.is_set() and response.status_code == 200:
                        run.in_window += 1
                except Exception as exc:
                    run.saturated.record_error(exc, started)

        saturating = [asyncio.create_task(keep_a_saturated()) for _ in range(A_REQUESTS)]
        await a_holds.wait()
        b_sends.set()
        started_all = time.monotonic()
        for _ in range(b_requests):
            started = time.monotonic()
            try:
                run.idle.record(await client_b.get(url), started)
            except Exception as exc:
                run.idle.record_error(exc, started)
            await asyncio.sleep(B_PAUSE_SECONDS)
        run.seconds = time.monotonic() - started_all
        b_sends.clear()
        done.set()
        await asyncio.gather(*saturating)
    return run


def measure(fake: RemoteFake, wire: Callable[[RemoteFake], Wiring], b_requests: int) -> Run:
    wiring = wire(fake)
    try:
        return asyncio.run(_one_round(wiring.options, fake.api_url, b_requests))
    finally:
        wiring.undo()


def _rate(run: Run) -> str:
    return f"{run.in_window / run.seconds:.1f}" if run.seconds else "—"


ROWS: Sequence[tuple[str, Callable[[Run], str]]] = (
    ("idle client B: latency, median / max", lambda run: latency_cell(run.idle)),
    ("idle client B: requests failed", lambda run: failures_cell(run.idle)),
    ("saturated client A: successful requests/s while B sent", _rate),
    ("saturated client A: requests failed", lambda run: failures_cell(run.saturated)),
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round")
    options = parser.parse_args(argv)
    b_requests = B_REQUESTS_QUICK if options.quick else B_REQUESTS
    rounds = ROUNDS_QUICK if options.quick else ROUNDS
    print(header_line([f"{name} {version(name)}" for name in ("renewauth", "httpx")]))
    print()
    print(
        f"Client A: 1 connection, {A_REQUESTS} requests in flight, each holding it "
        f"{HOLD_SECONDS:.1f} s. Client B: {b_requests} requests one after another, "
        f"{B_PAUSE_SECONDS * 1000:.0f} ms apart, {rounds} round{'s' if rounds > 1 else ''}; "
        "one auth object for both."
    )
    print()
    runs = {column: Run(Tally(), Tally()) for column in COLUMNS}
    with FakeHost() as host:
        for turn in range(rounds):
            names = list(COLUMNS)
            names = names[turn % len(names) :] + names[: turn % len(names)]
            for column in names:
                with host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as fake:
                    runs[column].add(measure(fake, COLUMNS[column], b_requests))
    lines = [[label, *(cell(runs[column]) for column in COLUMNS)] for label, cell in ROWS]
    print("#### Two clients, one auth object: the idle client beside a saturated one")
    print()
    print(markdown_table(["httpx async, two clients", *COLUMNS], lines))
    print()
    print(
        "- latency: from B's call to its answer, over all rounds. A request held at a gate "
        "for A's pool waits up to its own pool timeout (5 s), then queues in its pool."
    )
    print("- A's requests/s: its answers while B sent; one per hold of its one connection.")


if __name__ == "__main__":
    main()
