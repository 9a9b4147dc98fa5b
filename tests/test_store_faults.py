"""Nothing lost, nothing stuck: store, lease, event-loop faults, injected for real.

A store whose disk is full, a real `redis-server` stopped, SIGSTOPped and restarted, an event
loop closed under a renewal. Two auth objects on two store objects over the same files or the
same Redis stand for two processes: they share no flight, only the store and its lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from renewauth import (
    FileStore,
    InvalidClient,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    RedisStore,
    StoreError,
    Token,
    TokenEndpointUnavailable,
    TokenStore,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import FullDiskStore, ManualClock, job_chain
from .redis_server import RedisServer

LIFETIME = 100.0
START = 1_800_000_000.0


def _refresh_auth(
    fake: FakeOAuth2Provider, store: TokenStore, clock: ManualClock, **kw: object
) -> OAuth2RefreshToken:
    """Every process of a job starts from the same configured refresh token."""
    return job_chain(fake, store, clock, **kw)


class _Entering(FileStore):
    """A FileStore that says when a renewal asks for its lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entering = threading.Event()

    def lock(self, key: str):  # type: ignore[no-untyped-def]
        self.entering.set()
        return super().lock(key)

    def try_lock(self, key: str):  # type: ignore[no-untyped-def]
        self.entering.set()
        return super().try_lock(key)


# --- defect 1: a failed write never loses a rotated refresh token ---------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rotated_token_survives_a_failed_store_write_and_reaches_the_store_later(
    tmp_path: Path, mode: str
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        store = FullDiskStore(tmp_path / "tokens")
        seen: list[Token] = []
        auth = _refresh_auth(fake, store, clock, on_token=seen.append)
        first = auth.get_token()
        store.written.clear()
        store.full.set()
        clock.advance(LIFETIME + 1)
        renewed = auth.get_token() if mode == "sync" else asyncio.run(auth.aget_token())
        # The server spent the old refresh token: the new one is used, kept and handed over.
        assert renewed.refresh_token != first.refresh_token
        assert auth.token == renewed
        assert seen[-1] == renewed
        # Another process now needs a token: it must wait for the kept one, never read the
        # spent refresh token from the store.
        other_store = _Entering(tmp_path / "tokens")
        other = _refresh_auth(fake, other_store, clock)
        clock.advance(LIFETIME / 2 + 1)  # past the soft window: the other process must renew
        result: list[Token | BaseException] = []

        def other_process() -> None:
            try:
                result.append(other.get_token())
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=other_process)
        thread.start()
        assert other_store.entering.wait(10)
        assert store.refused.acquire(timeout=10)  # the writer thread is still refused
        assert store.refused.acquire(timeout=10)
        store.full.clear()  # the disk has room again
        assert store.written.wait(10)
        thread.join(30)
        assert not thread.is_alive()
        assert store.get(auth._manager.key) is not None
        assert fake.stale_refresh_tokens == 0
        assert not isinstance(result[0], BaseException), result[0]


def test_rotated_token_survives_redis_stopped_during_the_refresh(
    redis_server: RedisServer,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        prefix = f"test:{os.urandom(4).hex()}:"
        store = RedisStore(redis_server.url, prefix=prefix, socket_timeout=1, connect_timeout=1)
        seen: list[Token] = []
        auth = _refresh_auth(fake, store, clock, on_token=seen.append)
        auth.get_token()
        clock.advance(LIFETIME + 1)
        outcome: list[Token | BaseException] = []
        with fake.hold_token_requests():
            thread = threading.Thread(target=lambda: outcome.append(_try(auth.get_token)))
            thread.start()
            assert fake.wait_for_held_token_requests(1)
            redis_server.stop()  # the refresh is under way: its answer cannot be stored
        thread.join(30)
        renewed = outcome[0]
        assert isinstance(renewed, Token), renewed
        assert seen[-1] == renewed
        redis_server.start()  # the same data (append-only file) on the same port
        reader = RedisStore(redis_server.url, prefix=prefix)
        assert _eventually(lambda: reader.get(auth._manager.key) == renewed)
        other = _refresh_auth(fake, reader, clock)
        clock.advance(LIFETIME + 1)
        assert other.get_token().refresh_token != renewed.refresh_token  # renewed from it
        assert fake.stale_refresh_tokens == 0


class _EnteringRedis(RedisStore):
    """A RedisStore that says when a renewal asks for its lock."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.entering = threading.Event()

    def lock(self, key: str):  # type: ignore[no-untyped-def]
        self.entering.set()
        return super().lock(key)

    def try_lock(self, key: str):  # type: ignore[no-untyped-def]
        self.entering.set()
        return super().try_lock(key)


class _SetOnRecord(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def _logged(text: str) -> Iterator[threading.Event]:
    """An event set once renewauth logs a line containing `text`."""
    handler = _SetOnRecord(text)
    logger = logging.getLogger("renewauth")
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)


class _LeaseEvents:
    """What Redis does to one key, in order (keyspace notifications)."""

    def __init__(self, client: Any, pubsub: Any) -> None:
        self.client, self._pubsub = client, pubsub

    def next(self) -> str:
        while True:  # past the confirmation of the subscription
            message = self._pubsub.get_message(timeout=10)
            assert message is not None, "Redis reported nothing on the lease key"
            if message["type"] == "message":
                return str(message["data"].decode())

    def until(self, event: str, *, times: int) -> list[str]:
        """Every event up to and including the `times`-th `event`."""
        seen: list[str] = []
        while seen.count(event) < times:
            seen.append(self.next())
        return seen


@contextlib.contextmanager
def _lease_events(url: str, key: str) -> Iterator[_LeaseEvents]:
    import redis

    with redis.Redis.from_url(url) as client, client.pubsub() as pubsub:
        client.config_set("notify-keyspace-events", "Kgx$")  # a restart forgets it
        pubsub.subscribe(f"__keyspace@0__:{key}")
        yield _LeaseEvents(client, pubsub)


def _try(call):  # type: ignore[no-untyped-def]
    try:
        return call()
    except BaseException as exc:
        return exc


def _eventually(condition, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    """Bounded readiness poll for a background thread's effect (no timing is asserted)."""
    done = threading.Event()
    for _ in range(int(seconds / 0.02)):
        try:
            if condition():
                return True
        except StoreError:
            pass
        done.wait(0.02)
    return False


# --- defect 4: a lease that outlives a Redis restart, and a fenced write --------------------


def test_redis_lease_survives_a_restart_so_one_refresh_token_is_spent_once(
    redis_server: RedisServer,
) -> None:
    """The leader's lease outlives a Redis restart in the middle of its refresh, so the
    follower waits and never spends the same refresh token. A password grant: two objects of
    one process meet at the lease alone (a chain's would wait at this machine's lock first)."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
    ) as fake:
        prefix = f"test:{os.urandom(4).hex()}:"
        options: dict[str, Any] = {
            "prefix": prefix,
            "lease": 1.0,
            "socket_timeout": 1,
            "connect_timeout": 1,
        }
        first = _password_auth(fake, RedisStore(redis_server.url, **options), clock)
        first.get_token()
        follower_store = _EnteringRedis(redis_server.url, **options)
        second = _password_auth(fake, follower_store, clock)  # the same user, another process
        lock_key = f"{prefix}lock:{first._manager.key}"
        clock.advance(LIFETIME + 1)
        results: list[object] = []
        with (
            _logged("could not extend the renewal lock") as extension_failed,
            fake.hold_token_requests(),
        ):
            leader = threading.Thread(target=lambda: results.append(_try(first.get_token)))
            leader.start()
            assert fake.wait_for_held_token_requests(1)
            redis_server.stop()
            # The outage: longer than an extension interval, as the leader's failed try says.
            assert extension_failed.wait(10)
            redis_server.start()
            with _lease_events(redis_server.url, lock_key) as lease:
                follower = threading.Thread(target=lambda: results.append(_try(second.get_token)))
                follower.start()
                assert follower_store.entering.wait(10)  # the follower asks for the lock
                owner = lease.client.get(lock_key)
                assert owner is not None  # the leader's lease, kept across the restart
                # The renewal outlasts the 1 s lease twice over: six extensions, a third of its
                # life apart, while the follower waits and the lease never changes hands.
                seen = lease.until("expire", times=6)
                assert "expired" not in seen
                assert "del" not in seen
                assert lease.client.get(lock_key) == owner
                assert results == []  # the leader is held, the follower still waits
                assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}
        leader.join(30)
        follower.join(30)
        assert all(isinstance(result, Token) for result in results), results
        assert fake.max_concurrent_token_calls == 1
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls == 2  # the first fetch and one renewal, for both processes
        assert fake.token_calls_by_grant == {"password": 1, "refresh_token": 1}


def _password_auth(
    fake: FakeOAuth2Provider, store: TokenStore, clock: ManualClock, **options: Any
) -> OAuth2Password:
    """Alice's password grant: every "process" of a test logs in as the same user."""
    return OAuth2Password(
        fake.token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=store,
        clock=clock,
        **options,
    )


_LEASE_WARNINGS = {
    "redis-down": (
        "could not extend the renewal lock in {where} (ConnectionError); trying again",
        "renewal lock in {where} not released (ConnectionError); it expires in 1 s",
    ),
    "taken-over": (
        "the renewal lock in {where} passed to another process; the token write is fenced, "
        "so this renewal cannot overwrite a newer token",
        "renewal lock in {where} expired before release",
    ),
}


def _lease_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "renewauth.stores.redis"]


@pytest.mark.parametrize("fault", ["redis-down", "taken-over"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_lock_warns_alike_sync_and_async_when_its_lease_is_lost(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, mode: str, fault: str
) -> None:
    """The lock held through an asyncio client warns as the blocking one does: once when its
    lease cannot be extended or passed to another owner, and again when it is let go."""
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    prefix = f"test:{os.urandom(4).hex()}:"
    where = redis_server.url if mode == "sync" else f"redis://127.0.0.1:{redis_server.port}"
    lost, let_go = (warning.format(where=where) for warning in _LEASE_WARNINGS[fault])

    def lose_the_lease() -> None:
        if fault == "redis-down":
            redis_server.stop()
        else:
            redis.Redis.from_url(redis_server.url).set(f"{prefix}lock:abc123", "another-owner")
        assert _eventually(lambda: lost in _lease_warnings(caplog))  # the watchdog saw it

    if mode == "sync":
        store = RedisStore(
            redis_server.url, prefix=prefix, lease=1.0, socket_timeout=1, connect_timeout=1
        )
        with store.lock("abc123"):
            lose_the_lease()
    else:

        async def hold() -> None:
            client = redis.asyncio.Redis.from_url(
                redis_server.url,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 1),
            )
            try:
                async with RedisStore(client, prefix=prefix, lease=1.0).alock("abc123"):
                    await asyncio.to_thread(lose_the_lease)
            finally:
                await client.aclose()

        asyncio.run(hold())
    assert _lease_warnings(caplog) == [lost, let_go]


# --- defect 2: a flight whose leader can no longer finish is taken over ---------------------


@pytest.mark.parametrize("later", ["sync", "async"])
def test_closed_event_loop_never_leaves_the_credential_stuck(later: str) -> None:
    with FakeOAuth2Provider() as fake:
        auth = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", timeout=2)
        loop = asyncio.new_event_loop()

        async def give_up_while_the_renewal_is_held() -> None:
            renewal = asyncio.ensure_future(auth.aget_token())
            assert await asyncio.to_thread(fake.wait_for_held_token_requests, 1)
            await asyncio.wait_for(renewal, 0)  # the caller gives up; the renewal goes on

        with fake.hold_token_requests():
            with pytest.raises(TimeoutError):
                loop.run_until_complete(give_up_while_the_renewal_is_held())
            loop.close()  # the shielded renewal task will never run again
        token = auth.get_token() if later == "sync" else asyncio.run(auth.aget_token())
        assert token.access_token
        assert fake.token_calls == 2  # the abandoned call, and the one that took over


def test_flight_of_a_thread_that_died_is_taken_over() -> None:
    from renewauth import _flight

    with FakeOAuth2Provider() as fake:
        auth = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", timeout=2)
        # A leader that registered its flight and vanished without ending it (a thread that
        # died where no `finally` ran): every later caller would wait out the whole bound.
        leader = threading.Thread(target=_flight.begin, args=(auth._manager._flight_key,))
        leader.start()
        leader.join()
        assert auth.get_token().access_token
        assert fake.token_calls == 1


# --- defect 3: a pause stops token calls, never a read of the store -------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "error"),
    [
        (503, None, {"Retry-After": "30"}, TokenEndpointUnavailable),
        (401, b'{"error": "invalid_client"}', {"Content-Type": "application/json"}, InvalidClient),
    ],
    ids=["retry-after", "invalid-client"],
)
def test_paused_credential_adopts_a_valid_token_another_process_stored(
    tmp_path: Path,
    status: int,
    body: bytes | None,
    headers: dict[str, str],
    error: type[Exception],
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:

        def process(clock: ManualClock) -> OAuth2Password:
            return _password_auth(fake, FileStore(tmp_path / "tokens"), clock, retries=0)

        paused = process(clock)
        paused.get_token()
        clock.advance(LIFETIME + 1)
        fake.fail_token_requests(status, body=body, headers=headers)
        with pytest.raises(error):
            paused.get_token()  # paused now (30 s, or 60 s for refused credentials)
        with pytest.raises(error):
            paused.get_token()  # and the pause holds: no call, the same error
        # Another process, whose clock is past the pause (a process sharing the store with
        # the same clock keeps the pause too: tests/test_shared_pauses.py), renews fine.
        healthy = process(ManualClock(clock() + 61.0))
        fresh = healthy.get_token()
        calls = fake.token_calls
        assert paused.get_token() == fresh  # read from the store inside the pause
        assert fake.token_calls == calls


# --- defect 5: every Redis operation is bounded, and its failure names the store ------------


def test_sigstopped_redis_fails_the_renewal_in_bounded_time_naming_the_store(
    redis_server: RedisServer,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        store = RedisStore(
            redis_server.url,
            prefix=f"test:{os.urandom(4).hex()}:",
            socket_timeout=0.5,
            connect_timeout=0.5,
        )
        auth = _refresh_auth(fake, store, clock)
        auth.get_token()
        clock.advance(LIFETIME + 1)
        outcome: list[object] = []
        redis_server.pause()
        try:
            thread = threading.Thread(target=lambda: outcome.append(_try(auth.get_token)))
            thread.start()
            thread.join(30)  # a bound for the test, far above 2 × (connect + socket timeout)
            finished = not thread.is_alive()
        finally:
            redis_server.resume()
        thread.join(30)
        assert finished
        error = outcome[0]
        assert isinstance(error, StoreError)
        assert "token store" in str(error)
        assert "Redis" in str(error)
        assert "not the token endpoint" in str(error)


def test_redis_store_timeouts_are_options_checked_at_construction() -> None:
    from renewauth import ConfigurationError

    with pytest.raises(ConfigurationError, match="socket_timeout="):
        RedisStore("redis://127.0.0.1:1/0", socket_timeout=0)
    with pytest.raises(ConfigurationError, match="connect_timeout="):
        RedisStore("redis://127.0.0.1:1/0", connect_timeout=float("inf"))


# --- defect 6: grants without a shared refresh token renew without the store ----------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_client_credentials_renew_locally_while_redis_is_down_then_share_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        prefix = f"test:{os.urandom(4).hex()}:"
        store = RedisStore(redis_server.url, prefix=prefix, socket_timeout=1, connect_timeout=1)
        auth = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=store, clock=clock
        )
        auth.get_token()
        redis_server.stop()
        renewed: list[Token] = []
        for _ in range(2):
            clock.advance(LIFETIME + 1)
            renewed.append(auth.get_token() if mode == "sync" else asyncio.run(auth.aget_token()))
        assert renewed[0] != renewed[1]
        warnings = [r for r in caplog.records if "token store is unreachable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per renewal
        redis_server.start()
        reader = RedisStore(redis_server.url, prefix=prefix)
        assert _eventually(lambda: reader.get(auth._manager.key) == renewed[1])


def test_rotating_refresh_token_waits_for_the_store_instead_of_renewing_locally(
    redis_server: RedisServer,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        store = RedisStore(
            redis_server.url,
            prefix=f"test:{os.urandom(4).hex()}:",
            socket_timeout=1,
            connect_timeout=1,
        )
        auth = _refresh_auth(fake, store, clock)
        auth.get_token()
        calls = fake.token_calls
        redis_server.stop()
        clock.advance(LIFETIME + 1)
        with pytest.raises(StoreError, match="token store"):
            auth.get_token()
        assert fake.token_calls == calls  # the refresh token was not spent
