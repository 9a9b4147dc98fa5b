"""Admission with `httpx.AsyncClient`: on a saturated pool, requests wait before signing.

The gate's decisions are tested on their own (`Gate`, one event loop, no network); the
shapes against the loopback fake with 200 real tasks, the pool's queue read by a trace hook
of the caller's own (which must still be called), and with transports that never call the
hook (a mock), where nothing may wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from renewauth import MemoryStore, OAuth2ClientCredentials, TokenEndpointUnavailable
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._admission import DONE, QUEUED, SENT, Gate

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
TASKS, CONNECTIONS = 200, 10


# --- the gate's decisions -------------------------------------------------------------------


def test_a_gate_lets_everything_in_until_it_sees_a_departure() -> None:
    async def main() -> Gate:
        gate = Gate()
        for _ in range(500):
            await gate.enter(None)  # no wait: the transport may never call the hook
        return gate

    gate = asyncio.run(main())
    assert (gate.queued, gate.sent, gate.seen) == (500, 0, False)


def test_a_saturated_gate_lets_one_in_per_request_that_leaves_the_pool() -> None:
    async def main() -> list[str]:
        gate, log = Gate(), []
        await gate.enter(None)
        stage = gate.depart(QUEUED)  # one request holds a connection
        await gate.enter(None)  # one queued in the pool: as many as are sent
        entered = asyncio.Event()

        async def third() -> None:
            await gate.enter(None)
            log.append("third in")
            entered.set()

        waiting = asyncio.create_task(third())
        await asyncio.sleep(0)
        log.append(f"waiting: queued {gate.queued}, sent {gate.sent}")
        gate.depart(QUEUED)  # the queued one gets a connection: room for one more
        await entered.wait()
        await waiting
        log.append(f"after: queued {gate.queued}, sent {gate.sent}")
        gate.leave(stage)
        return log

    assert asyncio.run(main()) == [
        "waiting: queued 1, sent 1",
        "third in",
        "after: queued 1, sent 2",
    ]


def test_a_cancelled_waiter_leaves_no_count_behind() -> None:
    async def main() -> Gate:
        gate = Gate()
        await gate.enter(None)
        gate.depart(QUEUED)
        await gate.enter(None)
        waiters = [asyncio.create_task(gate.enter(None)) for _ in range(50)]
        await asyncio.sleep(0)
        for task in waiters[::2]:
            task.cancel()
        gate.leave(SENT)  # the sent request is answered
        gate.depart(QUEUED)  # the queued one leaves the pool: one waiter gets in
        await asyncio.sleep(0)
        admitted = [task for task in waiters if task.done() and not task.cancelled()]
        assert len(admitted) == 1
        admitted[0].cancel()  # already let in: cancelled before it ran
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        gate.leave(SENT)
        return gate

    gate = asyncio.run(main())
    assert (gate.queued, gate.sent) == (1, 0)  # the one let in and counted; no waiter left
    assert not gate._waiters


def test_a_request_waits_no_longer_than_its_pool_timeout() -> None:
    async def main() -> Gate:
        gate = Gate()
        await gate.enter(None)
        gate.depart(QUEUED)
        await gate.enter(None)
        await gate.enter(0.01)  # no room, and none coming: it goes to the pool anyway
        return gate

    gate = asyncio.run(main())
    assert (gate.queued, gate.sent, len(gate._waiters)) == (2, 1, 0)


def test_stages_move_once() -> None:
    gate = Gate()
    gate.queued = 1
    stage = gate.depart(QUEUED)
    assert stage == SENT
    assert (gate.queued, gate.sent) == (0, 1)
    assert gate.depart(stage) == SENT
    assert gate.sent == 1
    stage = gate.again(stage)  # a resend after a 401
    assert stage == QUEUED
    assert (gate.queued, gate.sent) == (1, 0)
    stage = gate.leave(stage)
    assert stage == DONE
    assert (gate.queued, gate.sent) == (0, 0)
    assert gate.leave(stage) == DONE
    assert (gate.queued, gate.sent) == (0, 0)


# --- real pools ------------------------------------------------------------------------------


@pytest.fixture
def live_fake() -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=3600.0) as provider:
        yield provider


def _auth(fake: FakeOAuth2Provider) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore())


def _pool(client: httpx.AsyncClient) -> Any:
    return client._transport._pool  # type: ignore[attr-defined]


def test_a_saturated_async_pool_keeps_a_short_queue_and_the_callers_trace(
    live_fake: FakeOAuth2Provider,
) -> None:
    auth = _auth(live_fake)
    seen: list[int] = []

    async def main() -> tuple[list[int], Gate]:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as client:

            async def trace(event: str, info: Mapping[str, Any]) -> None:
                if event == "http11.send_request_headers.started":
                    seen.append(len(_pool(client)._requests))  # in the pool: queued + sent

            async def work() -> list[int]:
                return [
                    (await client.get(live_fake.api_url, extensions={"trace": trace})).status_code
                    for _ in range(5)
                ]

            statuses = [
                s for mine in await asyncio.gather(*[work() for _ in range(TASKS)]) for s in mine
            ]
            return statuses, auth._gate()

    statuses, gate = asyncio.run(main())
    assert statuses == [200] * TASKS * 5
    assert len(seen) == TASKS * 5  # the caller's own trace ran for every request
    # The first wave enters before any departure is seen; after it, the pool holds about
    # twice the connections (sent + queued), where without the gate it holds all 200.
    steady = seen[2 * TASKS :]
    assert max(steady) <= 3 * CONNECTIONS
    assert (gate.queued, gate.sent, len(gate._waiters)) == (0, 0, 0)  # nothing leaked


def test_cancelled_requests_on_a_saturated_pool_leak_no_admission(
    live_fake: FakeOAuth2Provider,
) -> None:
    auth = _auth(live_fake)
    live_fake.token_delay = 0.0

    async def main() -> tuple[int, Gate]:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as client:
            await client.get(live_fake.api_url)
            started = asyncio.Event()
            count = 0

            async def work() -> None:
                nonlocal count
                while True:
                    await client.get(live_fake.api_url)
                    count += 1
                    if count >= 2 * TASKS:
                        started.set()

            tasks = [asyncio.create_task(work()) for _ in range(TASKS)]
            await started.wait()  # saturated, requests waiting at the gate and in the pool
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            gate = auth._gate()
            after = [(await client.get(live_fake.api_url)).status_code for _ in range(CONNECTIONS)]
            return after.count(200), gate

    answered, gate = asyncio.run(main())
    assert answered == CONNECTIONS
    assert (gate.queued, gate.sent, len(gate._waiters)) == (0, 0, 0)


def test_a_transport_without_the_hook_never_waits_at_the_gate(
    live_fake: FakeOAuth2Provider,
) -> None:
    auth = _auth(live_fake)

    async def main() -> tuple[int, Gate]:
        gate_open = asyncio.Event()
        inside = 0
        most = 0

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            if most == TASKS:
                gate_open.set()
            await gate_open.wait()  # answers only once all 200 are inside at once
            inside -= 1
            return httpx.Response(200)

        transport = httpx.MockTransport(handler)
        timeout = httpx.Timeout(30, pool=None)  # a request that waited would wait for ever
        async with httpx.AsyncClient(auth=auth, transport=transport, timeout=timeout) as client:
            async with asyncio.timeout(20):  # a bound on the test, not a timing
                await asyncio.gather(*[client.get("https://api.example/") for _ in range(TASKS)])
            return most, auth._gate()

    most, gate = asyncio.run(main())
    assert most == TASKS
    assert (gate.queued, gate.sent, gate.seen) == (0, 0, False)


def test_a_failed_token_call_before_signing_leaves_no_admission(
    live_fake: FakeOAuth2Provider,
) -> None:
    auth = OAuth2ClientCredentials(
        live_fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), retries=0
    )
    live_fake.fail_token_requests(503, times=-1)

    async def main() -> Gate:
        async with httpx.AsyncClient(auth=auth) as client:
            for _ in range(3):
                with pytest.raises(TokenEndpointUnavailable):
                    await client.get(live_fake.api_url)
            return auth._gate()

    gate = asyncio.run(main())
    assert (gate.queued, gate.sent) == (0, 0)


def test_requests_whose_trace_is_replaced_open_the_gate_for_good(
    live_fake: FakeOAuth2Provider,
) -> None:
    """A request hook that replaces the `trace` extension hides some departures: the counts
    then say nothing about the pool, and the gate must not throttle on them."""
    auth = _auth(live_fake)
    replaced = 0

    async def replace_trace(request: httpx.Request) -> None:
        nonlocal replaced
        replaced += 1
        if replaced % 2:

            async def other(event: str, info: Mapping[str, Any]) -> None:
                return None

            request.extensions["trace"] = other

    async def main() -> tuple[list[int], Gate]:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        timeout = httpx.Timeout(30, pool=None)
        async with httpx.AsyncClient(
            auth=auth, limits=limits, timeout=timeout, event_hooks={"request": [replace_trace]}
        ) as client:

            async def work() -> list[int]:
                return [(await client.get(live_fake.api_url)).status_code for _ in range(5)]

            async with asyncio.timeout(60):  # a bound on the test, not a timing
                done = await asyncio.gather(*[work() for _ in range(TASKS)])
            return [status for mine in done for status in mine], auth._gate()

    statuses, gate = asyncio.run(main())
    assert statuses == [200] * TASKS * 5
    assert gate.blind
    assert (gate.queued, gate.sent, len(gate._waiters)) == (0, 0, 0)
