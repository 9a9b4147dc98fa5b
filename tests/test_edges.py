"""Races and detours found in review, each pinned open with the fake's hold gate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from renewauth import (
    ConfigurationError,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, FlightWatch, ManualClock, send, settle

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(
        token_lifetime=100.0, rotate_refresh_tokens=True, clock=clock
    ) as provider:
        yield provider


def test_cancelled_async_leader_still_stores_the_rotated_refresh_token(
    fake: FakeOAuth2Provider, clock: ManualClock, flights: FlightWatch
) -> None:
    """A caller cancelled while its refresh is at the server must not lose the answer."""
    seen: list[str | None] = []
    auth = OAuth2RefreshToken(
        fake.token_url,
        CLIENT_ID,
        fake.issue_refresh_token(),
        client_secret=CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
        on_token=lambda token: seen.append(token.refresh_token),
    )
    auth.get_token()
    clock.advance(150.0)

    async def scenario() -> None:
        with fake.hold_token_requests():
            leader = asyncio.create_task(auth.aget_token())
            assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)
            leader.cancel()  # as asyncio.timeout() around the caller's request would
            with pytest.raises(asyncio.CancelledError):
                await leader
            waiter = asyncio.create_task(auth.aget_token())
            assert await asyncio.to_thread(flights.wait_for_joined, 1)  # waits for the renewal
        assert (await waiter).refresh_token == seen[-1]

    asyncio.run(scenario())
    clock.advance(150.0)
    auth.get_token()  # renews with the refresh token the cancelled renewal stored
    assert fake.stale_refresh_tokens == 0
    assert fake.token_calls_by_grant == {"refresh_token": 3}
    assert len(set(seen)) == 3


def test_blocking_call_inside_the_renewing_loop_raises_instead_of_renewing_twice(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), clock=clock
    )

    async def scenario() -> None:
        with fake.hold_token_requests():
            leader = asyncio.create_task(auth.aget_token())
            assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)
            with pytest.raises(ConfigurationError, match=r"asyncio\.to_thread"):
                auth.get_token()  # sync, on the loop whose task is renewing
        await leader

    asyncio.run(scenario())
    assert fake.token_calls == 1


def test_failed_soft_renewal_is_tried_once_by_16_threads(
    fake: FakeOAuth2Provider, clock: ManualClock, flights: FlightWatch
) -> None:
    auth = OAuth2ClientCredentials(
        fake.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
        leeway=30.0,
        retries=0,
    )
    valid = auth.get_token()
    clock.advance(80.0)  # soft window
    fake.fail_token_requests(503, times=-1)
    barrier = threading.Barrier(16)
    tokens = []
    returned = threading.Condition()

    def work() -> None:
        barrier.wait()
        token = auth.get_token()
        with returned:
            tokens.append(token)
            returned.notify_all()

    threads = [threading.Thread(target=work) for _ in range(16)]
    with fake.hold_token_requests():  # keeps the failing flight open while the others arrive
        for thread in threads:
            thread.start()
        assert fake.wait_for_held_token_requests(1)
        assert flights.wait_for_joined(15)
        # In the soft window nobody waits, not even the caller that started the renewal:
        # the token is still valid.
        with returned:
            assert returned.wait_for(lambda: len(tokens) == 16, 30)
    for thread in threads:
        thread.join()
    settle()  # the failed renewal, in the background
    assert len(tokens) == 16
    assert tokens == [valid] * 16
    # Callers after the failure, in the same soft window, do not try again either.
    assert [auth.get_token() for _ in range(16)] == [valid] * 16
    assert fake.token_calls == 2  # the first token, then one failed soft renewal


def test_invalidate_during_a_renewal_keeps_the_rotated_refresh_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        "alice",
        "alice-password",
        client_secret=CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
    )
    auth.get_token()
    clock.advance(150.0)
    with fake.hold_token_requests():
        renewing = threading.Thread(target=auth.get_token)
        renewing.start()
        assert fake.wait_for_held_token_requests(1)
        invalidating = threading.Thread(target=auth.invalidate)
        invalidating.start()
    renewing.join()
    invalidating.join()
    auth.get_token()  # renews from the invalidated token: its refresh token is the rotated one
    assert fake.stale_refresh_tokens == 0
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 2}


@pytest.mark.parametrize("kind", KINDS)
def test_401_to_a_request_stripped_of_its_token_on_a_detour_never_renews(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A → B → back to A: the token was dropped at B, so A's 401 says nothing about it."""
    with FakeOAuth2Provider() as elsewhere:
        auth = OAuth2ClientCredentials(
            fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), clock=clock
        )
        back = f"{fake.api_url}always-401"
        detour = f"{elsewhere.base_url}/redirect?to={quote(back, safe='')}"
        reply = send(kind, auth, f"{fake.api_url}redirect?to={quote(detour, safe='')}")
        assert reply.status == 401
        assert fake.token_calls == 1
