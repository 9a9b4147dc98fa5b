"""The renewal's two drivers: the same steps, run by a thread or a task, behave alike.

The renewal is written once, as generators of effects (`renewauth._renewal`), and carried out
by `drive` (a thread) and `adrive` (a task). These tests hold what the split added: the async
twin of `invalidate`, a waiter bounded by the injected monotonic clock, and locks let go when
a task running the steps is cancelled.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from renewauth import FileStore, MemoryStore, OAuth2Password, TokenEndpointUnavailable, _flight
from renewauth.manager import TokenManager
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


def _password(fake: FakeOAuth2Provider, clock: ManualClock, store: object) -> OAuth2Password:
    return OAuth2Password(
        fake.token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=store,  # type: ignore[arg-type]
        clock=clock,
    )


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_ainvalidate_expires_the_token_in_the_store_and_a_task_renews_it(
    fake: FakeOAuth2Provider, clock: ManualClock, tmp_path: object, store_kind: str
) -> None:
    store = MemoryStore() if store_kind == "memory" else FileStore(f"{tmp_path}/tokens")
    auth = _password(fake, clock, store)
    other = _password(fake, clock, store)  # another object on the same store

    async def main() -> tuple[str, str, bool, bool]:
        first = await auth.aget_token()
        await auth.ainvalidate()
        expired_here = auth.token is not None and auth.token.is_expired(clock())
        stored = store.get(_key(auth))
        expired_there = stored is not None and stored.is_expired(clock())
        second = await auth.aget_token()
        return first.access_token, second.access_token, expired_here, expired_there

    first, second, expired_here, expired_there = asyncio.run(main())
    assert expired_here
    assert expired_there
    assert second != first
    # the refresh token was kept: one password grant, then one refresh
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}
    assert other.get_token().access_token == second  # the store has the renewed one


def _key(auth: OAuth2Password) -> str:
    return auth._manager.key


class _NeverSends:
    """A sender for a manager whose flight another thread leads: never called."""

    def send(self, request: object, *, timeout: float) -> object:
        raise AssertionError("no token request was expected")

    async def asend(self, request: object, *, timeout: float) -> object:
        raise AssertionError("no token request was expected")


def test_a_waiter_gives_up_by_the_injected_monotonic_clock(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A waiter's deadline reads the injected monotonic clock, not the machine's: a clock
    that jumps past the bound ends the wait at its next check, while the leader still lives."""
    grant = _password(fake, clock, MemoryStore())._manager.grant
    readings: list[float] = []

    def monotonic() -> float:  # 0 when the wait starts, far past its bound afterwards
        readings.append(1e9 if readings else 0.0)
        return readings[-1]

    manager = TokenManager(
        grant,
        store=MemoryStore(),
        sender=_NeverSends(),  # type: ignore[arg-type]
        clock=clock,
        monotonic=monotonic,
    )
    release = threading.Event()
    leading = threading.Event()

    def lead() -> None:  # a leader that lives, and does not finish until told
        flight, is_leader = _flight.begin(manager._flight_key)
        assert is_leader
        leading.set()
        release.wait()
        flight.finish(abandoned=True)

    leader = threading.Thread(target=lead)
    leader.start()
    try:
        assert leading.wait(10)
        with pytest.raises(TokenEndpointUnavailable, match="did not finish within"):
            manager.token_for_request()
        assert leader.is_alive()  # the wait ended by the clock, not by the leader
        assert readings == [0.0, 1e9]
    finally:
        release.set()
        leader.join()
    assert fake.token_calls == 0


def test_a_cancelled_renewal_lets_go_of_the_store_lock_its_steps_took(
    clock: ManualClock, tmp_path: object
) -> None:
    """Cancellation is thrown into the steps like any error: their `finally` runs its unlock
    effects, so the next renewal is not stuck behind the lock of a task that is gone."""
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as fake:
        store = FileStore(f"{tmp_path}/tokens")
        auth = _password(fake, clock, store)

        async def main() -> None:
            asyncio.get_running_loop().create_task(auth.aget_token())
            # The renewal holds the store lock while its token call is held at the fake;
            # returning now makes asyncio.run cancel it there.
            assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)

        with fake.hold_token_requests():
            asyncio.run(main())
        taken = threading.Event()

        def take() -> None:
            with store.lock(_key(auth)):
                taken.set()

        threading.Thread(target=take, daemon=True).start()
        assert taken.wait(10), "the cancelled renewal kept the store lock"
        assert auth.get_token().access_token  # and a renewal from a thread goes through


def test_an_interrupt_between_two_effects_abandons_the_flight_and_lets_go_of_the_lock(
    clock: ManualClock, tmp_path: object
) -> None:
    """A KeyboardInterrupt (a SIGINT lands at any bytecode) raised in the driver itself, just
    after the store was read, reaches the caller as it is; the steps still let go of the
    store lock, the flight is abandoned (no failed renewal is reported), and the next
    renewal goes through."""
    from renewauth import _effects, events

    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as fake:
        store = FileStore(f"{tmp_path}/tokens")
        seen: list[object] = []
        auth = OAuth2Password(
            fake.token_url,
            "client-id",
            "alice",
            "alice-password",
            client_secret="client-secret",
            store=store,
            clock=clock,
            on_event=seen.append,
        )
        fired: list[bool] = []

        def interrupt_after_the_read(frame: Any, event: str, arg: object) -> Any:
            if frame.f_code is not _effects.drive.__code__:
                return None

            def local(frame: Any, event: str, arg: object) -> Any:
                result = frame.f_locals.get("result")
                if event == "line" and not fired and isinstance(result, tuple):
                    fired.append(True)  # the store's (token, generation) is in hand
                    raise KeyboardInterrupt
                return local

            return local

        sys.settrace(interrupt_after_the_read)
        try:
            with pytest.raises(KeyboardInterrupt):
                auth.get_token()
        finally:
            sys.settrace(None)
        assert fired == [True]
        taken = threading.Event()

        def take() -> None:
            with store.lock(_key(auth)):
                taken.set()

        threading.Thread(target=take, daemon=True).start()
        assert taken.wait(10), "the interrupted renewal kept the store lock"
        assert not any(isinstance(event, events.RenewalFailed) for event in seen)
        assert auth.get_token().access_token
        assert fake.token_calls == 1


def test_dropping_an_auth_object_frees_its_parts_at_once(
    fake: FakeOAuth2Provider, clock: ManualClock, tmp_path: object
) -> None:
    """The manager's parts reach back to it weakly: no reference cycle keeps a dropped auth
    object's manager, its cached token or its store's port alive until the garbage collector
    happens to run."""
    import gc
    import weakref

    auth = _password(fake, clock, FileStore(f"{tmp_path}/tokens"))
    auth.get_token()
    asyncio.run(auth.ainvalidate())
    auth.get_token()
    manager = auth._manager
    parts = [weakref.ref(part) for part in (manager, manager._renewal, manager._port)]
    parts.append(weakref.ref(manager._renewal.keeper))
    enabled = gc.isenabled()
    gc.disable()  # only reference counts free them now
    try:
        del auth, manager
        assert [part() for part in parts] == [None] * 4
    finally:
        if enabled:
            gc.enable()
