"""What only aiohttp's middleware needs proven, with real `aiohttp.ClientSession`s against the
loopback fakes: aiohttp runs it once per hop, redirects included, and it resends the same
`ClientRequest` itself; it checks the token again as a request leaves its connector's queue.

What every client must do runs over aiohttp too, as the kind "aiohttp" of the shared tests:
the cold start of 200 tasks, renewal before expiry, revocation and resend, a second 401, a
generator body never resent, a redirect elsewhere and its 401, typed errors
(`test_renewal.py`); the API key and its redirects (`test_origins.py`); the saturated
connector with 1 s tokens (`test_arrival.py`)."""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from renewauth import ConfigurationError, MemoryStore, OAuth2ClientCredentials, TokenAuth
from renewauth.providers import Vendorlink
from renewauth.testing import FakeOAuth2Provider, FakeOrderCloud, FakeVendorlink
from renewauth.transports._signing import QUEUED_AT_MOST

from .helpers import ManualClock


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


# --- what is sent once more, and what is not ------------------------------------------------


def test_a_seekable_file_body_is_resent_whole(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    fake.revoke_access_tokens()
    status, body = run(auth, fake.api_url, "PUT", data=io.BytesIO(b"0123456789"))
    assert (status, body["body_length"]) == (200, 10)
    assert fake.token_calls == 2


def test_401_a_new_token_cannot_cure_is_not_resent(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    assert run(credentials(fake, clock), fake.api_url + "insufficient-scope")[0] == 401
    assert fake.token_calls == 1
    assert fake.api_unauthorized == 1


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
        # Bounded, and the stalled connection let go on the way out: leaving `server` waits
        # for its connections, so a failure here must not leave one stalled.
        try:
            async with asyncio.timeout(60):
                await auth.aget_token()
                holder = asyncio.create_task(
                    fetch(session, f"http://127.0.0.1:{port}/", middlewares=())
                )
                await accepted.wait()  # the one connection is taken
                clock.advance(before)
                second = asyncio.create_task(fetch(session, url))
                await queued.wait()  # signed, waiting for the connection
                clock.advance(queued_for)
                answer.set()
                assert (await holder)[0] == 204
                return (await second)[0]
        finally:
            answer.set()


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
    is watched for (`QUEUED_AT_MOST`); the API's 401 renews and resends it."""
    auth = credentials(fake, clock)
    assert asyncio.run(_queued_behind_one_connection(auth, fake.api_url, clock, 0.0, 150.0)) == 200
    assert fake.api_unauthorized == 1
    assert fake.token_calls == 2


def test_a_request_is_watched_as_it_leaves_only_while_its_token_may_age_in_the_queue(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Watching a request as it leaves (its `send` swapped) costs as much as the rest of the
    middleware: a token far from its renewal leaves unwatched, one due within
    `QUEUED_AT_MOST` is watched."""
    auth = credentials(fake, clock)
    watched: list[bool] = []

    async def probe(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        # Inside renewauth's middleware: what it left on the request for the connection.
        watched.append(getattr(request.send, "__self__", None) is not request)
        return await handler(request)  # type: ignore[no-any-return]

    async def main() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth, probe)) as session:
            far = await fetch(session, fake.api_url)  # 100 s left (renewal at 70 s)
            clock.advance(70.0 - QUEUED_AT_MOST + 1.0)  # renewal due within QUEUED_AT_MOST
            near = await fetch(session, fake.api_url)
            return [far[0], near[0]]

    assert asyncio.run(main()) == [200, 200]
    assert watched == [False, True]
    assert fake.token_calls == 1  # still fresh: watched, not renewed


# --- errors, pickling, imports --------------------------------------------------------------


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
