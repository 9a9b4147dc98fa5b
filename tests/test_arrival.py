"""Tokens that arrive alive: checked again when a request leaves, and 401s that do not renew.

A request is signed before it waits for a pooled connection; under load the wait can outlast a
short token. These tests make that wait happen: with an injected clock that jumps between the
signing and the writing of the headers (an httpx request hook, a requests adapter that queues),
and for real, with saturated pools of real threads and tasks against the loopback fake.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
import requests.adapters
from hypothesis import given
from hypothesis import strategies as st

from renewauth import MemoryStore, OAuth2ClientCredentials, OAuth2Password
from renewauth.manager import REJECTION_INTERVAL
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._signing import challenge_error

from .helpers import ManualClock, send, settle

CLIENT_ID = "client-id"
CLIENT_SECRET = "client-secret"
USER = "alice"
PASSWORD = "alice-password"


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


def credentials(
    fake: FakeOAuth2Provider, clock: ManualClock | None = None, **options: Any
) -> OAuth2ClientCredentials:
    if clock is not None:
        options["clock"] = clock
    options.setdefault("store", MemoryStore())
    return OAuth2ClientCredentials(fake.token_url, CLIENT_ID, CLIENT_SECRET, **options)


class _QueueingAdapter(requests.adapters.HTTPAdapter):
    """Stands for urllib3's pool queue: time passes after signing, before the headers go."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__()
        self._clock, self._seconds = clock, seconds

    def send(self, request: requests.PreparedRequest, **options: Any) -> requests.Response:  # type: ignore[override]
        self._clock.advance(self._seconds)
        return super().send(request, **options)


def send_after_queueing(kind: str, auth: Any, url: str, clock: ManualClock, seconds: float) -> Any:
    """One request whose headers are written `seconds` (on `clock`) after it was signed."""
    if kind == "requests":
        with requests.Session() as session:
            session.mount("http://", _QueueingAdapter(clock, seconds))
            session.auth = auth
            return session.get(url, timeout=10)

    def queue(request: httpx.Request) -> None:
        clock.advance(seconds)

    if kind == "httpx":
        with httpx.Client(auth=auth, event_hooks={"request": [queue]}) as client:
            return client.get(url)

    async def aqueue(request: httpx.Request) -> None:
        queue(request)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(auth=auth, event_hooks={"request": [aqueue]}) as client:
            return await client.get(url)

    return asyncio.run(main())


# --- the token is checked again when the request leaves -------------------------------------


def test_request_that_queued_past_expiry_leaves_with_a_renewed_token(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    auth.get_token()
    response = send_after_queueing(kind, auth, fake.api_url, clock, 150.0)
    assert response.status_code == 200
    assert len(response.history) == 0  # no 401 and resend: the token was replaced in time
    assert fake.api_unauthorized == 0
    assert fake.token_calls == 2


def test_request_that_queued_into_the_soft_window_leaves_at_once_with_its_valid_token(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A leaving request holds a connection: it renews nothing while its token is valid."""
    auth = credentials(fake, clock)
    first = auth.get_token()
    response = send_after_queueing(kind, auth, fake.api_url, clock, 80.0)  # 20 s left
    assert response.status_code == 200
    assert fake.api_unauthorized == 0
    assert fake.token_calls == 1
    assert auth.token is first
    assert send(kind, auth, fake.api_url).status == 200  # signed in the soft window: renews
    settle()  # in the background
    assert fake.token_calls == 2


def test_request_that_did_not_queue_leaves_with_the_token_it_was_signed_with(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    signed = auth.get_token()
    response = send_after_queueing(kind, auth, fake.api_url, clock, 1.0)
    assert response.status_code == 200
    assert fake.token_calls == 1
    assert auth.token is signed


def test_token_with_less_than_the_arrival_margin_left_is_not_sent(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock, leeway=0.0)
    signed = auth.get_token()
    clock.advance(99.7)  # 0.3 s left of 100: a request leaving now could arrive too late
    departing = auth._manager.token_at_departure(signed)
    assert departing != signed
    assert fake.token_calls == 2


def test_token_at_departure_keeps_a_fresh_token_without_a_call(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    signed = auth.get_token()
    clock.advance(50.0)
    assert auth._manager.token_at_departure(signed) is signed
    assert fake.token_calls == 1


def test_httpx_callers_own_trace_still_runs_after_the_departure_check(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    events: list[str] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        events.append(event)

    with httpx.Client(auth=credentials(fake, clock)) as client:
        assert client.get(fake.api_url, extensions={"trace": trace}).status_code == 200
    assert "http11.send_request_headers.started" in events


def test_reused_prepared_request_keeps_one_response_hook(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request("GET", fake.api_url, auth=auth))
        for _ in range(300):
            auth(prepared)
            assert session.send(prepared, timeout=10).status_code == 200
    assert prepared.hooks["response"].count(auth._on_response) == 1


# --- 401s that a new token would not cure ---------------------------------------------------


def test_insufficient_scope_401_is_returned_without_a_renewal(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    for _ in range(20):
        reply = send(kind, auth, fake.api_url + "insufficient-scope")
        assert reply.status == 401
        assert reply.history == 0
    assert fake.token_calls == 1


def test_api_that_rejects_every_token_costs_one_renewal_per_interval(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock)
    for _ in range(20):
        assert send(kind, auth, fake.api_url + "always-401").status == 401
    assert fake.token_calls == 2  # the first token, and one renewal after the first 401
    clock.advance(REJECTION_INTERVAL)
    assert send(kind, auth, fake.api_url + "always-401").status == 401
    assert fake.token_calls == 3


def test_token_that_worked_is_renewed_at_once_after_each_revocation(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
    )
    for _ in range(3):
        assert send(kind, auth, fake.api_url).status == 200
        fake.revoke_access_tokens()  # no time passes: each token worked once, then was revoked
    reply = send(kind, auth, fake.api_url)
    assert (reply.status, reply.history) == (200, 1)
    assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 3}


def test_listed_403_still_renews_whatever_its_challenge(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = credentials(fake, clock, retry_statuses=(401, 403))
    assert send(kind, auth, fake.api_url + "forbidden").status == 403
    assert fake.token_calls == 2  # the 403 names insufficient_scope, but the user listed it


@given(st.text())
def test_challenge_error_never_raises(header: str) -> None:
    error = challenge_error(header)
    assert error is None or isinstance(error, str)


@given(
    realm=st.text(alphabet=st.characters(blacklist_characters='"\\'), max_size=20),
    error=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
    quoted=st.booleans(),
)
def test_challenge_error_reads_the_error_param_not_text_inside_a_quoted_one(
    realm: str, error: str, quoted: bool
) -> None:
    value = f'"{error}"' if quoted else error
    header = f'Bearer realm="{realm} error=decoy", error={value}, error_description="x"'
    assert challenge_error(header) == error
    assert challenge_error(f'Bearer realm="error={error}"') is None


# --- saturated pools, real time -------------------------------------------------------------

_RUN_SECONDS = 2.5
_MAX_REQUESTS_PER_WORKER = 400


@pytest.fixture
def live_fake() -> Iterator[FakeOAuth2Provider]:
    """1 s tokens on the real clock, a token endpoint that answers in 20 ms."""
    with FakeOAuth2Provider(token_lifetime=1.0, token_delay=0.02) as provider:
        yield provider


def _sync_load(get: Any, url: str, workers: int) -> list[int]:
    """Statuses of the answered requests; httpcore's own pool errors are left out (below)."""
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def work() -> None:
        start.wait()
        deadline = time.monotonic() + _RUN_SECONDS
        mine: list[int] = []
        for _ in range(_MAX_REQUESTS_PER_WORKER):
            if time.monotonic() >= deadline:
                break
            try:
                mine.append(get(url).status_code)
            except (httpx.ReadError, httpx.ReadTimeout):
                # httpcore 1.0.9's sync pool can close a connection it has just handed to a
                # queued request (encode/httpcore#1110): a static header meets it too. It
                # is not an answer, so it is not counted; an auth error would still raise.
                continue
            except Exception as exc:
                with lock:
                    errors.append(exc)
                break
        with lock:
            statuses.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return statuses


async def _async_load(get: Callable[[str], Awaitable[int]], url: str, tasks: int) -> list[int]:
    start = asyncio.Event()

    async def work() -> list[int]:
        await start.wait()
        deadline = time.monotonic() + _RUN_SECONDS
        mine = []
        for _ in range(_MAX_REQUESTS_PER_WORKER):
            if time.monotonic() >= deadline:
                break
            mine.append(await get(url))
        return mine

    running = [asyncio.create_task(work()) for _ in range(tasks)]
    start.set()
    return [status for mine in await asyncio.gather(*running) for status in mine]


@pytest.mark.parametrize("leeway", [30.0, 0.1])
@pytest.mark.parametrize(
    "shape",
    [
        "requests-32/4",
        "httpx-32/4",
        "httpx-async-200/10",
        "httpx2-32/4",
        "httpx2-async-200/10",
        "aiohttp-200/10",
    ],
)
def test_saturated_pool_gives_no_401_to_the_caller(
    shape: str, leeway: float, live_fake: FakeOAuth2Provider
) -> None:
    """Requests queue for a pool far smaller than the load, longer than a token lives."""
    auth = credentials(live_fake, leeway=leeway)
    url = live_fake.api_url
    began = time.monotonic()
    if shape == "requests-32/4":
        with requests.Session() as session:
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=4, pool_block=True)
            session.mount("http://", adapter)
            session.auth = auth
            statuses = _sync_load(lambda u: session.get(u, timeout=30), url, 32)
    elif shape.endswith("-32/4"):
        module = httpx2 if shape.startswith("httpx2") else httpx
        limits = module.Limits(max_connections=4)
        with module.Client(auth=auth, limits=limits, timeout=5) as client:
            statuses = _sync_load(client.get, url, 32)
    elif shape.startswith("aiohttp"):

        async def main() -> list[int]:
            connector = aiohttp.TCPConnector(limit=10)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(
                middlewares=(auth,), connector=connector, timeout=timeout
            ) as session:

                async def get(url: str) -> int:
                    async with session.get(url) as reply:
                        await reply.read()
                        return reply.status

                return await _async_load(get, url, 200)

        statuses = asyncio.run(main())
    else:
        module = httpx2 if shape.startswith("httpx2") else httpx

        async def main() -> list[int]:
            limits = module.Limits(max_connections=10)
            async with module.AsyncClient(auth=auth, limits=limits, timeout=30) as client:

                async def get(url: str) -> int:
                    return int((await client.get(url)).status_code)

                return await _async_load(get, url, 200)

        statuses = asyncio.run(main())
    # Token lifetimes the run spanned, read off the clock rather than assumed: on a loaded
    # machine the last queued requests finish seconds after the workers stop starting new
    # ones, and every lifetime of that tail renews too.
    lifetimes = (time.monotonic() - began) / 1.0 + 1.0  # and the cold start
    assert statuses, "no request was answered"
    assert set(statuses) == {200}
    # A 401 at the server needs a request to take longer than the arrival margin (0.1 s of a
    # 1 s token) from writing its headers to the API's check: rare, and each one is resent.
    assert live_fake.api_unauthorized <= max(2, 0.02 * len(statuses))
    # Two renewals a lifetime at most (a short token renews at half its life), with room.
    assert live_fake.token_calls <= 2.5 * lifetimes + 1


def test_signed_headers_pickle_and_copy_to_the_header_they_write(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A copied header reads and writes as the original (what else a copy keeps, so that
    its 401 is renewed too, is tested in test_crossing.py)."""
    auth = credentials(fake, clock)
    headers = requests.Request("GET", fake.api_url, auth=auth).prepare().headers
    sent = headers["Authorization"]
    for copied in (pickle.loads(pickle.dumps(headers)), copy.deepcopy(headers)):  # noqa: S301
        header = copied["Authorization"]
        assert isinstance(header, str)
        assert header == sent
        assert header.encode() == sent.encode()


def test_declined_renewal_still_takes_a_newer_token_from_the_shared_store(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    store = MemoryStore()
    first = credentials(fake, clock, store=store)
    second = credentials(fake, clock, store=store)  # another process, say, on the same store
    rejected = first.get_token()
    fake.revoke_access_tokens()
    unproven = first._manager.renew_rejected(rejected)  # a 401 renewal; no answer took it yet
    assert unproven is not None
    fake.revoke_access_tokens()
    second.invalidate()
    second.get_token()  # the other one renews and stores a token that works
    assert fake.token_calls == 3
    reply = send(kind, first, fake.api_url)
    assert (reply.status, reply.history) == (200, 1)  # resent with the stored token
    assert fake.token_calls == 3  # no token call: the store had one
