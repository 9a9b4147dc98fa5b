"""Pauses shared through the store: N processes, one token call per pause between them.

A refused login (`invalid_client`, `invalid_grant`) or a long `Retry-After` pauses token calls.
With a store that has `PauseStore` (memory, file, Redis) the pause is written beside the
token under the renewal lock, so every process sharing the store keeps it, and a success
anywhere deletes it. Two store objects on one directory or Redis prefix stand for two
processes where an injected clock is needed; the last tests run six real processes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renewauth import (
    FileStore,
    InvalidClient,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    RedisStore,
    StoreError,
    TokenEndpointUnavailable,
    TokenRequestError,
    events,
)
from renewauth.stores import Pause, PauseStore
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock, TokensOnlyStore, send
from .redis_server import RedisServer

CONTEXT = multiprocessing.get_context("spawn")
CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
KEY = "abc123"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("redis")
    try:
        server = RedisServer(directory, persistent=False)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (.ci/run installs it; under CI this fails)")
    with server:
        yield server.url


@pytest.fixture(params=["memory", "file", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A place two store objects can share: ("memory", ""), a directory, a Redis prefix."""
    if request.param == "memory":
        return ("memory", "")
    if request.param == "file":
        return ("file", str(tmp_path / "tokens"))
    url = request.getfixturevalue("redis_url")
    return ("redis", f"{url}#test:{os.urandom(4).hex()}:")


_MEMORY = MemoryStore()


def open_store(where: tuple[str, str]) -> Any:
    """A new store object on `where`: another process's view of the same store."""
    kind, place = where
    if kind == "memory":
        return _MEMORY  # one process: the same object is how auth objects share it
    if kind == "file":
        return FileStore(place)
    url, prefix = place.split("#")
    return RedisStore(url, prefix=prefix)


PAUSE = Pause(
    until=1_800_000_060.0,
    reason="refused",
    error="InvalidClient",
    message="the token endpoint refused the client",
    status=401,
    code="invalid_client",
    description="bad secret",
)


# --- the records --------------------------------------------------------------------------


def test_every_store_round_trips_and_deletes_a_pause(where: tuple[str, str]) -> None:
    store = open_store(where)
    assert isinstance(store, PauseStore)
    store.delete_pause(KEY)
    assert store.get_pause(KEY) is None
    store.set_pause(KEY, PAUSE)
    assert open_store(where).get_pause(KEY) == PAUSE  # another process reads it
    store.delete_pause(KEY)
    assert store.get_pause(KEY) is None
    store.delete_pause(KEY)  # nothing to delete: no error


def test_every_store_round_trips_a_pause_from_async_code(where: tuple[str, str]) -> None:
    store = open_store(where)

    async def main() -> tuple[Pause | None, Pause | None]:
        await store.aset_pause(KEY, PAUSE)
        seen = await store.aget_pause(KEY)
        await store.adelete_pause(KEY)
        return seen, await store.aget_pause(KEY)

    assert asyncio.run(main()) == (PAUSE, None)


def test_a_pause_file_is_private_and_a_torn_one_pauses_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "tokens")
    store.set_pause(KEY, PAUSE)
    file = tmp_path / "tokens" / f"{KEY}.pause"
    assert file.stat().st_mode & 0o077 == 0
    file.write_bytes(b'{"until": 1e30, "reason": "ref')
    assert store.get_pause(KEY) is None


def test_a_corrupt_redis_pause_pauses_nothing(redis_url: str) -> None:
    import redis

    prefix = f"test:{os.urandom(4).hex()}:"
    redis.Redis.from_url(redis_url).set(f"{prefix}pause:{KEY}", b"\xff not json")
    assert RedisStore(redis_url, prefix=prefix).get_pause(KEY) is None


def test_redis_expires_a_pause_a_minute_after_it_ends(redis_url: str) -> None:
    import redis

    prefix = f"test:{os.urandom(4).hex()}:"
    store, client = RedisStore(redis_url, prefix=prefix), redis.Redis.from_url(redis_url)
    now = time.time()
    store.set_pause("ended", replace(PAUSE, until=now - 10))
    store.set_pause("running", replace(PAUSE, until=now + 100))
    assert 0 < client.pttl(f"{prefix}pause:ended") <= 60_000
    assert 100_000 < client.pttl(f"{prefix}pause:running") <= 160_000


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "until": _JSON,
        "reason": st.sampled_from(["refused", "retry-after", "other"]) | _JSON,
        "error": st.sampled_from(["InvalidGrant", "InvalidClient", "KeyError"]) | _JSON,
        "message": _JSON,
        "status": _JSON,
        "code": _JSON,
        "description": _JSON,
        "retry_after": _JSON,
    },
)


@given(st.one_of(_JSON, _FIELDS))
def test_a_malformed_pause_record_is_none_or_a_usable_pause(data: object) -> None:
    pause = Pause.from_dict(data)
    if pause is not None:
        assert pause.reason in ("refused", "retry-after")
        error = pause.to_error("https://login.example")
        assert isinstance(error, InvalidGrant | InvalidClient | TokenEndpointUnavailable)
        assert Pause.from_dict(json.loads(json.dumps(pause.to_dict()))) == pause


# --- two auth objects on one store, an injected clock ------------------------------------


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(clock=clock) as provider:
        yield provider


def _auth(
    fake: FakeOAuth2Provider,
    store: Any,
    clock: ManualClock,
    secret: str = CLIENT_SECRET,
    **options: Any,
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, secret, store=store, clock=clock, retries=0, **options
    )


def _get(auth: OAuth2ClientCredentials, mode: str) -> object:
    if mode == "sync":
        return auth.get_token()
    return asyncio.run(auth.aget_token())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_refused_credentials_pause_the_other_process_without_a_call(
    where: tuple[str, str], mode: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    first = _auth(fake, open_store(where), clock, secret="wrong")
    seen: list[events.Event] = []
    second = _auth(fake, open_store(where), clock, secret="wrong", on_event=seen.append)
    with pytest.raises(InvalidClient):
        _get(first, mode)
    assert fake.token_calls == 1
    for _ in range(3):
        with pytest.raises(InvalidClient) as caught:
            _get(second, mode)
        assert caught.value.error == "invalid_client"
        assert "sharing this token store" in str(caught.value)
        assert "wrong" not in str(caught.value)
    assert fake.token_calls == 1  # the second one never asked
    assert [type(event) for event in seen] == [events.Paused]  # said once, not per request
    clock.advance(61.0)
    with pytest.raises(InvalidClient):
        _get(second, mode)  # the pause is over: it may ask again, once
    assert fake.token_calls == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_success_anywhere_ends_a_retry_after_pause_everywhere(
    where: tuple[str, str], mode: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    first = _auth(fake, open_store(where), clock)
    second = _auth(fake, open_store(where), clock)
    fake.fail_token_requests(429, times=-1, headers={"Retry-After": "120"})
    with pytest.raises(TokenEndpointUnavailable):
        _get(first, mode)
    with pytest.raises(TokenEndpointUnavailable) as caught:
        _get(second, mode)
    assert caught.value.retry_after == 120.0
    assert fake.token_calls == 1
    fake.clear_failures()
    clock.advance(121.0)
    _get(first, mode)  # over: it asks, and succeeds
    assert fake.token_calls == 2
    assert open_store(where).get_pause(first._manager.key) is None  # deleted by the success
    _get(second, mode)  # the token in the store: no call
    assert fake.token_calls == 2
    clock.advance(3600.0 + 1)  # that token ends: the second one renews on its own
    _get(second, mode)
    assert fake.token_calls == 3


def test_a_success_in_a_process_whose_clock_runs_ahead_ends_the_pause_for_all(
    where: tuple[str, str], fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    first = _auth(fake, open_store(where), clock)
    second = _auth(fake, open_store(where), clock)
    ahead = _auth(fake, open_store(where), ManualClock(clock() + 200.0))
    fake.fail_token_requests(429, times=-1, headers={"Retry-After": "120"})
    for auth in (first, second):
        with pytest.raises(TokenEndpointUnavailable):
            auth.get_token()
    assert fake.token_calls == 1
    fake.clear_failures()
    ahead.get_token()  # by its clock the pause is over: it asks and succeeds
    assert fake.token_calls == 2
    second.get_token()  # adopted from the store
    fake.revoke_access_tokens()  # and refused by the API: the next request needs a call
    reply = send("requests", second, fake.api_url)
    assert (reply.status, reply.history) == (200, 1)  # no pause left anywhere: it asked
    assert fake.token_calls == 3


def test_a_pause_that_cannot_be_stored_still_pauses_its_own_process(
    fake: FakeOAuth2Provider,
    clock: ManualClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FullDisk(FileStore):
        """Takes tokens, refuses pause files (a full disk; chmod does not stop root)."""

        def set_pause(self, key: str, pause: Pause) -> None:
            raise StoreError("the token store cannot write the pause file: No space left")

    store = FullDisk(tmp_path / "tokens")
    auth = _auth(fake, store, clock, secret="wrong")
    for _ in range(3):
        with pytest.raises(InvalidClient):
            auth.get_token()
    assert fake.token_calls == 1  # kept in this process
    assert store.get_pause(auth._manager.key) is None  # and truly not in the store
    assert "could not be written to the store" in caplog.text


def test_a_store_without_pauses_keeps_each_pause_to_its_process(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    shared = MemoryStore()
    first = _auth(fake, TokensOnlyStore(shared), clock, secret="wrong")
    second = _auth(fake, TokensOnlyStore(shared), clock, secret="wrong")
    assert not isinstance(first._manager.store, PauseStore)
    for auth in (first, second, first, second):
        with pytest.raises(InvalidClient):
            auth.get_token()
    assert fake.token_calls == 2  # one per process, and no more


# --- six real processes ---------------------------------------------------------------------


def _pause_worker(
    where: tuple[str, str], token_url: str, secret: str, barrier: Any, results: Any
) -> None:
    auth = OAuth2ClientCredentials(token_url, CLIENT_ID, secret, store=open_store(where), retries=0)
    outcomes = []
    barrier.wait()
    for _ in range(3):  # three requests each, during the pause
        try:
            auth.get_token()
            outcomes.append("token")
        except TokenRequestError as exc:
            outcomes.append(type(exc).__name__)
    results.put(outcomes)


@pytest.mark.parametrize("cause", ["refused", "retry-after"])
@pytest.mark.parametrize("shared", ["file", "redis"])
def test_six_processes_make_one_token_call_per_pause(
    shared: str, cause: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if shared == "file":
        where = ("file", str(tmp_path / "tokens"))
    else:
        url = request.getfixturevalue("redis_url")
        where = ("redis", f"{url}#test:{os.urandom(4).hex()}:")
    with FakeOAuth2Provider() as fake:
        if cause == "retry-after":
            fake.fail_token_requests(429, times=-1, headers={"Retry-After": "600"})
            secret, expected = CLIENT_SECRET, "TokenEndpointUnavailable"
        else:
            secret, expected = "wrong-secret", "InvalidClient"
        barrier = CONTEXT.Barrier(6)
        results = CONTEXT.Queue()
        processes = [
            CONTEXT.Process(
                target=_pause_worker, args=(where, fake.token_url, secret, barrier, results)
            )
            for _ in range(6)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        assert outcomes == [[expected] * 3] * 6
        assert fake.token_calls == 1  # one call for 18 requests in 6 processes
