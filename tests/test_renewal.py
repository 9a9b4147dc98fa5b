"""Renewal against the loopback fake, through requests, httpx and httpx async alike."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

from renewauth import (
    BearerToken,
    InsecureTransportError,
    InvalidClient,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    Token,
    TokenEndpointUnavailable,
)
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._signing import should_renew_after

from .helpers import (
    ALL_KINDS,
    FlightWatch,
    ManualClock,
    send,
    send_concurrently,
    send_concurrently_while_held,
    settle,
)

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
USER, PASSWORD = "alice", "alice-password"


@pytest.fixture(params=ALL_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Every client renewauth signs for: what the auth object does, it does for each."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


def credentials(
    fake: FakeOAuth2Provider, clock: ManualClock, **options: object
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def password(fake: FakeOAuth2Provider, clock: ManualClock, **options: object) -> OAuth2Password:
    return OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


# --- fetching and caching ------------------------------------------------------------------


def test_auth_fetches_one_token_for_many_requests(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    statuses = [send(kind, auth, fake.api_url).status for _ in range(5)]
    assert statuses == [200] * 5
    assert fake.token_calls == 1


def test_auth_renews_before_expiry_so_the_api_never_sees_an_expired_token(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock, leeway=30.0)
    for _ in range(4):
        assert send(kind, auth, fake.api_url).status == 200
        clock.advance(75.0)  # past renew_at (70 s), before expiry (100 s)
    assert fake.api_unauthorized == 0
    assert fake.token_calls == 4


def test_auth_renews_after_expiry_with_the_refresh_token(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    assert send(kind, auth, fake.api_url).status == 200
    clock.advance(150.0)
    assert send(kind, auth, fake.api_url).status == 200
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}


def test_objects_with_the_same_credentials_share_one_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    store = MemoryStore()
    first = OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=store, clock=clock
    )
    second = OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=store, clock=clock
    )
    assert first.get_token() == second.get_token()
    assert fake.token_calls == 1


def test_objects_with_different_secrets_never_share_a_token(clock: ManualClock) -> None:
    clients = {"client-id": "client-secret", "other": "other-secret"}
    with FakeOAuth2Provider(clients=clients, clock=clock) as fake:
        store = MemoryStore()
        first = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", store=store)
        wrong = OAuth2ClientCredentials(fake.token_url, "client-id", "wrong-secret", store=store)
        first.get_token()
        with pytest.raises(InvalidClient):
            wrong.get_token()
        assert fake.token_calls == 2


def test_on_token_receives_every_new_token_after_the_store_has_it(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    store = MemoryStore()
    seen: list[tuple[Token, Token | None]] = []
    auth = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=store,
        clock=clock,
        on_token=lambda token: seen.append((token, store.get(auth._manager.key))),
    )
    auth.get_token()
    clock.advance(150.0)
    auth.get_token()
    assert [token.refresh_token for token, _ in seen] == [
        token.refresh_token for _, token in seen if token is not None
    ]
    assert len(seen) == 2
    assert seen[0][0].refresh_token != seen[1][0].refresh_token  # rotated


def test_token_property_does_no_io_and_is_none_before_the_first_request(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    assert auth.token is None
    assert fake.token_calls == 0
    token = auth.get_token()
    assert auth.token == token


def test_aget_token_fetches_without_a_client(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)
    token = asyncio.run(auth.aget_token())
    assert token.access_token
    assert fake.token_calls == 1


def test_invalidate_drops_access_token_and_renews_with_refresh_token(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    first = auth.get_token()
    auth.invalidate()
    assert send(kind, auth, fake.api_url).status == 200
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}
    assert auth.token is not None
    assert auth.token.access_token != first.access_token


# --- 401: renew once, resend once -----------------------------------------------------------


def test_auth_renews_and_resends_after_server_side_revocation(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    assert send(kind, auth, fake.api_url).status == 200
    fake.revoke_access_tokens()
    reply = send(kind, auth, fake.api_url)
    assert reply.status == 200
    assert fake.api_unauthorized == 1  # answered, and never given to the caller
    if kind != "aiohttp":  # an aiohttp middleware's resend is not in aiohttp's history
        assert reply.history == 1  # the 401 is in the history, not in the caller's hands
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}


def test_revocation_with_many_concurrent_callers_renews_once(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    assert send(kind, auth, fake.api_url).status == 200
    fake.revoke_access_tokens()
    statuses = send_concurrently(kind, auth, fake.api_url, 16)
    assert statuses == [200] * 16
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}


def test_second_401_reaches_the_caller_as_a_response(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    reply = send(kind, auth, fake.api_url + "always-401")
    assert reply.status == 401
    assert fake.token_calls == 2  # the first token, and one renewal
    assert fake.api_unauthorized == 2  # sent, resent once, then given back


def test_403_never_renews_unless_listed(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    assert send(kind, credentials(fake, clock), fake.api_url + "forbidden").status == 403
    assert fake.token_calls == 1
    listed = credentials(fake, clock, retry_statuses=(401, 403))
    listed.get_token()
    listed.invalidate()
    fake.reset_counters()
    assert send(kind, listed, fake.api_url + "forbidden").status == 403
    assert fake.token_calls == 2  # the invalidated token, then the renewal the 403 caused


def test_generator_body_is_never_resent(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()

    def body() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    reply = send(kind, auth, fake.api_url + "upload", method="POST", body=body)
    assert reply.status == 401
    assert fake.api_unauthorized == 1
    assert fake.token_calls == 1
    assert "cannot be replayed" in caplog.text


def test_bytes_body_is_resent_whole_after_renewal(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()
    reply = send(kind, auth, fake.api_url + "upload", method="POST", body=b"x" * 1000)
    assert reply.status == 200
    assert b'"body_length": 1000' in reply.body or b'"body_length":1000' in reply.body


def test_401_after_another_caller_renewed_resends_without_a_token_call(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    stale = auth.get_token()
    fake.revoke_access_tokens()
    renewed = auth._manager.renew_rejected(stale)
    again = auth._manager.renew_rejected(stale)  # a late caller with the same rejected token
    assert again == renewed
    assert fake.token_calls == 2


def test_bearer_token_gives_a_401_back_without_renewing(
    kind: str, fake: FakeOAuth2Provider
) -> None:
    reply = send(kind, BearerToken("not-a-real-token"), fake.api_url)
    assert reply.status == 401
    assert reply.history == 0
    assert fake.token_calls == 0


# --- origins -------------------------------------------------------------------------------


@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
def test_token_is_never_sent_to_another_origin_on_redirect(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock, dpop: bool
) -> None:
    """requests and httpx drop `Authorization` themselves; the `DPoP` proof renewauth adds
    is a header they do not know, so only renewauth's own removal keeps it home."""
    with contextlib.ExitStack() as fakes:
        home = fake
        if dpop:
            home = fakes.enter_context(
                FakeOAuth2Provider(token_type="DPoP", dpop_nonces=True, clock=clock)
            )
        elsewhere = fakes.enter_context(FakeOAuth2Provider())
        auth = credentials(home, clock, dpop=dpop)
        here = send(kind, auth, f"{home.base_url}/echo-headers")
        assert {"authorization", *(["dpop"] if dpop else [])} <= set(json.loads(here.body))
        target = f"{elsewhere.base_url}/echo-headers"
        reply = send(kind, auth, f"{home.api_url}redirect?to={target}")
        assert reply.status == 200
        assert b"authorization" not in reply.body.lower()
        received = set(json.loads(reply.body))
        assert received.isdisjoint({"authorization", "dpop"})


def test_401_from_a_redirect_target_elsewhere_never_renews(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    with FakeOAuth2Provider() as elsewhere:
        auth = credentials(fake, clock)
        target = f"{elsewhere.api_url}always-401"
        reply = send(kind, auth, f"{fake.api_url}redirect?to={target}")
        assert reply.status == 401
        assert fake.token_calls == 1
        assert elsewhere.token_calls == 0


def _carrying_authorization_across_redirects(kind: str) -> dict[str, Any]:
    """Event hooks of a program that puts its last `Authorization` back on every redirect,
    to any origin: the 401 that origin answers reaches renewauth with the token on it."""
    carried: list[str] = []

    def carry(request: httpx.Request) -> None:
        if "Authorization" in request.headers:
            carried.append(request.headers["Authorization"])
        elif carried:
            request.headers["Authorization"] = carried[-1]

    async def acarry(request: httpx.Request) -> None:
        carry(request)

    return {"request": [acarry if kind == "httpx-async" else carry]}


@pytest.mark.parametrize("client_kind", ["httpx", "httpx-async"])
def test_401_from_another_origin_carrying_the_token_never_renews(
    client_kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Only the origin the token was sent to can say it was rejected: whoever carried it
    elsewhere, a 401 from there renews nothing and resends nothing."""
    with FakeOAuth2Provider() as elsewhere:
        auth = credentials(fake, clock)
        url = f"{fake.api_url}redirect?to={elsewhere.api_url}always-401"
        hooks = _carrying_authorization_across_redirects(client_kind)
        if client_kind == "httpx":
            with httpx.Client(auth=auth, follow_redirects=True, event_hooks=hooks) as client:
                reply = client.get(url)
        else:

            async def call() -> httpx.Response:
                async with httpx.AsyncClient(
                    auth=auth, follow_redirects=True, event_hooks=hooks
                ) as client:
                    return await client.get(url)

            reply = asyncio.run(call())
        assert reply.status_code == 401
        assert reply.request.headers["Authorization"].startswith("Bearer ")  # it was carried
        assert len(reply.history) == 1  # the redirect only: no resend
        assert fake.token_calls == 1
        assert elsewhere.api_unauthorized == 1
        assert elsewhere.token_calls == 0


@pytest.mark.parametrize(
    ("answered_url", "renews"),
    [
        ("https://api.example.com/other", True),
        ("https://elsewhere.example.com/x", False),
        ("https://api.example.com:8443/x", False),
        ("http://api.example.com/x", False),
    ],
)
def test_a_rejection_renews_only_when_it_came_from_the_origin_the_token_was_sent_to(
    answered_url: str, renews: bool
) -> None:
    assert (
        should_renew_after(
            401,
            (401,),
            signed_url="https://api.example.com/x",
            answered_url=answered_url,
            carried_token=True,
            already_resent=False,
        )
        is renews
    )


def test_plain_http_token_url_is_refused_off_loopback() -> None:
    with pytest.raises(InsecureTransportError, match="allow_insecure_http=True"):
        OAuth2ClientCredentials("http://idp.example.com/token", "id", "secret")
    allowed = OAuth2ClientCredentials(
        "http://idp.example.com/token", "id", "secret", allow_insecure_http=True
    )
    assert allowed.token is None


# --- failures of the token endpoint ---------------------------------------------------------


def test_token_endpoint_503_twice_then_200_succeeds_after_retries(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    fake.fail_token_requests(503, times=2)
    assert send(kind, credentials(fake, clock, retries=2), fake.api_url).status == 200
    assert fake.token_calls == 3


def test_token_endpoint_429_with_retry_after_is_honoured(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    fake.fail_token_requests(429, headers={"Retry-After": "0"})
    assert send(kind, credentials(fake, clock, retries=1), fake.api_url).status == 200
    assert fake.token_calls == 2


def test_token_endpoint_down_raises_unavailable_after_the_retries(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    fake.fail_token_requests(503, times=-1, headers={"Retry-After": "0"})
    with pytest.raises(TokenEndpointUnavailable, match="unavailable") as caught:
        send(kind, credentials(fake, clock, retries=2), fake.api_url)
    assert caught.value.status == 503
    assert fake.token_calls == 3


def test_unreachable_token_endpoint_raises_unavailable(kind: str, clock: ManualClock) -> None:
    with FakeOAuth2Provider() as gone:
        token_url = gone.token_url
    auth = OAuth2ClientCredentials(token_url, "id", "secret", retries=0, store=MemoryStore())
    with pytest.raises(TokenEndpointUnavailable, match="could not be reached"):
        send(kind, auth, token_url.replace("/oauth/token", "/api/"))


def test_wrong_secret_raises_invalid_client_without_retrying(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = OAuth2ClientCredentials(fake.token_url, CLIENT_ID, "wrong", store=MemoryStore())
    with pytest.raises(InvalidClient, match="client_secret="):
        send(kind, auth, fake.api_url)
    assert fake.token_calls == 1


def test_wrong_password_raises_invalid_grant_naming_the_fix(
    kind: str, fake: FakeOAuth2Provider
) -> None:
    auth = OAuth2Password(fake.token_url, CLIENT_ID, USER, "wrong", client_secret=CLIENT_SECRET)
    with pytest.raises(InvalidGrant, match="password="):
        send(kind, auth, fake.api_url)


def test_soft_window_renewal_failure_fails_no_request(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = credentials(fake, clock, leeway=30.0, retries=0)
    assert send(kind, auth, fake.api_url).status == 200
    clock.advance(80.0)  # soft window: 20 s left
    fake.fail_token_requests(503, times=-1)
    statuses = [send(kind, auth, fake.api_url).status for _ in range(10)]
    assert statuses == [200] * 10
    settle()  # the renewal the first request started, in the background
    assert fake.token_calls == 2  # one failed try, then a backoff of min(30 s, 10 s)
    assert caplog.text.count("stays valid") == 1
    clock.advance(10.0)  # backoff over: one more try, still failing, still no failed request
    assert send(kind, auth, fake.api_url).status == 200
    settle()
    assert fake.token_calls == 3
    clock.advance(15.0)  # expired: now the failure is the caller's
    with pytest.raises(TokenEndpointUnavailable):
        send(kind, auth, fake.api_url)


def test_password_grant_falls_back_when_refresh_tokens_are_revoked(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = password(fake, clock)
    auth.get_token()
    fake.revoke_refresh_tokens()
    clock.advance(150.0)
    assert send(kind, auth, fake.api_url).status == 200
    assert fake.token_calls_by_grant == {"password": 2, "refresh_token": 1}


def test_refresh_token_auth_persists_rotated_tokens_and_prefers_the_stored_one(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    store = MemoryStore()
    seen: list[str | None] = []
    initial = fake.issue_refresh_token()
    auth = OAuth2RefreshToken(
        fake.token_url,
        CLIENT_ID,
        initial,
        client_secret=CLIENT_SECRET,
        store=store,
        clock=clock,
        on_token=lambda token: seen.append(token.refresh_token),
    )
    auth.get_token()
    clock.advance(150.0)
    auth.get_token()
    # A second object built from the same (now spent) constructor token uses the stored one.
    later = OAuth2RefreshToken(
        fake.token_url, CLIENT_ID, initial, client_secret=CLIENT_SECRET, store=store, clock=clock
    )
    clock.advance(150.0)
    later.get_token()
    assert fake.stale_refresh_tokens == 0
    assert len(set(seen)) == 2
    assert initial not in seen


def test_spent_refresh_token_raises_invalid_grant_naming_the_fix(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    initial = fake.issue_refresh_token()
    fake.revoke_refresh_tokens()
    auth = OAuth2RefreshToken(fake.token_url, CLIENT_ID, initial, client_secret=CLIENT_SECRET)
    with pytest.raises(InvalidGrant, match="refresh_token="):
        auth.get_token()


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["requests", "httpx", "httpx2"])
def test_32_threads_at_cold_start_make_one_token_call(
    kind: str, clock: ManualClock, flights: FlightWatch
) -> None:
    with FakeOAuth2Provider(clock=clock) as fake:
        auth = credentials(fake, clock)
        statuses = send_concurrently_while_held(kind, auth, fake.api_url, 32, fake, flights)
        assert statuses == [200] * 32
        assert fake.token_calls == 1


@pytest.mark.parametrize("kind", ["httpx-async", "httpx2-async", "aiohttp"])
def test_200_tasks_at_cold_start_make_one_token_call(
    kind: str, clock: ManualClock, flights: FlightWatch
) -> None:
    with FakeOAuth2Provider(clock=clock) as fake:
        auth = credentials(fake, clock)
        statuses = send_concurrently_while_held(kind, auth, fake.api_url, 200, fake, flights)
        assert statuses == [200] * 200
        assert fake.token_calls == 1


def test_rotation_with_8_threads_never_presents_a_stale_refresh_token(
    kind: str, clock: ManualClock
) -> None:
    with FakeOAuth2Provider(token_lifetime=100.0, rotate_refresh_tokens=True, clock=clock) as fake:
        auth = password(fake, clock)
        for _ in range(5):
            assert send_concurrently(kind, auth, fake.api_url, 8) == [200] * 8
            clock.advance(150.0)  # every token expires between rounds
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 4}


def test_threads_and_tasks_together_share_one_renewal(
    clock: ManualClock, flights: FlightWatch
) -> None:
    with FakeOAuth2Provider(clock=clock) as fake:
        auth = credentials(fake, clock)
        results: list[list[int]] = []
        task_results: list[list[int]] = []
        import threading

        thread = threading.Thread(
            target=lambda: results.append(send_concurrently("httpx", auth, fake.api_url, 8))
        )
        tasks_thread = threading.Thread(
            target=lambda: task_results.append(
                send_concurrently("httpx-async", auth, fake.api_url, 50)
            )
        )
        with fake.hold_token_requests():
            thread.start()
            tasks_thread.start()
            assert fake.wait_for_held_token_requests(1)
            assert flights.wait_for_joined(8 + 50 - 1)  # all but the leader wait for it
        thread.join()
        tasks_thread.join()
        (tasks,) = task_results
        assert tasks == [200] * 50
        assert results == [[200] * 8]
        assert fake.token_calls == 1


def test_hard_waiters_share_the_leaders_error(clock: ManualClock, flights: FlightWatch) -> None:
    with FakeOAuth2Provider(clock=clock) as fake:
        auth = OAuth2ClientCredentials(fake.token_url, CLIENT_ID, "wrong", store=MemoryStore())
        with pytest.raises(InvalidClient):
            send_concurrently_while_held("httpx", auth, fake.api_url, 8, fake, flights)
        assert fake.token_calls <= 8
        assert fake.token_calls == 1  # the seven waiters were given the leader's error
        assert fake.max_concurrent_token_calls == 1


def test_async_renewal_does_not_block_the_event_loop(clock: ManualClock) -> None:
    """While the token endpoint holds the renewal, other tasks on the loop keep running."""
    rounds = 10
    with FakeOAuth2Provider(clock=clock) as fake:
        auth = credentials(fake, clock)

        async def scenario() -> int:
            ticks = 0
            async with httpx.AsyncClient(auth=auth) as client:
                with fake.hold_token_requests():
                    request = asyncio.create_task(client.get(fake.api_url))
                    held = asyncio.create_task(
                        asyncio.to_thread(fake.wait_for_held_token_requests, 1)
                    )
                    while not held.done():
                        ticks += 1  # only counts if the loop is free while the renewal waits
                        await asyncio.sleep(0)
                    assert held.result()
                    assert ticks > 0
                    # Another task and this one hand the loop to each other, each turn while
                    # the renewal is still held: every turn counts.
                    turns = await _turns_taken_while(lambda: not request.done(), rounds)
                    assert fake.token_calls == 1
                assert (await request).status_code == 200
            return turns

        assert asyncio.run(scenario()) == rounds
        assert fake.token_calls == 1


async def _turns_taken_while(condition: Callable[[], bool], rounds: int) -> int:
    """Hand the event loop back and forth with a second task `rounds` times; return how many
    of the second task's turns ran while `condition()` held."""
    ping, pong = asyncio.Event(), asyncio.Event()
    turns = 0

    async def other() -> None:
        nonlocal turns
        for _ in range(rounds):
            await ping.wait()
            ping.clear()
            turns += condition()
            pong.set()

    partner = asyncio.create_task(other())
    for _ in range(rounds):
        ping.set()
        await pong.wait()
        pong.clear()
    await partner
    return turns


def test_requests_session_auth_and_httpx_client_share_the_same_object(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    with requests.Session() as session:
        session.auth = auth
        assert session.get(fake.api_url, timeout=10).status_code == 200
    with httpx.Client(auth=auth) as client:
        assert client.get(fake.api_url).status_code == 200
    assert fake.token_calls == 1


def test_debug_logs_name_renewals_by_origin(
    fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="renewauth")
    credentials(fake, clock).get_token()
    assert f"token for {fake.base_url} renewed" in caplog.text


def test_401_on_a_second_object_adopts_the_token_the_first_renewed(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Two objects share a store; after a revocation the first renews, the second's 401 only
    resends with the stored token: the leader re-reads the store before it renews."""
    store = MemoryStore()
    first = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=store,
        clock=clock,
    )
    second = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=store,
        clock=clock,
    )
    assert send(kind, first, fake.api_url).status == 200
    assert send(kind, second, fake.api_url).status == 200
    fake.revoke_access_tokens()
    assert send(kind, first, fake.api_url).status == 200
    assert send(kind, second, fake.api_url).status == 200
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}


def test_401_with_token_endpoint_down_raises_unavailable(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock, retries=0)
    auth.get_token()
    fake.revoke_access_tokens()
    fake.fail_token_requests(503, times=-1)
    with pytest.raises(TokenEndpointUnavailable, match="retries="):
        send(kind, auth, fake.api_url)
    fake.clear_failures()
    assert send(kind, auth, fake.api_url).status == 200  # recovered: the next request renews


def test_long_retry_after_pauses_token_calls_across_requests(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A throttled endpoint that asks for 120 s is not called again before they pass."""
    fake.fail_token_requests(429, times=-1, headers={"Retry-After": "120"})
    auth = credentials(fake, clock, retries=2)
    for _ in range(3):
        with pytest.raises(TokenEndpointUnavailable) as caught:
            send(kind, auth, fake.api_url)
        assert caught.value.retry_after == 120.0
    assert fake.token_calls == 1
    fake.clear_failures()
    clock.advance(121.0)
    assert send(kind, auth, fake.api_url).status == 200
    assert fake.token_calls == 2
