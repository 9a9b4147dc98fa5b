"""Admission with `httpx.AsyncClient`: on a saturated pool, requests wait before signing.

The gate's decisions are tested on their own (`Gate`, one event loop, no network); the
shapes against the loopback fake with 200 real tasks, the pool's queue read by a trace hook
of the caller's own (which must still be called), and with transports that never call the
hook (a mock), where nothing may wait. Two clients share one auth object (given as `auth=`,
or through `renewauth.patch()`): a request waits only for its own client's pool.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import pickle
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import httpx2
import pytest

import renewauth
from renewauth import MemoryStore, OAuth2ClientCredentials, TokenEndpointUnavailable
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._admission import DONE, QUEUED, SENT, Gate, client_pool, pool_gate

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


# --- a gate per pool -------------------------------------------------------------------------


def test_a_pool_gate_counts_in_its_loop_gate_and_holds_only_its_own_requests() -> None:
    async def main() -> list[tuple[int, int, int]]:
        loop_gate = Gate()
        pools: weakref.WeakKeyDictionary[object, Gate] = weakref.WeakKeyDictionary()
        first, second = httpx.AsyncHTTPTransport(), httpx.AsyncHTTPTransport()
        saturated = pool_gate(pools, first, loop_gate)
        await saturated.enter(None)
        stage = saturated.depart(QUEUED)  # the first pool's one connection is taken
        await saturated.enter(None)  # and one request queues behind it
        held = asyncio.create_task(saturated.enter(None))
        await asyncio.sleep(0)
        idle = pool_gate(pools, second, loop_gate)
        await idle.enter(None)  # the other pool's request: in at once
        counts = [(gate.queued, gate.sent, gate.waiting) for gate in (loop_gate, saturated, idle)]
        assert pool_gate(pools, first, loop_gate) is saturated
        saturated.leave(stage)  # the first pool's request is answered,
        saturated.depart(QUEUED)  # the queued one takes the connection: the one held enters
        await held
        return [*counts, (loop_gate.queued, loop_gate.sent, loop_gate.waiting)]

    assert asyncio.run(main()) == [(2, 1, 1), (1, 1, 1), (1, 0, 0), (2, 1, 0)]


def test_a_pool_gate_without_departures_of_its_own_opens_alone_when_answered_unseen() -> None:
    """A pool gate starts as its loop gate is (departures seen); a transport that never calls
    the hook (a mock) beside one that does is held until its first answer, then opened, and
    the loop gate keeps holding for the other pools."""

    async def main() -> tuple[bool, bool, bool, bool]:
        loop_gate = Gate()
        await loop_gate.enter(None)
        loop_gate.depart(QUEUED)  # another pool's request: the loop has seen the hook
        pools: weakref.WeakKeyDictionary[object, Gate] = weakref.WeakKeyDictionary()
        gate = pool_gate(pools, httpx.MockTransport(lambda request: httpx.Response(200)), loop_gate)
        await gate.enter(None)
        held = asyncio.create_task(gate.enter(None))
        await asyncio.sleep(0)
        was_held = not held.done()
        gate.answered_unseen()  # the mock answered the first: no departure was ever seen
        await held
        return was_held, gate.blind, loop_gate.blind, loop_gate.seen

    assert asyncio.run(main()) == (True, True, False, True)


def test_a_pool_that_cannot_be_found_gets_a_gate_that_never_holds() -> None:
    async def main() -> tuple[bool, int]:
        loop_gate = Gate()
        pools: weakref.WeakKeyDictionary[object, Gate] = weakref.WeakKeyDictionary()
        for unknown in (None, 42):  # no client found; a transport that takes no weak reference
            gate = pool_gate(pools, unknown, loop_gate)
            for _ in range(3):
                await gate.enter(None)
                gate.depart(QUEUED)
            assert gate.seen is False
        return loop_gate.seen, loop_gate.queued + loop_gate.sent

    assert asyncio.run(main()) == (True, 6)  # the loop gate still counts them


def test_a_pool_gate_keeps_neither_its_transport_nor_its_loop_alive() -> None:
    """Gates are kept weakly by transport, and reach no loop: dropping a client frees its
    transport at once (by reference count, so through no cycle) and takes its gate along."""
    pools: weakref.WeakKeyDictionary[object, Gate] = weakref.WeakKeyDictionary()
    transport = httpx.AsyncHTTPTransport()
    loop = asyncio.new_event_loop()
    try:
        gate = loop.run_until_complete(_entered(pools, transport))
    finally:
        loop.close()
    gone, loop_gone = weakref.ref(transport), weakref.ref(loop)
    del transport, loop
    assert gone() is None
    assert loop_gone() is None
    assert len(pools) == 0
    assert gate.parent is not None  # the loop gate lives on with the requests that hold it


async def _entered(pools: weakref.WeakKeyDictionary[object, Gate], transport: object) -> Gate:
    gate = pool_gate(pools, transport, Gate())
    await gate.enter(None)
    gate.leave(QUEUED)
    return gate


def _flow() -> object | None:
    """Stands for an auth flow: its caller (`sys._getframe(1)`) drives it."""
    return client_pool(sys._getframe(1), "https://api.example/")


def _wrapper(levels: int) -> object | None:
    return _flow() if levels == 1 else _wrapper(levels - 1)


class _Client:
    """Stands for an `httpx.AsyncClient`: what `client_pool` reads of it."""

    def __init__(self, transport_for_url: Any) -> None:
        self._transport_for_url = transport_for_url

    def _send_handling_auth(self, wrappers: int) -> object | None:
        return _wrapper(wrappers) if wrappers else _flow()


@pytest.mark.parametrize(("wrappers", "found"), [(0, True), (1, True), (2, True), (3, False)])
def test_the_pool_is_found_through_up_to_two_wrappers_of_the_flow(
    wrappers: int, found: bool
) -> None:
    """httpx drives the flow itself; renewauth's retrofit wraps it once (a fork's `Auth`, a
    resend after the program's own token was rejected), an auth of the program's once more."""
    client = _Client(lambda url: f"the pool for {url}")
    expected = "the pool for https://api.example/" if found else None
    assert client._send_handling_auth(wrappers) == expected


def test_a_client_whose_internals_differ_has_no_pool() -> None:
    def fails(url: object) -> object:
        raise TypeError("another signature")

    assert _Client(fails)._send_handling_auth(0) is None
    assert _Client("not callable")._send_handling_auth(0) is None
    assert _flow() is None  # driven by a test function: no client at all


A_REQUESTS = 8  # on a client with one connection: one holds it, seven queue


@pytest.mark.parametrize("wiring", ["auth=", "httpx2 auth=", "patch()", "patch() with a fork"])
def test_a_request_never_waits_at_the_gate_for_another_clients_saturated_pool(
    wiring: str, live_fake: FakeOAuth2Provider
) -> None:
    """Client A (one connection, eight requests held) and client B share one auth object:
    B's request is signed and answered while all of A's are still held. Nothing times out
    on the way (`pool=None`): a request held at the gate for A's pool would wait for ever,
    and the test's bound would fail it."""
    auth = _auth(live_fake)
    url = live_fake.api_url
    module: Any = httpx2 if wiring == "httpx2 auth=" else httpx
    options: dict[str, Any] = {"auth": auth}
    if not wiring.endswith("auth="):
        if wiring == "patch() with a fork":
            module = importlib.import_module("httpx2")
        renewauth.patch({url: auth})
        options = {}
    try:
        assert module.get(url, **options).status_code == 200  # the token, on no event loop
        loop_counts, status, still_held, statuses = asyncio.run(
            _beside_a_saturated_client(module, options, auth, url)
        )
    finally:
        renewauth.unpatch()
    assert status == 200
    assert still_held == A_REQUESTS  # B was answered while every request of A was held
    assert statuses == [200] * A_REQUESTS
    if module is httpx2:
        # httpcore2's pool stops its queue walk early: its requests queue there, no gate.
        assert loop_counts is None
        assert not {"_gates", "_pool_gates"} & set(vars(auth))
        return
    assert loop_counts == (A_REQUESTS - 1, 1)  # the loop's gate has no room: A saturates it
    gc.collect()
    assert len(auth.__dict__["_pool_gates"]) == 0  # the clients are gone, their gates too
    copied = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own bytes
    assert not {"_gates", "_last_gate", "_pool_gates"} & set(vars(copied))  # left behind


async def _beside_a_saturated_client(
    module: Any, options: dict[str, Any], auth: OAuth2ClientCredentials, url: str
) -> tuple[tuple[int, int] | None, int, int, list[int]]:
    """Client A's requests held at their departure, client B's one request: the loop gate's
    counts then (`None` when the clients' requests made no gate), B's answer, A's requests
    still held when B was answered, and A's answers."""
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(event: str, info: Mapping[str, Any]) -> None:
        if event == "http11.send_request_headers.started":  # A's request has the connection
            held.set()
            await release.wait()

    timeout = module.Timeout(30, pool=None)
    one_connection = module.Limits(max_connections=1)
    async with (
        module.AsyncClient(limits=one_connection, timeout=timeout, **options) as client_a,
        module.AsyncClient(timeout=timeout, **options) as client_b,
    ):
        sent_by_a = [
            asyncio.create_task(client_a.get(url, extensions={"trace": hold}))
            for _ in range(A_REQUESTS)
        ]
        await held.wait()  # A's first request holds A's only connection
        gated = "_gates" in vars(auth)
        loop_gate = auth._gate() if gated else None
        loop_counts = None if loop_gate is None else (loop_gate.queued, loop_gate.sent)
        async with asyncio.timeout(20):  # a bound on the test, not a timing
            answered = await client_b.get(url)
        still_held = sum(not task.done() for task in sent_by_a)
        if loop_gate is not None:
            b_gate = auth.__dict__["_pool_gates"].get(client_b._transport)
            assert b_gate is not None
            assert b_gate.parent is loop_gate
        release.set()
        statuses = [response.status_code for response in await asyncio.gather(*sent_by_a)]
        if loop_gate is not None:
            assert (loop_gate.queued, loop_gate.sent, loop_gate.waiting) == (0, 0, 0)
        return loop_counts, answered.status_code, still_held, statuses


def test_a_flow_driven_by_no_client_never_waits_at_a_saturated_loop_gate(
    live_fake: FakeOAuth2Provider,
) -> None:
    """A flow whose pool cannot be found (driven here by hand, as by an unknown wrapper)
    queues in whatever pool it goes to, as without renewauth: it never waits for another's."""
    auth = _auth(live_fake)

    async def main() -> tuple[str | None, tuple[int, int]]:
        loop_gate = auth._gate()
        loop_gate.seen, loop_gate.queued, loop_gate.sent = True, 5, 1  # no room on this loop
        flow = auth.async_auth_flow(httpx.Request("GET", live_fake.api_url))
        async with asyncio.timeout(20):  # a bound on the test, not a timing
            signed = await flow.__anext__()
        await flow.aclose()
        return signed.headers.get("Authorization"), (loop_gate.queued, loop_gate.sent)

    authorization, counts = asyncio.run(main())
    assert authorization is not None
    assert authorization.startswith("Bearer ")
    assert counts == (5, 1)  # counted while it ran, and gone when it ended
