"""A fleet shares one credential cheaply: the store is read before its lock is taken, and a
process that finds another renewing waits for that renewal's write instead of polling the
lock (issue 20).

Each auth object below has its own store object, as a process of a fleet would: renewals are
single-flighted per store object in a process, so two of them meet only at the store, like
two processes. "Another process renewing" is played by the test holding the store's lock.
Against a real `redis-server` (its `INFO commandstats` counts what renewauth sent) and a
`FileStore` in a temporary directory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from renewauth import FileStore, OAuth2ClientCredentials, RedisStore, StoreError, Token
from renewauth._effects import Read, TryLock, WaitRenewed
from renewauth._locking import locked_or_renewed
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock, job_chain, settle, started
from .redis_server import RedisServer

LIFETIME = 100.0
CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"


def _auth(fake: FakeOAuth2Provider, store: object, clock: ManualClock) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        store=store,
        clock=clock,  # type: ignore[arg-type]
    )


def _renewed_elsewhere(token: Token, clock: ManualClock) -> Token:
    """What another process's renewal of `token` would have written: a new access token."""
    return replace(
        token, access_token=token.access_token + "-renewed", expires_at=clock() + LIFETIME
    )


def _calls(client: redis.Redis) -> dict[str, int]:
    """Commands Redis ran since the last reset, by name (a script's inner calls included)."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("info", "config"))}


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_token_another_process_renewed_is_read_without_taking_the_lock(
    forgetful_redis: RedisServer, clock: ManualClock
) -> None:
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        renewing = _auth(fake, RedisStore(forgetful_redis.url), clock)
        reading = _auth(fake, RedisStore(forgetful_redis.url), clock)
        first = reading.get_token()
        clock.advance(LIFETIME)  # spent, in both processes
        renewed = renewing.get_token()
        client = redis.Redis.from_url(forgetful_redis.url)
        client.config_resetstat()
        assert reading.get_token() == renewed != first
        assert _calls(client) == {"mget": 1}  # one read: no lock taken, nothing else asked
        assert fake.token_calls == 2


def test_a_waiter_is_woken_by_the_renewal_it_waits_for_and_never_polls_the_lock(
    forgetful_redis: RedisServer, clock: ManualClock
) -> None:
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        store = RedisStore(forgetful_redis.url)
        waiting = _auth(fake, store, clock)
        first = waiting.get_token()
        clock.advance(LIFETIME)  # spent: this process must wait for a token
        other = RedisStore(forgetful_redis.url)  # "another process", renewing
        client = redis.Redis.from_url(forgetful_redis.url)
        key = waiting._manager.key
        with other.try_lock(key) as held:
            assert held
            _, generation = other.get_with_generation(key)
            client.config_resetstat()
            waiter, outcome = started(waiting.get_token)
            # It blocks in Redis, waiting for the write (not asking for the lock again and again).
            assert _wait_until(lambda: int(client.info("clients")["blocked_clients"]) == 1)
            renewed = _renewed_elsewhere(first, clock)
            assert other.set_if_generation(key, renewed, generation) is not None
            waiter.join(30)
            assert outcome == [renewed]  # woken by the write, while the lock is still held
            calls = _calls(client)
        assert calls["eval"] == 1  # the other process's write, which also ran one SET
        # One round per second a wait lasts at most: a read, one try of the lock, one wait.
        assert calls["set"] - 1 == calls["blmove"] == calls["mget"] <= 3
        assert fake.token_calls == 1  # only the first token: it renewed nothing itself


@pytest.mark.parametrize("mode", ["soft", "spent"])
def test_a_file_store_waiter_adopts_the_other_renewal_while_the_lock_is_held(
    tmp_path: Path, clock: ManualClock, mode: str
) -> None:
    """Nobody queues behind the lock only to read what its holder wrote: a process that
    finds the lock taken waits for the write (pauses that double) and reads it."""
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        waiting = _auth(fake, FileStore(tmp_path), clock)
        first = waiting.get_token()
        clock.now += 80.0 if mode == "soft" else LIFETIME  # `advance` waits for renewals
        other = FileStore(tmp_path)
        key = waiting._manager.key
        with other.try_lock(key) as held:
            assert held
            _, generation = other.get_with_generation(key)
            waiter, outcome = started(waiting._manager.token_for_request)
            if mode == "soft":
                waiter.join(30)
                assert outcome == [first]  # valid: sent at once, renewed in the background
            renewed = _renewed_elsewhere(first, clock)
            assert other.set_if_generation(key, renewed, generation) is not None
            waiter.join(30)
            # The new token is taken while the lock is still held by its writer.
            assert _wait_until(lambda: waiting.get_token() == renewed)
        assert fake.token_calls == 1


def test_a_waiter_takes_the_lock_when_its_holder_wrote_nothing(
    forgetful_redis: RedisServer, clock: ManualClock
) -> None:
    """A holder that fails (or dies) writes nothing: the waiter, woken by nothing, tries the
    lock again once it is free and renews itself."""
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        waiting = _auth(fake, RedisStore(forgetful_redis.url), clock)
        first = waiting.get_token()
        clock.advance(LIFETIME)
        other = RedisStore(forgetful_redis.url)
        client = redis.Redis.from_url(forgetful_redis.url)
        with other.try_lock(waiting._manager.key) as held:
            assert held
            waiter, outcome = started(waiting.get_token)
            assert _wait_until(lambda: int(client.info("clients")["blocked_clients"]) == 1)
        waiter.join(30)
        (renewed,) = outcome
        assert isinstance(renewed, Token)
        assert renewed.access_token != first.access_token
        assert fake.token_calls == 2


def test_the_process_that_renewed_a_token_renews_it_first_and_the_others_read_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Each process's soft window opens at `renew_at` for a token it fetched, and halfway into
    that window for one another process renewed: the renewer renews first, the others then
    find its token in the store (one read each) instead of all trying the lock at once."""
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        renewer = _auth(fake, FileStore(tmp_path), clock)
        reader = _auth(fake, FileStore(tmp_path), clock)
        first = renewer.get_token()  # fetched by the renewer
        assert reader.get_token() == first  # read from the store by the other
        clock.advance(75.0)  # past renew_at (70 s), not yet halfway to 99.5 s
        assert reader.get_token() == first
        settle()
        assert fake.token_calls == 1  # the reader leaves the first move to the renewer
        assert renewer.get_token() == first  # valid: sent, and renewed in the background
        settle()
        renewed = renewer.get_token()
        assert renewed.access_token != first.access_token
        assert fake.token_calls == 2
        clock.advance(10.0)  # 85 s: past the reader's halfway point (84.75 s)
        reader.get_token()
        settle()
        assert reader.get_token() == renewed  # read, not renewed again
        assert fake.token_calls == 2


def test_a_chain_token_read_without_the_lock_goes_to_this_machines_spare_copy(
    forgetful_redis: RedisServer, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain's token another machine renewed, adopted from the store without the lock, is
    kept in this machine's spare copy as one adopted under the lock is: a Redis that restarts
    empty then leaves this machine's next process the newest refresh token, not a spent one."""
    machine_a, machine_b = forgetful_redis.directory / "a", forgetful_redis.directory / "b"
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(machine_a))
        renewing = job_chain(fake, RedisStore(forgetful_redis.url), clock)
        renewing.get_token()
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(machine_b))
        reading = job_chain(fake, RedisStore(forgetful_redis.url), clock)
        reading.get_token()  # read from the store
        clock.advance(LIFETIME)
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(machine_a))
        newest = renewing.get_token()  # machine A rotates the chain
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(machine_b))
        assert reading.get_token() == newest  # read from the store by machine B
        forgetful_redis.restart()  # empty now
        clock.advance(LIFETIME)  # and machine A's process is gone
        later = job_chain(fake, RedisStore(forgetful_redis.url), clock)  # B's next process
        later.get_token()
        assert fake.stale_refresh_tokens == 0


def test_a_waiter_whose_client_has_a_short_socket_timeout_waits_within_it(
    forgetful_redis: RedisServer, clock: ManualClock
) -> None:
    """A `RedisStore` given a client runs on that client's socket timeout: a wait for another
    process's write blocks for less than it, instead of timing out as if Redis were down and
    renewing beside the lock's holder (every waiter of the fleet one token call)."""
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        client = redis.Redis.from_url(forgetful_redis.url, socket_timeout=0.25)
        waiting = _auth(fake, RedisStore(client), clock)
        first = waiting.get_token()
        clock.advance(LIFETIME)  # spent: this process must wait for a token
        other = RedisStore(forgetful_redis.url)  # "another process", renewing
        stats = redis.Redis.from_url(forgetful_redis.url)
        key = waiting._manager.key
        with other.try_lock(key) as held:
            assert held
            _, generation = other.get_with_generation(key)
            stats.config_resetstat()
            waiter, outcome = started(waiting.get_token)
            # A second round's read means the first wait ended as a wait, not as an error.
            assert _wait_until(lambda: not waiter.is_alive() or _calls(stats).get("mget", 0) >= 2)
            assert fake.token_calls == 1  # nothing renewed beside the holder
            renewed = _renewed_elsewhere(first, clock)
            assert other.set_if_generation(key, renewed, generation) is not None
            waiter.join(30)
            assert outcome == [renewed]


def test_a_waiter_gives_up_after_300_s_of_a_holder_that_writes_nothing() -> None:
    """Nobody waits forever for a lock's holder that never writes (stuck, or a lock that
    leaked with its lease kept alive): as when the lock was queued for, 300 s of waiting end
    in a `StoreError`, which the renewal takes for a store that is down."""
    now = [0.0]
    stale = Token(access_token="stale", expires_at=1.0)
    steps = locked_or_renewed(stale, lambda *_: None, spare=False, monotonic=lambda: now[0])
    answers: dict[type, object] = {Read: (stale, 4), TryLock: None, WaitRenewed: None}
    effect = next(steps)
    waits = 0
    while not isinstance(effect, WaitRenewed) or now[0] < 400:
        if isinstance(effect, WaitRenewed):
            now[0] += 1.0  # one wait, woken by nothing: the lock is held by another process
            waits += 1
        try:
            effect = steps.send(answers[type(effect)])
        except StoreError as exc:
            assert "300 s" in str(exc)
            break
    assert waits == 300


class _GatedClock(ManualClock):
    """A `ManualClock` that holds the thread named `late` at its first reading until released:
    a caller that has read the manager's cache and not yet acted on it."""

    def __init__(self) -> None:
        super().__init__()
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self) -> float:
        if threading.current_thread().name == "late" and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(30)
        return super().__call__()


def test_the_renewer_keeps_its_own_window_when_a_late_caller_reads_its_token_back(
    tmp_path: Path,
) -> None:
    """A caller that read the cache just before this process's renewal ended renews from the
    token it saw, and so reads this process's new token back from the store: that copy is
    still a token this process fetched, whose soft window opens at `renew_at`, not halfway
    (else the renewer goes last, and the whole fleet contends for the lock at once)."""
    clock = _GatedClock()
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        renewer = _auth(fake, FileStore(tmp_path), clock)
        first = renewer.get_token()
        clock.advance(75.0)  # past renew_at (70 s)
        late = threading.Thread(target=renewer.get_token, name="late")
        late.start()  # it reads the cache (the first token), then the clock: held there
        assert clock.reached.wait(30)
        assert renewer.get_token() == first  # sent, and renewed in the background
        settle()
        renewed = renewer.get_token()
        assert renewed != first
        clock.release.set()  # the late caller renews from the first token: it reads `renewed`
        late.join(30)
        settle()
        assert fake.token_calls == 2
        clock.advance(75.0)  # 150 s: past renewed's renew_at (145 s), before halfway (159.75 s)
        renewer.get_token()
        settle()
        assert fake.token_calls == 3  # the renewer renewed first, as it fetched that token


def test_a_redis_without_blmove_still_lets_a_waiter_take_the_other_renewal(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis older than 6.2 (BLMOVE unknown: here renamed away) cannot wake a waiter: the
    waiter says so once and looks at the store again after a pause, and still renews
    nothing itself."""
    directory = tmp_path / "redis"
    directory.mkdir()
    old = RedisServer(directory, persistent=False, options=("--rename-command", "BLMOVE", ""))
    with old, FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        waiting = _auth(fake, RedisStore(old.url), clock)
        first = waiting.get_token()
        clock.advance(LIFETIME)
        other = RedisStore(old.url)
        key = waiting._manager.key
        with other.try_lock(key) as held:
            assert held
            _, generation = other.get_with_generation(key)
            waiter, outcome = started(waiting.get_token)
            assert _wait_until(lambda: "has no BLMOVE" in caplog.text)
            renewed = _renewed_elsewhere(first, clock)
            assert other.set_if_generation(key, renewed, generation) is not None
            waiter.join(30)
            assert outcome == [renewed]  # read after a pause, while the lock is still held
        assert caplog.text.count("has no BLMOVE") == 1
        assert fake.token_calls == 1
