"""Retrofit: legacy calls through requests, httpx, httpx2 and aiohttp get renewing tokens by URL
prefix."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import renewauth
from renewauth import BearerToken, ConfigurationError, MemoryStore, OAuth2Password
from renewauth._routing import TABLE
from renewauth.retrofit import _aiohttp
from renewauth.retrofit._httpx import Flavour
from renewauth.retrofit._plan import KNOWN_SCHEMES, names_a_grant, scheme_of
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, ManualClock

ORIGINALS = {
    "requests.Session.send": requests.Session.send,
    "requests.Session.request": requests.Session.request,
    "httpx.Client.send": httpx.Client.send,
    "httpx.AsyncClient.send": httpx.AsyncClient.send,
    "httpx2.Client.send": httpx2.Client.send,
    "httpx2.AsyncClient.send": httpx2.AsyncClient.send,
    "aiohttp.ClientSession._request": aiohttp.ClientSession._request,
}
# Every client a legacy program may call through: one test body drives each.
CLIENTS = (*KINDS, "httpx2", "httpx2-async", "aiohttp")


@pytest.fixture(autouse=True)
def _always_unpatched() -> Iterator[None]:
    yield
    renewauth.unpatch()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(
        token_lifetime=1.0, rotate_refresh_tokens=True, clock=clock
    ) as provider:
        yield provider


def _auth(fake: FakeOAuth2Provider, clock: ManualClock, *, dpop: bool = False) -> OAuth2Password:
    return OAuth2Password(
        fake.token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=MemoryStore(),
        clock=clock,
        leeway=0.1,
        dpop=dpop,
    )


def _legacy_calls(url: str, session: requests.Session, client: httpx.Client) -> list[int]:
    """What legacy code does: no auth anywhere."""

    async def async_call() -> int:
        async with httpx.AsyncClient() as async_client:
            return (await async_client.get(url)).status_code

    return [
        requests.get(url, timeout=10).status_code,
        session.get(url, timeout=10).status_code,
        httpx.get(url).status_code,
        client.get(url).status_code,
        asyncio.run(async_call()),
    ]


def test_patch_authenticates_every_kind_of_legacy_call_over_many_lifetimes(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    session = requests.Session()  # made before the patch, as legacy code does
    client = httpx.Client()
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    statuses = []
    for _ in range(40):  # 200 calls over 4 token lifetimes
        statuses += _legacy_calls(fake.api_url + "orders", session, client)
        clock.advance(0.1)
    assert statuses == [200] * 200
    assert fake.api_unauthorized == 0
    assert fake.token_calls <= 1.2 * 4 + 1
    assert fake.stale_refresh_tokens == 0


def test_unpatch_restores_the_original_methods_and_calls_are_unauthenticated_again(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    assert requests.Session.send is not ORIGINALS["requests.Session.send"]
    renewauth.unpatch()
    assert {
        "requests.Session.send": requests.Session.send,
        "requests.Session.request": requests.Session.request,
        "httpx.Client.send": httpx.Client.send,
        "httpx.AsyncClient.send": httpx.AsyncClient.send,
        "httpx2.Client.send": httpx2.Client.send,
        "httpx2.AsyncClient.send": httpx2.AsyncClient.send,
        "aiohttp.ClientSession._request": aiohttp.ClientSession._request,
    } == ORIGINALS
    assert [_call(kind, "GET", fake.api_url).status for kind in CLIENTS] == [401] * len(CLIENTS)


def test_patching_twice_is_harmless_and_one_unpatch_restores(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = _auth(fake, clock)
    renewauth.patch({fake.api_url: auth})
    renewauth.patch({fake.api_url: auth})
    assert requests.get(fake.api_url, timeout=10).status_code == 200
    assert fake.token_calls == 1
    renewauth.unpatch()
    assert requests.Session.send is ORIGINALS["requests.Session.send"]


def test_context_manager_unpatches_on_exit(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    with renewauth.patch({fake.api_url: _auth(fake, clock)}):
        assert httpx.get(fake.api_url).status_code == 200
    assert httpx.Client.send is ORIGINALS["httpx.Client.send"]


def test_an_origin_no_prefix_matches_never_receives_a_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    with FakeOAuth2Provider() as elsewhere:
        renewauth.patch({fake.api_url: _auth(fake, clock)})
        for reply in (
            requests.get(f"{elsewhere.base_url}/echo-headers", timeout=10),
            httpx.get(f"{elsewhere.base_url}/echo-headers"),
        ):
            assert "authorization" not in reply.json()
        assert fake.token_calls == 0


def test_prefix_matches_only_at_a_path_segment_boundary(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url + "v1/": _auth(fake, clock)})
    assert requests.get(fake.api_url + "v1/items", timeout=10).status_code == 200
    assert requests.get(fake.api_url + "v1", timeout=10).status_code == 200
    assert requests.get(fake.api_url + "v10/items", timeout=10).status_code == 401


def test_the_longest_prefix_wins(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    renewauth.patch(
        {fake.api_url: BearerToken("not-valid"), fake.api_url + "v1/": _auth(fake, clock)}
    )
    assert httpx.get(fake.api_url + "v1/items").status_code == 200
    assert httpx.get(fake.api_url + "other").status_code == 401


def test_calls_that_bring_their_own_auth_are_left_alone(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    basic = ("user", "pass")
    assert requests.get(fake.api_url, auth=basic, timeout=10).status_code == 401
    assert (
        requests.get(fake.api_url, headers={"Authorization": "Basic eDp5"}, timeout=10).status_code
        == 401
    )
    assert httpx.get(fake.api_url, auth=basic).status_code == 401
    with httpx.Client(auth=BearerToken("own-token")) as client:
        assert client.get(fake.api_url).status_code == 401
    session = requests.Session()
    session.auth = BearerToken("own-token")
    assert session.get(fake.api_url, timeout=10).status_code == 401
    assert fake.token_calls == 0


def test_a_stale_bearer_token_left_in_legacy_code_is_replaced(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    stale = {"Authorization": "Bearer pasted-in-last-month"}
    assert requests.get(fake.api_url, headers=stale, timeout=10).status_code == 200
    assert httpx.get(fake.api_url, headers=stale).status_code == 200


def test_a_revocation_is_absorbed_in_legacy_calls(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    assert requests.get(fake.api_url, timeout=10).status_code == 200
    fake.revoke_access_tokens()
    assert requests.get(fake.api_url, timeout=10).status_code == 200
    fake.revoke_access_tokens()
    assert httpx.get(fake.api_url).status_code == 200


def test_a_prefix_that_covers_the_token_endpoint_does_not_recurse(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.base_url + "/": _auth(fake, clock)})  # the whole origin
    assert requests.get(fake.api_url, timeout=10).status_code == 200
    assert httpx.get(fake.api_url).status_code == 200
    assert fake.token_calls == 1


def test_patch_and_unpatch_are_safe_while_threads_send(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = _auth(fake, clock)
    stop = threading.Event()
    errors: list[BaseException] = []

    def send() -> None:
        while not stop.is_set():
            try:
                requests.get(fake.api_url, timeout=10)
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(50):
        renewauth.patch({fake.api_url: auth})
        renewauth.unpatch()
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert requests.Session.send is ORIGINALS["requests.Session.send"]


@pytest.mark.parametrize(
    ("routes", "match"),
    [
        ({"api.example.com/v1": BearerToken("x")}, "absolute http"),
        ({"https://api.example.com/": object()}, "auth objects"),
    ],
)
def test_patch_refuses_bad_routes_naming_the_fix(routes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        renewauth.patch(routes)  # type: ignore[arg-type]
    assert requests.Session.send is ORIGINALS["requests.Session.send"]


# --- the SDKs people run: each row of issue 12's table, as a stand-in -----------------------

USERS = {"alice": "alice-password", "bob": "bob-password"}


@pytest.fixture
def two_users(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    """An API that demands a live token; alice is renewauth's principal, bob the SDK's own."""
    with FakeOAuth2Provider(token_lifetime=1.0, users=USERS, clock=clock) as provider:
        yield provider


def _sdk_token(fake: FakeOAuth2Provider, user: str = "bob") -> str:
    """The token an SDK fetches for itself (its own token call, outside every prefix)."""
    reply = requests.post(
        fake.token_url,
        data={
            "grant_type": "password",
            "username": user,
            "password": USERS[user],
            "client_id": "client-id",
            "client_secret": "client-secret",
        },
        timeout=10,
    )
    reply.raise_for_status()
    return str(reply.json()["access_token"])


class _NoOpAuth(requests.auth.AuthBase):
    """PyGithub's pattern: an auth object that returns the request unchanged."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class _ResilientSession(requests.Session):
    """jira's pattern: a `requests.Session` subclass that overrides `request`."""

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("timeout", 10)
        return super().request(method, url, **kwargs)


def _keycloak_session() -> requests.Session:
    session = requests.Session()
    session.auth = lambda request: request  # python-keycloak sync: only to skip ~/.netrc
    return session


def _github_session() -> requests.Session:
    session = requests.Session()
    session.auth = _NoOpAuth()
    return session


SDK_SESSIONS = {
    "python-keycloak-lambda": (_keycloak_session, "_keycloak_session.<locals>.<lambda>"),
    "pygithub-authbase": (_github_session, "_NoOpAuth"),
    "jira-session-subclass": (_ResilientSession, None),
}


def _explained(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "renewauth.retrofit" and record.levelname == "INFO"
    ]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "renewauth.retrofit" and record.levelname == "WARNING"
    ]


@pytest.mark.parametrize("sdk", SDK_SESSIONS, ids=list(SDK_SESSIONS))
def test_patch_signs_sdk_sessions_whose_own_auth_adds_no_header(
    sdk: str,
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A no-op `session.auth` (set only to skip ~/.netrc) no longer switches retrofit off."""
    make_session, own_auth = SDK_SESSIONS[sdk]
    session = make_session()
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, explain=True)
    statuses = []
    for _ in range(30):  # 3 token lifetimes
        reply = session.get(two_users.api_url + "realms", timeout=10)
        statuses.append((reply.status_code, reply.json().get("subject")))
        clock.advance(0.1)
    assert statuses == [(200, "alice")] * 30
    assert two_users.api_unauthorized == 0
    assert 3 <= two_users.token_calls <= 5
    expected = f"prefix '{two_users.api_url}'"
    if own_auth is not None:
        expected += f": its own auth ({own_auth}) added no Authorization header"
    assert _explained(caplog) == [f"{two_users.base_url}: signed by {expected}"]


def test_patch_leaves_an_auth_that_answers_challenges_alone(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Digest adds its header only after a 401: its first request carries none, yet it is
    the caller's own auth, not a no-op."""
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, explain=True)
    digest = requests.auth.HTTPDigestAuth("user", "pass")
    assert requests.get(two_users.api_url, auth=digest, timeout=10).status_code == 401
    assert two_users.token_calls == 0
    assert _explained(caplog) == [
        f"{two_users.base_url}: left alone: brings its own auth (HTTPDigestAuth)"
    ]


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any  # the JSON the server sent
    before: int  # answers before this one that the library keeps (redirects, a resend's 401)


async def _aiohttp_call(method: str, url: str, **options: Any) -> _Answer:
    if "content" in options:
        options["data"] = options.pop("content")
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **options) as reply,
    ):
        return _Answer(reply.status, await reply.json(), len(reply.history))


def _call(kind: str, method: str, url: str, **options: Any) -> _Answer:
    """One legacy call through the client `kind` names (`CLIENTS`)."""
    if kind == "requests":
        if "content" in options:
            options["data"] = options.pop("content")
        reply = requests.request(method, url, timeout=10, **options)
        return _Answer(reply.status_code, reply.json(), len(reply.history))
    if kind == "aiohttp":
        return asyncio.run(_aiohttp_call(method, url, **options))
    module: Any = httpx2 if kind.startswith("httpx2") else httpx
    if not kind.endswith("-async"):
        answer = module.request(method, url, **options)
        return _Answer(answer.status_code, answer.json(), len(answer.history))

    async def call() -> _Answer:
        async with module.AsyncClient() as client:
            answer = await client.request(method, url, **options)
            return _Answer(answer.status_code, answer.json(), len(answer.history))

    return asyncio.run(call())


def _get(kind: str, url: str, headers: dict[str, str]) -> tuple[int, object, int]:
    """One legacy call with `headers`: (status, the principal the API saw, answers before)."""
    answer = _call(kind, "GET", url, headers=headers)
    return answer.status, answer.body.get("subject"), answer.before


@pytest.mark.parametrize("kind", CLIENTS)
def test_default_keeps_an_sdk_bearer_token_the_api_accepts_and_says_so_once(
    kind: str,
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ordercloud-python's pattern: the SDK's own valid token keeps the SDK's principal."""
    own = {"Authorization": f"Bearer {_sdk_token(two_users)}"}
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    replies = [_get(kind, two_users.api_url + "me", own) for _ in range(20)]
    assert replies == [(200, "bob", 0)] * 20
    assert two_users.token_calls == 1  # the SDK's own; renewauth fetched none
    [warning] = _warnings(caplog)
    assert f"requests to {two_users.base_url} carry their own Bearer token" in warning
    assert "existing_bearer='keep-until-401'" in warning
    assert "patch(…, existing_bearer='keep')" in warning
    assert "patch(…, existing_bearer='replace')" in warning


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_rejected_program_token_is_resent_once_even_when_ours_is_rejected_too(
    kind: str, two_users: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """One resend per request: the program's token, then renewauth's, and the second 401
    goes back to the program, whatever the API says to renewauth's token."""
    stale = {"Authorization": "Bearer pasted-in-last-month"}
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    answer = _call(kind, "GET", two_users.api_url + "always-401", headers=stale)
    assert answer.status == 401
    assert two_users.api_unauthorized == 2  # sent, resent once with renewauth's token


@pytest.mark.parametrize("kind", CLIENTS)
def test_default_replaces_a_stale_pasted_bearer_token_once_the_api_rejects_it(
    kind: str,
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A legacy script with a token pasted last month: one 401, then renewauth's token."""
    stale = {"Authorization": "Bearer pasted-in-last-month"}
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    replies = [_get(kind, two_users.api_url + "orders", stale) for _ in range(10)]
    rejected = 0 if kind == "aiohttp" else 1  # aiohttp keeps only redirects in `history`
    assert replies == [(200, "alice", rejected)] + [(200, "alice", 0)] * 9
    assert two_users.api_unauthorized == 1
    assert two_users.token_calls == 1
    existing, rejected = _warnings(caplog)
    assert "existing_bearer='keep-until-401'" in existing
    assert f"{two_users.base_url} rejected the program's own Bearer token" in rejected
    assert f"prefix '{two_users.api_url}'" in rejected
    assert "patch(…, existing_bearer='keep')" in rejected


@pytest.mark.parametrize("kind", CLIENTS)
def test_existing_bearer_keep_never_replaces_the_programs_token(
    kind: str,
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stale = {"Authorization": "Bearer pasted-in-last-month"}
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, existing_bearer="keep")
    replies = [_get(kind, two_users.api_url + "orders", stale) for _ in range(5)]
    assert replies == [(401, None, 0)] * 5
    assert two_users.token_calls == 0
    [warning] = _warnings(caplog)
    assert "renewauth leaves it and never sends the token" in warning
    assert "existing_bearer='keep-until-401'" in warning
    assert "existing_bearer='replace'" in warning


@pytest.mark.parametrize("kind", CLIENTS)
def test_existing_bearer_replace_sends_renewauths_token_and_names_the_principal_change(
    kind: str,
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = {"Authorization": f"Bearer {_sdk_token(two_users)}"}
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, existing_bearer="replace")
    replies = [_get(kind, two_users.api_url + "me", own) for _ in range(5)]
    assert replies == [(200, "alice", 0)] * 5
    assert two_users.token_calls == 2  # the SDK's, then renewauth's
    [warning] = _warnings(caplog)
    assert "the API sees that principal instead of the program's" in warning
    assert "existing_bearer='keep'" in warning


def test_patch_refuses_an_unknown_existing_bearer() -> None:
    with pytest.raises(ConfigurationError, match=r"'keep-until-401' .*'keep' or 'replace'"):
        renewauth.patch({"https://api.example.com/": BearerToken("x")}, existing_bearer="drop")  # type: ignore[arg-type]
    assert requests.Session.send is ORIGINALS["requests.Session.send"]


def test_a_callable_given_to_an_httpx_client_runs_once_and_adds_nothing(
    two_users: FakeOAuth2Provider, clock: ManualClock
) -> None:
    calls: list[str] = []

    def no_op(request: httpx.Request) -> httpx.Request:
        calls.append(str(request.url))
        return request

    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    with httpx.Client(auth=no_op) as client:
        assert client.get(two_users.api_url + "x").json()["subject"] == "alice"
    assert calls == [two_users.api_url + "x"]


# --- httpx2 and aiohttp, the optional clients ------------------------------------------------


def test_httpx2_clients_get_renewing_tokens_and_a_resend_after_a_revocation(
    two_users: FakeOAuth2Provider, clock: ManualClock
) -> None:
    client = httpx2.Client()  # made before the patch, as legacy code does
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})

    async def async_call() -> int:
        async with httpx2.AsyncClient() as async_client:
            return (await async_client.get(two_users.api_url + "x")).status_code

    statuses = []
    for _ in range(15):  # 3 token lifetimes
        statuses += [
            httpx2.get(two_users.api_url + "x").status_code,
            client.get(two_users.api_url + "x").status_code,
            asyncio.run(async_call()),
        ]
        clock.advance(0.1)
    assert statuses == [200] * 45
    two_users.revoke_access_tokens()  # a 401 through httpx2: renewed and resent once
    reply = httpx2.post(two_users.api_url + "x", content=b"body")
    assert (reply.status_code, len(reply.history), reply.json()["body_length"]) == (200, 1, 4)
    assert two_users.api_unauthorized == 1
    assert 3 <= two_users.token_calls <= 5
    client.close()


def test_httpx2_clients_get_the_route_auth_itself_when_it_is_an_httpx2_auth(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """Whether or not renewauth's objects are `httpx2.Auth`s, httpx2's clients take what the
    retrofit gives them; one that is an `httpx2.Auth` is given as it is."""
    auth = _auth(fake, clock)
    renewauth.patch({fake.api_url: auth})
    [route] = TABLE.routes
    given = Flavour(httpx2).signed(route)
    assert isinstance(given, httpx2.Auth)
    assert (given is auth) == isinstance(auth, httpx2.Auth)
    with httpx2.Client(auth=given) as client:
        assert client.get(fake.api_url + "x").json()["subject"] == "alice"


def _aiohttp_run(*calls: Any) -> list[Any]:
    """Run `calls(session)` one after another on one `ClientSession`, in one event loop."""

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            return [await call(session) for call in calls]

    return asyncio.run(run())


async def _status(response: Any) -> tuple[int, object]:
    async with response as reply:
        body = await reply.json()
        return reply.status, body.get("subject") if isinstance(body, dict) else None


def test_aiohttp_sessions_get_renewing_tokens_over_many_lifetimes(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    url = fake.api_url + "orders"

    async def program() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:  # made before the patch
            renewauth.patch({fake.api_url: _auth(fake, clock)})
            # 20 tasks at a cold start: one token call between them
            statuses += [
                status
                for status, _ in await asyncio.gather(
                    *(_status(session.get(url)) for _ in range(20))
                )
            ]
            assert fake.token_calls == 1
            for _ in range(30):  # 3 token lifetimes
                statuses += [
                    (await _status(session.get(url)))[0],
                    (await _status(session.request("GET", url)))[0],
                    (await _status(aiohttp.request("GET", url)))[0],  # a session of its own
                ]
                clock.advance(0.1)
        return statuses

    assert asyncio.run(program()) == [200] * 110
    assert fake.api_unauthorized == 0
    assert 3 <= fake.token_calls <= 5
    assert fake.stale_refresh_tokens == 0


def test_aiohttp_request_rejected_after_a_revocation_is_renewed_and_resent_once(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.api_url: _auth(fake, clock)})

    async def posted(session: aiohttp.ClientSession) -> tuple[int, int]:
        async with session.post(fake.api_url + "x", data=b"body") as reply:
            return reply.status, (await reply.json())["body_length"]

    def revoke(session: aiohttp.ClientSession) -> Any:
        fake.revoke_access_tokens()
        return posted(session)

    assert _aiohttp_run(posted, revoke) == [(200, 4), (200, 4)]
    assert fake.api_unauthorized == 1
    assert fake.token_calls == 2


def test_aiohttp_stream_with_a_rejected_bearer_of_its_own_is_not_resent_and_says_so(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An async generator is read as it is sent: the 401 goes back to the program, and the
    next request is signed in place of the token the API rejected."""
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    stale = {"Authorization": "Bearer pasted-in-last-month"}

    async def chunks() -> Any:
        yield b"streamed "
        yield b"body"

    async def program() -> list[tuple[int, object]]:
        async with aiohttp.ClientSession(headers=stale) as session:
            return [
                await _status(session.post(two_users.api_url + "x", data=chunks())),
                await _status(session.post(two_users.api_url + "x", data=b"body")),
            ]

    assert asyncio.run(program()) == [(401, None), (200, "alice")]
    assert two_users.api_unauthorized == 1
    _, rejected, not_resent = _warnings(caplog)
    assert f"{two_users.base_url} rejected the program's own Bearer token" in rejected
    assert f"{two_users.base_url} answered 401; not resending: the request body is a" in (
        not_resent
    )


# aiohttp 3.14 deprecates BasicAuth and `auth=`; programs still use them until 4.0.
@pytest.mark.filterwarnings(
    "ignore:.*is deprecated and will be removed in (v4|aiohttp 4.0):DeprecationWarning"
)
def test_aiohttp_calls_under_no_prefix_and_basic_auth_are_left_alone(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, explain=True)

    async def program() -> list[tuple[int, object]]:
        basic = aiohttp.BasicAuth("user", "pass")
        async with aiohttp.ClientSession() as session:
            replies = [await _status(session.get(two_users.base_url + "/echo-headers"))]
            async with session.get(two_users.base_url + "/echo-headers") as echoed:
                assert "authorization" not in await echoed.json()
            replies.append(await _status(session.get(two_users.api_url, auth=basic)))
        async with aiohttp.ClientSession(auth=basic) as session:  # the session's own
            replies.append(await _status(session.get(two_users.api_url)))
        return replies

    replies = asyncio.run(program())
    assert replies == [(200, None), (401, None), (401, None)]
    assert two_users.token_calls == 0
    assert _explained(caplog) == [
        f"{two_users.base_url}: left alone: matches no prefix; nearest: prefix "
        f"'{two_users.api_url}', which covers other paths on this origin",
        f"{two_users.base_url}: left alone: brings its own auth (BasicAuth), which set a "
        "non-Bearer Authorization (scheme: Basic)",
    ]
    [warning] = _warnings(caplog)
    assert "answered 401 to a request under prefix" in warning
    assert "that renewauth did not sign: brings its own auth (BasicAuth)" in warning


def test_aiohttp_per_request_middlewares_are_still_retrofitted_after_the_programs_own(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """The program's middlewares see the request before renewauth signs it, and the answer
    after; a call's own `middlewares=` (which replace the session's) changes nothing."""
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    seen: list[tuple[str, str | None, int]] = []

    def recording(name: str) -> Any:
        async def middleware(request: Any, handler: Any) -> Any:
            authorization = request.headers.get("Authorization")
            response = await handler(request)
            seen.append((name, authorization, response.status))
            return response

        return middleware

    async def program() -> list[tuple[int, object]]:
        async with aiohttp.ClientSession(middlewares=(recording("session"),)) as session:
            return [
                await _status(session.get(fake.api_url + "x")),
                await _status(session.get(fake.api_url + "x", middlewares=(recording("call"),))),
                await _status(session.get(fake.api_url + "x", middlewares=())),
            ]

    assert asyncio.run(program()) == [(200, "alice")] * 3
    assert seen == [("session", None, 200), ("call", None, 200)]
    assert fake.token_calls == 1


def test_aiohttp_session_whose_own_middleware_is_a_renewauth_object_is_not_signed_twice(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = _auth(two_users, clock)
    renewauth.patch({two_users.api_url: auth}, explain=True)
    own = BearerToken("the-programs-own-static-token")
    digest = aiohttp.DigestAuthMiddleware("user", "pass")

    async def program() -> list[tuple[int, object]]:
        replies = []
        for middleware in (auth, own, digest):
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                replies.append(await _status(session.get(two_users.api_url + "x")))
        return replies

    assert asyncio.run(program()) == [(200, "alice"), (401, None), (401, None)]
    assert two_users.token_calls == 1  # the route's own object signed its request, once
    assert _explained(caplog) == [
        f"{two_users.base_url}: left alone: brings its own auth (BearerToken)",
        f"{two_users.base_url}: left alone: brings its own auth (DigestAuthMiddleware)",
    ]


def test_aiohttp_redirect_to_another_origin_never_carries_the_routes_token(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """aiohttp builds each hop's request afresh from the program's headers; each hop is
    judged on its own URL."""
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    with FakeOAuth2Provider() as elsewhere:
        away = f"{elsewhere.base_url}/echo-headers"

        async def program(session: aiohttp.ClientSession) -> list[Any]:
            async with session.get(fake.api_url + f"redirect?to={fake.api_url}x") as inside:
                first = (inside.status, len(inside.history), (await inside.json())["subject"])
            async with session.get(fake.api_url + f"redirect?to={away}") as outside:
                second = (outside.status, len(outside.history), await outside.json())
            return [first, second]

        [inside, (status, hops, echoed)] = _aiohttp_run(program)[0]
    assert inside == (200, 1, "alice")
    assert (status, hops) == (200, 1)
    assert "authorization" not in {name.lower() for name in echoed}


def test_an_aiohttp_without_client_middlewares_is_refused_naming_the_version_it_needs() -> None:
    """aiohttp before 3.12 has no `middlewares=`: it is left unpatched, with a WARNING."""

    class ClientSession:  # aiohttp 3.11's, as far as retrofit looks
        async def _request(self, method: str, str_or_url: str, **kwargs: Any) -> None:
            raise AssertionError("never called")

    old = types.SimpleNamespace(__version__="3.11.18", ClientSession=ClientSession)
    with pytest.raises(_aiohttp.Unsupported, match=r"3\.11\.18 has no client middlewares \(3\.12"):
        _aiohttp.targets(old)  # type: ignore[arg-type]


PATCHED_BEFORE_IMPORT = """
import asyncio, sys
import renewauth
from renewauth import MemoryStore, OAuth2Password

library, token_url, url = sys.argv[1:4]
renewauth.patch({url: OAuth2Password(token_url, "client-id", "alice", "alice-password",
                                    client_secret="client-secret", store=MemoryStore())})
imported_early = library in sys.modules  # renewauth must not import an optional client


def call():
    if library == "httpx2":
        import httpx2

        return httpx2.get(url).status_code

    import aiohttp

    async def get():
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status

    return asyncio.run(get())


signed = call()
renewauth.unpatch()
print(imported_early, signed, call())
"""


@pytest.mark.parametrize("library", ["httpx2", "aiohttp"])
def test_an_optional_client_imported_after_the_patch_is_patched_on_import(
    library: str, tmp_path: pathlib.Path
) -> None:
    script = tmp_path / "program.py"
    script.write_text(PATCHED_BEFORE_IMPORT)
    with FakeOAuth2Provider() as fake:
        result = subprocess.run(
            [sys.executable, str(script), library, fake.token_url, fake.api_url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert (result.returncode, result.stdout.split()) == (0, ["False", "200", "401"]), result.stderr


# --- diagnostics -----------------------------------------------------------------------------


def test_explain_names_the_nearest_prefix_when_only_a_loopback_alias_differs(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, explain=True)
    aliased = two_users.api_url.replace("127.0.0.1", "localhost")
    assert requests.get(aliased + "x", timeout=10).status_code == 401
    assert requests.get(aliased + "y", timeout=10).status_code == 401  # explained once
    assert requests.get(two_users.base_url + "/other", timeout=10).status_code == 404
    assert _explained(caplog) == [
        f"{two_users.base_url.replace('127.0.0.1', 'localhost')}: left alone: matches no "
        f"prefix; nearest: prefix '{two_users.api_url}', which differs in host (another name "
        "for loopback)",
        f"{two_users.base_url}: left alone: matches no prefix; nearest: prefix "
        f"'{two_users.api_url}', which covers other paths on this origin",
    ]


def test_explain_says_when_requests_added_basic_from_netrc(
    two_users: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    renewauth.patch({two_users.api_url: _auth(two_users, clock)}, explain=True)
    assert requests.get(two_users.api_url, timeout=10).status_code == 401
    assert two_users.token_calls == 0
    [line] = _explained(caplog)
    assert line.startswith(
        f"{two_users.base_url}: left alone: carries an Authorization (Basic) that requests took"
    )
    assert "~/.netrc" in line
    assert "netrc-pass" not in caplog.text


def test_explain_lines_are_debug_without_explain(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    renewauth.patch({two_users.api_url: _auth(two_users, clock)})
    requests.get(two_users.api_url, timeout=10)
    assert _explained(caplog) == []
    assert any(
        record.levelname == "DEBUG" and "signed by prefix" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_token_failure_in_legacy_code_is_logged_at_error_once_with_the_fix(
    kind: str, two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Legacy code wraps the exception in its own ("Can't connect to server"): the log says
    what really failed, once per failure in a row."""
    auth = OAuth2Password(
        two_users.token_url,
        "client-id",
        "alice",
        "wrong-password",
        client_secret="client-secret",
        store=MemoryStore(),
        clock=clock,
    )
    renewauth.patch({two_users.api_url: auth})
    for _ in range(3):
        with pytest.raises(renewauth.InvalidGrant):
            _get(kind, two_users.api_url, {})
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert [record.name for record in errors] == ["renewauth.retrofit"]
    message = errors[0].getMessage()
    assert f"no token for requests under prefix '{two_users.api_url}': " in message
    assert "InvalidGrant" in message
    assert "password" in message  # the fix the error names
    assert "wrong-password" not in caplog.text


def test_a_token_failure_is_logged_again_after_a_recovery(
    two_users: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = OAuth2Password(
        two_users.token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=MemoryStore(),
        clock=clock,
        retries=0,
        leeway=0.1,
    )
    renewauth.patch({two_users.api_url: auth})

    def errors() -> int:
        return sum(record.levelname == "ERROR" for record in caplog.records)

    two_users.fail_token_requests(503, times=-1)
    for _ in range(3):
        with pytest.raises(renewauth.TokenEndpointUnavailable):
            requests.get(two_users.api_url, timeout=10)
    assert errors() == 1
    two_users.clear_failures()
    assert requests.get(two_users.api_url, timeout=10).status_code == 200
    clock.advance(1.5)  # past the token's life: the next call must renew
    two_users.fail_token_requests(503, times=-1)
    with pytest.raises(renewauth.TokenEndpointUnavailable):
        requests.get(two_users.api_url, timeout=10)
    assert errors() == 2


def test_a_prepared_request_sent_again_keeps_one_hook_and_is_never_taken_for_a_programs_own(
    fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Its header is renewauth's from the last send: not a Bearer of the program's own, even
    after the token it holds was renewed."""
    session = requests.Session()
    prepared = session.prepare_request(requests.Request("GET", fake.api_url + "x"))
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    statuses = []
    for _ in range(25):  # 5 token lifetimes
        statuses.append(session.send(prepared, timeout=10).status_code)
        clock.advance(0.2)
        # Another call renews first: the prepared request still holds the older token.
        statuses.append(requests.get(fake.api_url + "y", timeout=10).status_code)
    assert statuses == [200] * 50
    assert len(prepared.hooks["response"]) == 1
    assert fake.api_unauthorized == 0
    assert 5 <= fake.token_calls <= 7
    assert _warnings(caplog) == []


@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
def test_a_same_origin_redirect_keeps_the_token_and_a_cross_origin_one_drops_it(
    fake: FakeOAuth2Provider, clock: ManualClock, dpop: bool
) -> None:
    """requests drops `Authorization` itself; the `DPoP` proof is a header it does not
    know, so only renewauth's own removal keeps it from the other origin."""
    with contextlib.ExitStack() as fakes:
        home = fake
        if dpop:
            home = fakes.enter_context(
                FakeOAuth2Provider(token_type="DPoP", dpop_nonces=True, clock=clock)
            )
        renewauth.patch({home.api_url: _auth(home, clock, dpop=dpop)})
        same = requests.get(home.api_url + f"redirect?to={home.base_url}/echo-headers", timeout=10)
        assert (same.status_code, len(same.history)) == (200, 1)
        assert {"authorization", *(["dpop"] if dpop else [])} <= set(same.json())
        same = requests.get(home.api_url + f"redirect?to={home.api_url}x", timeout=10)
        assert (same.status_code, len(same.history)) == (200, 1)
        with FakeOAuth2Provider() as elsewhere:
            target = f"{elsewhere.base_url}/echo-headers"
            away = requests.get(home.api_url + f"redirect?to={target}", timeout=10)
        assert away.status_code == 200
        assert "authorization" not in away.json()
        assert "dpop" not in away.json()


@given(authorization=st.text(max_size=60))
def test_the_scheme_named_in_a_log_line_is_a_known_scheme_or_a_fixed_phrase(
    authorization: str,
) -> None:
    """The first word of a header without a scheme may be a secret: it is never echoed."""
    named = scheme_of(authorization)
    assert named in {*KNOWN_SCHEMES.values(), "a value without a scheme", "a scheme of its own"}


# --- a program's own token requests, and what it is told when a request it sends alone fails --


def _post(kind: str, url: str, **options: Any) -> _Answer:
    return _call(kind, "POST", url, **options)


@pytest.mark.parametrize("kind", CLIENTS)
def test_programs_own_token_request_under_a_prefix_is_never_signed(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # shopware-api-client's pattern: the SDK posts its client credentials from a client with
    # no auth, to a token endpoint the prefix covers. It must not carry renewauth's token.
    renewauth.patch({fake.base_url + "/": _auth(fake, clock)}, explain=True)
    assert requests.get(fake.api_url + "orders", timeout=10).status_code == 200  # signed
    assert fake.token_calls == 1
    form = {"grant_type": "client_credentials", "client_id": "client-id"}
    form["client_secret"] = "client-secret"
    reply = _post(kind, fake.token_url, data=form)
    assert reply.status == 200
    assert fake.last_token_request is not None
    assert "authorization" not in fake.last_token_request.headers
    # The same for a token request to another path, told by its form or JSON body.
    for body in ({"data": form}, {"json": form}):
        echoed = _post(kind, fake.base_url + "/echo-headers", **body)
        assert "authorization" not in {name.lower() for name in echoed.body}
    assert fake.token_calls == 2  # renewauth's one and the program's own
    explained = " | ".join(_explained(caplog))
    assert "a request to the token endpoint of prefix" in explained
    assert "a token request of the program's own (its body names a grant_type)" in explained


@pytest.mark.parametrize("kind", CLIENTS)
def test_request_left_alone_that_the_api_rejects_is_warned_about_once_with_the_reason(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # PyGithub's pattern with a pasted token: `Authorization: token …`, not Bearer. renewauth
    # leaves a scheme of the program's own alone; the program sees only 401s, so say why.
    renewauth.patch({fake.api_url: _auth(fake, clock)})
    headers = {"Authorization": "token ghp_pasted-last-month"}
    replies = [_get(kind, fake.api_url + "user", headers)[0] for _ in range(3)]
    assert replies == [401] * 3
    assert fake.token_calls == 0
    [warning] = _warnings(caplog)
    assert "answered 401 to a request under prefix" in warning
    assert "that renewauth did not sign: carries a non-Bearer Authorization" in warning
    assert "(scheme: Token)" in warning
    assert "ghp_pasted" not in caplog.text


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    "body",
    [
        {"json": {"settings": {"grant_type": "client_credentials"}}},  # nested: an API's data
        {"json": {"callback": "https://a.example/?b=1&grant_type=code"}},  # inside a string
        {"json": [{"grant_type": "password"}]},  # not an object at the top
        {"content": b"grant_type=password", "headers": {"Content-Type": "text/plain"}},
        {"data": {"grant_type": "x" * 9000}},  # larger than any token request
    ],
    ids=["nested", "in-a-string", "array", "text-plain", "large-form"],
)
def test_post_api_call_that_only_mentions_grant_type_is_still_signed(
    kind: str, body: dict[str, Any], fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    renewauth.patch({fake.base_url + "/": _auth(fake, clock)})
    echoed = _post(kind, fake.base_url + "/echo-headers", **body)
    received = {name.lower(): value for name, value in echoed.body.items()}
    assert received["authorization"].startswith("Bearer ")


@given(
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "application/vnd.api+json; charset=utf-8",
            "",
            "text/plain",
        ]
    ),
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.just(b"[" * 5000),
        st.none(),
        st.integers(),
    ),
)
def test_token_request_sniff_never_raises_on_any_body(content_type: str, body: object) -> None:
    result = names_a_grant(content_type, body)
    assert isinstance(result, bool)
