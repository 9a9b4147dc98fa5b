"""The same auth object as an aiohttp client middleware: real `aiohttp.ClientSession`s against
the loopback fakes, every hop of a request, redirects, resends and saturated connectors."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from renewauth import (
    ConfigurationError,
    InvalidClient,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    Token,
    TokenAuth,
)
from renewauth.providers import VanMarcke, Vendorlink
from renewauth.testing import FakeOAuth2Provider, FakeOrderCloud, FakeVanMarcke, FakeVendorlink

from .helpers import FlightWatch, ManualClock, settle

API_KEY = "test-api-key"


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


@pytest.fixture
def elsewhere() -> Iterator[FakeOrderCloud]:
    """Another origin, whose `/echo-headers` answers with the headers it received."""
    with FakeOrderCloud() as other:
        yield other


def credentials(fake: FakeOAuth2Provider, clock: ManualClock | None = None, **options: Any) -> Any:
    if clock is not None:
        options["clock"] = clock
    options.setdefault("store", MemoryStore())
    return OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", **options)


def vanmarcke(fake: FakeVanMarcke, clock: ManualClock) -> VanMarcke:
    return VanMarcke(
        "API-APP1-P123456",
        "service-password",
        client_id="vm-client",
        client_secret="vm-secret",
        api_key=API_KEY,
        token_url=fake.token_url,
        store=MemoryStore(),
        clock=clock,
    )


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **options: Any
) -> tuple[int, Any]:
    """The status and the JSON body (or None) of one request."""
    async with session.request(method, url, **options) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None


def run(auth: TokenAuth, url: str, method: str = "GET", **options: Any) -> tuple[int, Any]:
    """One request through a fresh `ClientSession(middlewares=(auth,))`."""

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            return await fetch(session, url, method, **options)

    return asyncio.run(main())


def lowered(headers: dict[str, str]) -> set[str]:
    return {name.lower() for name in headers}


# --- signing --------------------------------------------------------------------------------


def test_requests_are_signed_with_one_token_fetched_once(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)

    async def main() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            return [(await fetch(session, fake.api_url + f"items/{n}"))[0] for n in range(3)]

    assert asyncio.run(main()) == [200, 200, 200]
    assert fake.token_calls == 1
    assert fake.api_ok == 3


def test_api_key_reaches_the_addressed_origin(clock: ManualClock) -> None:
    with FakeVanMarcke(clock=clock) as fake:
        assert run(vanmarcke(fake, clock), fake.api_url + "items")[0] == 200
        assert fake.api_ok == 1  # the fake's API answers 401 without the key


def test_requests_to_the_configured_origin_go_to_the_assigned_server(clock: ManualClock) -> None:
    with FakeVendorlink(reassign=True, clock=clock) as fake:
        auth = Vendorlink("demo", "demo-password", base_url=fake.base_url, store=MemoryStore())
        assert run(auth, fake.api_url + "tenders")[0] == 200
        assigned = (fake.assigned_url or "").removeprefix("http://")
        assert fake.api_ok_by_host == {assigned: 1}


def test_per_request_middlewares_sign_too(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)

    async def main() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            signed = await fetch(session, fake.api_url, middlewares=(auth,))
            unsigned = await fetch(session, fake.api_url)
            return signed[0], unsigned[0]

    assert asyncio.run(main()) == (200, 401)


def test_cold_start_of_many_tasks_makes_one_token_call(
    fake: FakeOAuth2Provider, clock: ManualClock, flights: FlightWatch
) -> None:
    auth = credentials(fake, clock)
    tasks = 100

    async def main() -> list[int]:
        go = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=tasks)
        async with aiohttp.ClientSession(middlewares=(auth,), connector=connector) as session:

            async def work() -> int:
                await go.wait()
                return (await fetch(session, fake.api_url))[0]

            running = [asyncio.create_task(work()) for _ in range(tasks)]
            with fake.hold_token_requests():
                go.set()
                # The first task's token call is held until every other task has joined it.
                assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)
                assert await asyncio.to_thread(flights.wait_for_joined, tasks - 1)
            return list(await asyncio.gather(*running))

    assert asyncio.run(main()) == [200] * tasks
    assert fake.token_calls == 1


# --- renewal --------------------------------------------------------------------------------


def test_token_is_renewed_before_it_expires(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)

    async def main() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            statuses = [(await fetch(session, fake.api_url))[0]]
            clock.advance(80.0)  # 20 s left of 100: the soft window
            statuses.append((await fetch(session, fake.api_url))[0])  # renews in the background
            await asyncio.to_thread(settle)
            clock.advance(30.0)  # the first token has expired
            statuses.append((await fetch(session, fake.api_url))[0])
            return statuses

    assert asyncio.run(main()) == [200, 200, 200]
    assert fake.token_calls == 2
    assert fake.api_unauthorized == 0


# --- 401: renewed once, resent once ---------------------------------------------------------


def test_revoked_token_is_renewed_and_the_request_resent_with_its_body(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()
    status, body = run(auth, fake.api_url + "items", "POST", data=b"a body")
    assert (status, body["body_length"]) == (200, 6)
    assert fake.api_unauthorized == 1
    assert fake.token_calls == 2


def test_a_seekable_file_body_is_resent_whole(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()
    status, body = run(auth, fake.api_url, "PUT", data=io.BytesIO(b"0123456789"))
    assert (status, body["body_length"]) == (200, 10)
    assert fake.token_calls == 2


def test_second_401_goes_back_to_the_caller(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)

    async def main() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            first = await fetch(session, fake.api_url + "always-401")
            again = await fetch(session, fake.api_url + "always-401")
            return [first[0], again[0]]

    assert asyncio.run(main()) == [401, 401]
    assert fake.token_calls == 2  # the first token, one renewal: not one per 401
    assert fake.api_unauthorized == 3  # the first request and its one resend, the second


def test_401_a_new_token_cannot_cure_is_not_resent(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    assert run(credentials(fake, clock), fake.api_url + "insufficient-scope")[0] == 401
    assert fake.token_calls == 1
    assert fake.api_unauthorized == 1


def test_streamed_body_is_never_resent(
    fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()

    async def stream() -> AsyncIterator[bytes]:
        yield b"one "
        yield b"two"

    assert run(auth, fake.api_url, "POST", data=stream())[0] == 401
    assert fake.token_calls == 1
    assert fake.api_unauthorized == 1
    assert "cannot be replayed" in caplog.text


def test_dpop_nonce_the_api_asks_for_is_sent_once_more(clock: ManualClock) -> None:
    with FakeOAuth2Provider(
        token_type="DPoP", dpop_nonces=True, token_lifetime=600, clock=clock
    ) as fake:
        auth = credentials(fake, clock, dpop=True)

        async def main() -> list[int]:
            async with aiohttp.ClientSession(middlewares=(auth,)) as session:
                return [(await fetch(session, fake.api_url))[0] for _ in range(3)]

        assert asyncio.run(main()) == [200, 200, 200]
        assert fake.api_unauthorized == 1  # the first request only: then the nonce is known
        assert fake.api_ok == 3


# --- redirects: each hop is signed, never one to another origin ------------------------------


def test_redirect_to_another_origin_carries_no_header_of_ours(
    elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
    with FakeVanMarcke(clock=clock) as fake:
        status, received = run(vanmarcke(fake, clock), f"{fake.api_url}redirect?to={target}")
    assert status == 200
    assert not lowered(received) & {"authorization", "x-api-key"}


def test_dpop_proof_never_follows_a_redirect_to_another_origin(elsewhere: FakeOrderCloud) -> None:
    with FakeOAuth2Provider() as home:
        auth = credentials(home, dpop=True)
        token = Token(access_token="dpop-bound", token_type="DPoP", expires_at=time.time() + 600)
        auth._manager.store.set(auth._manager.key, token)  # a DPoP token, as if issued
        here = run(auth, f"{home.base_url}/echo-headers")[1]
        assert lowered(here) >= {"dpop", "authorization"}
        target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
        status, received = run(auth, f"{home.base_url}/redirect?to={target}")
    assert status == 200
    assert not lowered(received) & {"dpop", "authorization"}


def test_redirect_within_the_origin_keeps_the_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    target = quote(fake.api_url + "items", safe="")
    status, body = run(credentials(fake, clock), f"{fake.api_url}redirect?to={target}")
    assert (status, body["path"]) == (200, "/api/items")
    assert fake.api_unauthorized == 0


def test_next_call_to_the_other_origin_addressed_directly_is_signed(
    fake: FakeOAuth2Provider, elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    target = quote(f"{elsewhere.base_url}/echo-headers", safe="")

    async def main() -> tuple[Any, Any]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            redirected = (await fetch(session, f"{fake.api_url}redirect?to={target}"))[1]
            addressed = (await fetch(session, f"{elsewhere.base_url}/echo-headers"))[1]
            return redirected, addressed

    redirected, addressed = asyncio.run(main())
    assert "authorization" not in lowered(redirected)
    assert "authorization" in lowered(addressed)  # the caller sent it there: signed


def test_call_to_where_a_redirect_pointed_that_was_not_followed_is_signed(
    fake: FakeOAuth2Provider, elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    echo = f"{elsewhere.base_url}/echo-headers"

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            url = f"{fake.api_url}redirect?to={quote(echo, safe='')}"
            status = (await fetch(session, url, allow_redirects=False))[0]
            return status, (await fetch(session, echo))[1]

    status, addressed = asyncio.run(main())
    assert status == 307
    assert "authorization" in lowered(addressed)  # a call of its own, not the redirect's hop


def test_401_from_a_redirect_target_elsewhere_renews_nothing(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    with FakeOAuth2Provider() as other:
        target = quote(other.api_url + "items", safe="")
        status = run(credentials(fake, clock), f"{fake.api_url}redirect?to={target}")[0]
        assert status == 401
        assert other.api_unauthorized == 1  # reached without a token, and not resent
    assert fake.token_calls == 1


def test_api_key_never_follows_the_redirect_of_a_resend_after_401(
    elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
    with FakeVanMarcke(clock=clock) as fake:
        auth = vanmarcke(fake, clock)
        auth.get_token()
        fake.revoke_access_tokens()  # the first answer is a 401, the resend's a redirect
        status, received = run(auth, f"{fake.api_url}redirect?to={target}")
    assert status == 200
    assert not lowered(received) & {"authorization", "x-api-key"}


class _UntraceableRequest(aiohttp.ClientRequest):
    """A request class whose hops of one call cannot be told apart (a new `_traces` at
    each read), as if aiohttp no longer shared one object among them."""

    @property  # type: ignore[override]
    def _traces(self) -> tuple[Any, ...]:
        return tuple(self.__dict__["_held_traces"])

    @_traces.setter
    def _traces(self, traces: list[Any]) -> None:
        self.__dict__["_held_traces"] = traces


def test_hop_that_cannot_be_told_apart_after_a_redirect_elsewhere_is_not_signed(
    fake: FakeOAuth2Provider, elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    echo = f"{elsewhere.base_url}/echo-headers"

    async def main() -> list[set[str]]:
        async with aiohttp.ClientSession(
            middlewares=(auth,), request_class=_UntraceableRequest
        ) as session:
            redirected = await fetch(session, f"{fake.api_url}redirect?to={quote(echo, safe='')}")
            addressed = await fetch(session, echo)  # the chain ended: a call of its own
            return [lowered(redirected[1]), lowered(addressed[1])]

    redirected, addressed = asyncio.run(main())
    assert "authorization" not in redirected
    assert "authorization" in addressed


# --- a token checked again as the request leaves --------------------------------------------


async def _queued_behind_one_connection(
    auth: TokenAuth, url: str, clock: ManualClock, before: float, queued_for: float
) -> int:
    """The status of a request signed `before` seconds (on `clock`) after the first token,
    that then queues `queued_for` seconds for the one connection of its session, which a
    request to a server that does not answer yet holds."""
    accepted, answer, queued = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await answer.wait()
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def on_queued(*_: object) -> None:
        queued.set()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_queued_start.append(on_queued)
    connector = aiohttp.TCPConnector(limit=1)
    async with (
        server,
        aiohttp.ClientSession(
            middlewares=(auth,), connector=connector, trace_configs=[tracing]
        ) as session,
    ):
        await auth.aget_token()
        holder = asyncio.create_task(fetch(session, f"http://127.0.0.1:{port}/", middlewares=()))
        await accepted.wait()  # the one connection is taken
        clock.advance(before)
        second = asyncio.create_task(fetch(session, url))
        await queued.wait()  # signed, waiting for the connection
        clock.advance(queued_for)
        answer.set()
        assert (await holder)[0] == 204
        return (await second)[0]


def test_request_that_queued_past_expiry_leaves_with_a_renewed_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Signed 45 s into a 100 s token (fresh until 70 s), it queues 60 s: it leaves with a
    new token, renewed as it left, instead of its expired one."""
    auth = credentials(fake, clock)
    assert asyncio.run(_queued_behind_one_connection(auth, fake.api_url, clock, 45.0, 60.0)) == 200
    assert fake.api_unauthorized == 0  # no 401 and resend: the token was replaced in time
    assert fake.token_calls == 2


def test_request_that_queued_longer_than_any_expected_wait_is_still_answered(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Signed at the start of a 100 s token, it queues 150 s: a wait longer than a request
    is watched for (`_QUEUED`); the API's 401 renews and resends it."""
    auth = credentials(fake, clock)
    assert asyncio.run(_queued_behind_one_connection(auth, fake.api_url, clock, 0.0, 150.0)) == 200
    assert fake.api_unauthorized == 1
    assert fake.token_calls == 2


_RUN_SECONDS = 2.5
_TASKS = 200


@pytest.fixture
def live_fake() -> Iterator[FakeOAuth2Provider]:
    """1 s tokens on the real clock, a token endpoint that answers in 20 ms."""
    with FakeOAuth2Provider(token_lifetime=1.0, token_delay=0.02) as provider:
        yield provider


async def _load(session: aiohttp.ClientSession, url: str, tasks: int) -> list[int]:
    start = asyncio.Event()

    async def work() -> list[int]:
        await start.wait()
        deadline = time.monotonic() + _RUN_SECONDS
        mine = []
        while time.monotonic() < deadline:
            mine.append((await fetch(session, url))[0])
        return mine

    running = [asyncio.create_task(work()) for _ in range(tasks)]
    start.set()
    return [status for mine in await asyncio.gather(*running) for status in mine]


@pytest.mark.parametrize("limit", [10, 100], ids=["saturated-200/10", "open-200/100"])
def test_short_tokens_under_load_give_no_401_to_the_caller(
    limit: int, live_fake: FakeOAuth2Provider
) -> None:
    """Many requests over a few 1 s token lifetimes; with 10 connections for 200 tasks,
    requests queue for a connection as long as a token lives."""
    auth = credentials(live_fake)

    async def main() -> list[int]:
        connector = aiohttp.TCPConnector(limit=limit)
        async with aiohttp.ClientSession(middlewares=(auth,), connector=connector) as session:
            return await _load(session, live_fake.api_url, _TASKS)

    began = time.monotonic()
    statuses = asyncio.run(main())
    lifetimes = (time.monotonic() - began) / 1.0 + 1.0  # and the cold start
    assert statuses, "no request was answered"
    assert set(statuses) == {200}
    # A 401 at the server needs a request to take longer than the arrival margin (0.1 s of a
    # 1 s token) from writing its headers to the API's check: rare, and each one is resent.
    assert live_fake.api_unauthorized <= max(2, 0.02 * len(statuses))
    # Renewed before expiry, two renewals a lifetime at most (at half its life), with room.
    assert 2 <= live_fake.token_calls <= 2.5 * lifetimes + 1


# --- errors, pickling, imports --------------------------------------------------------------


def test_refused_client_credentials_raise_invalid_client_from_the_call(
    fake: FakeOAuth2Provider,
) -> None:
    auth = OAuth2ClientCredentials(fake.token_url, "client-id", "wrong", store=MemoryStore())
    with pytest.raises(InvalidClient):
        run(auth, fake.api_url)
    assert fake.api_ok + fake.api_unauthorized == 0  # nothing sent unsigned


def test_refused_password_raises_invalid_grant_from_the_call(fake: FakeOAuth2Provider) -> None:
    auth = OAuth2Password(
        fake.token_url, "client-id", "alice", "wrong", client_secret="client-secret",
        store=MemoryStore(),
    )  # fmt: skip
    with pytest.raises(InvalidGrant):
        run(auth, fake.api_url)


def test_called_with_something_else_than_an_aiohttp_request_names_the_fix(
    fake: FakeOAuth2Provider,
) -> None:
    async def handler(request: object) -> object:
        return request

    with pytest.raises(ConfigurationError, match="middlewares=") as caught:
        asyncio.run(credentials(fake)(object(), handler))
    assert isinstance(caught.value, ValueError)


def test_auth_object_pickles_after_signing_aiohttp_requests(fake: FakeOAuth2Provider) -> None:
    auth = credentials(fake, store=None)  # (a ManualClock would not pickle: it holds a lock)
    assert run(auth, fake.api_url)[0] == 200
    copied = pickle.loads(pickle.dumps(auth))  # noqa: S301  # our own object
    assert run(copied, fake.api_url)[0] == 200


def test_importing_renewauth_does_not_import_aiohttp() -> None:
    code = "import renewauth, sys; assert 'aiohttp' not in sys.modules, 'aiohttp imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_no_log_record_of_the_middleware_holds_a_token(
    fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()
    with caplog.at_level(logging.DEBUG, logger="renewauth"):
        assert run(auth, fake.api_url)[0] == 200
    assert "resending once" in caplog.text
    assert auth.token is not None
    assert auth.token.access_token not in caplog.text
