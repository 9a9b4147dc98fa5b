"""Retrofit: legacy calls through requests and httpx get renewing tokens by URL prefix."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
import requests

import renewauth
from renewauth import BearerToken, ConfigurationError, MemoryStore, OAuth2Password
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock

ORIGINALS = {
    "requests.Session.send": requests.Session.send,
    "requests.Session.request": requests.Session.request,
    "httpx.Client.send": httpx.Client.send,
    "httpx.AsyncClient.send": httpx.AsyncClient.send,
}


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


def _auth(fake: FakeOAuth2Provider, clock: ManualClock) -> OAuth2Password:
    return OAuth2Password(
        fake.token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=MemoryStore(),
        clock=clock,
        leeway=0.1,
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
    } == ORIGINALS
    assert requests.get(fake.api_url, timeout=10).status_code == 401


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
