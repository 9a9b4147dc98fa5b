"""A refresh-token chain survives its process: restarts, stores that forget, exits.

A technical user's refresh token is its only credential, and the server rotates it: losing the
newest one loses the user. These tests run what users run, in real processes where a run
ends: the documented set-up run twice, a script beside `renewauth run`, a real `redis-server`
restarted without persistence during a renewal, a token file deleted, a store that refuses
writes until after the process exited, a read-only store. Two auth objects on two store
objects over the same files or the same Redis stand for two processes; a different
`RENEWAUTH_STATE_DIR` stands for another machine (its own spare copies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from renewauth import (
    FileStore,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    RedisStore,
    StoreError,
    Token,
    TokenRequestError,
)
from renewauth.stores import default_store
from renewauth.testing import FakeKeycloak, FakeOAuth2Provider

from .helpers import FullDiskStore, ManualClock, job_chain, settle
from .redis_server import RedisServer

START = 1_800_000_000.0
LIFETIME = 100.0


def _child(
    code: str, *arguments: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` with `arguments` in a new Python process (a cron job's run), its log on
    stderr (INFO and up)."""
    prelude = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr,"
        " format='%(levelname)s %(name)s: %(message)s')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=cwd,
    )


def _environment(state: Path, **more: str) -> dict[str, str]:
    environment = {**os.environ, "RENEWAUTH_STATE_DIR": str(state)}
    environment.pop("XDG_RUNTIME_DIR", None)
    return {**environment, **more}


# --- 1. durable by default where losing it is fatal ------------------------------------------

_KEYCLOAK_RUN = """
    import requests, sys
    from renewauth.providers import Keycloak
    auth = Keycloak.from_token_url(  # docs/providers/keycloak.md, no store=
        sys.argv[1], client_id="portal-client", client_secret="portal-secret",
        refresh_token=sys.argv[2])
    answer = requests.get(sys.argv[3], auth=auth, timeout=10)
    print(answer.status_code)
"""

_OAUTH2_RUN = """
    import requests, sys
    from renewauth import OAuth2RefreshToken
    auth = OAuth2RefreshToken(sys.argv[1], "client-id", sys.argv[2],
                              client_secret="client-secret")
    answer = requests.get(sys.argv[3], auth=auth, timeout=10)
    print(answer.status_code)
"""


@pytest.mark.parametrize("provider", ["keycloak", "oauth2"])
def test_a_technical_user_set_up_as_the_docs_show_survives_its_second_run(
    tmp_path: Path, provider: str
) -> None:
    fake_type = FakeKeycloak if provider == "keycloak" else FakeOAuth2Provider
    with fake_type(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        code = _KEYCLOAK_RUN if provider == "keycloak" else _OAUTH2_RUN
        environment = _environment(tmp_path / "state")
        for run in (1, 2, 3):
            fake.revoke_access_tokens()  # each run must renew with the chain's newest token
            result = _child(
                code, fake.token_url, refresh_token, fake.api_url + "orders", env=environment
            )
            assert result.stdout.strip() == "200", (run, result.stdout, result.stderr)
            if run == 1:  # says at INFO where the chain lives
                assert str(tmp_path / "state" / "tokens") in result.stderr
            assert refresh_token not in result.stderr
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"refresh_token": 3}


def test_a_script_and_renewauth_run_with_one_credential_share_one_chain(tmp_path: Path) -> None:
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        config = tmp_path / "renewauth.toml"
        config.write_text(
            textwrap.dedent(f"""
            [auth.orders]
            provider = "oauth2-refresh-token"
            prefixes = ["{fake.api_url}"]
            token_url = "{fake.token_url}"
            client_id = "client-id"
            client_secret_env = "S"
            refresh_token_env = "R"
            """)
        )
        config.chmod(0o600)
        environment = _environment(tmp_path / "state", S="client-secret", R=refresh_token)
        script = _child(
            f"""
            import requests
            from renewauth import OAuth2RefreshToken
            auth = OAuth2RefreshToken({fake.token_url!r}, "client-id", {refresh_token!r},
                                      client_secret="client-secret")
            print(requests.get({fake.api_url + "a"!r}, auth=auth, timeout=10).status_code)
            """,
            env=environment,
            cwd=tmp_path,
        )
        assert script.stdout.strip() == "200", script.stderr
        fake.revoke_access_tokens()
        legacy = tmp_path / "legacy.py"
        legacy.write_text(
            "import requests, sys\nprint(requests.get(sys.argv[1], timeout=10).status_code)\n"
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "renewauth.cli",
                "run",
                "--config",
                str(config),
                "--",
                sys.executable,
                str(legacy),
                fake.api_url + "b",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=environment,
        )
        assert run.stdout.strip() == "200", run.stderr
        # The program under `renewauth run` continued the chain the script rotated.
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"refresh_token": 2}


def test_an_unusable_state_directory_falls_back_to_memory_with_one_warning_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "a-file" / "state"))
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        first, second = (
            OAuth2RefreshToken(
                fake.token_url, "client-id", refresh_token, client_secret="client-secret"
            )
            for _ in range(2)
        )
        assert first._manager.store is default_store()
        assert second.get_token().access_token  # the chain works, in memory
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "RENEWAUTH_STATE_DIR" in warnings[0]
        assert "store=FileStore(path)" in warnings[0]


def test_grants_that_lose_nothing_keep_the_memory_default(tmp_path: Path) -> None:
    with FakeOAuth2Provider() as fake:
        credentials = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret")
        password = OAuth2Password(
            fake.token_url, "client-id", "alice", "alice-password", client_secret="client-secret"
        )
        chain = OAuth2RefreshToken(fake.token_url, "client-id", "a-refresh-token")
        discovered = OAuth2RefreshToken.from_issuer(fake.base_url, "client-id", "another")
    assert credentials._manager.store is default_store()
    assert password._manager.store is default_store()
    for auth in (chain, discovered):  # a refresh token behind discovery is a chain too
        store = auth._manager.store
        assert isinstance(store, FileStore)
        assert store.path == Path(os.environ["RENEWAUTH_STATE_DIR"]) / "tokens"


@pytest.mark.parametrize("rotated", [True, False])
def test_an_explicit_memory_store_warns_once_when_a_rotated_refresh_token_lives_only_there(
    caplog: pytest.LogCaptureFixture, rotated: bool
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(
        token_lifetime=LIFETIME, rotate_refresh_tokens=rotated, clock=clock
    ) as fake:
        auth = job_chain(fake, MemoryStore(), clock)
        for _ in range(3):
            auth.get_token()
            clock.advance(LIFETIME + 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if not rotated:  # the configured refresh token is all there is: nothing to lose
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    assert "lives only in this process's memory" in warnings[0]


def test_a_new_client_secret_keeps_the_chain() -> None:
    """The store key of a chain is its first refresh token, the token URL, the client id and
    the scope: a rotated client secret finds the chain where the old one left it."""
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        store = MemoryStore()
        old = OAuth2RefreshToken(
            fake.token_url, "client-id", refresh_token, client_secret="client-secret", store=store
        )
        rotated = old.get_token()
        new = OAuth2RefreshToken(
            fake.token_url, "client-id", refresh_token, client_secret="rotated-secret", store=store
        )
        assert new._manager.key == old._manager.key
        assert new.get_token() == rotated  # found, not started again from the spent one
        assert fake.token_calls == 1


# --- 2. a store that went back never costs the chain -----------------------------------------


def _chain(fake: FakeOAuth2Provider, store: object, clock: ManualClock) -> OAuth2RefreshToken:
    return job_chain(fake, store, clock)  # type: ignore[arg-type]


def _getter(auth: OAuth2RefreshToken, mode: str):  # type: ignore[no-untyped-def]
    """`auth.get_token`, or the same through `aget_token` in an event loop of its own."""
    if mode == "sync":
        return auth.get_token
    return lambda: asyncio.run(auth.aget_token())


def _in_thread(call):  # type: ignore[no-untyped-def]
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_restarted_without_persistence_mid_renewal_keeps_the_chain(
    forgetful_redis: RedisServer, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        prefix = f"test:{os.urandom(4).hex()}:"

        def store() -> RedisStore:
            return RedisStore(forgetful_redis.url, prefix=prefix, socket_timeout=1)

        first = _chain(fake, store(), clock)
        first.get_token()
        clock.advance(LIFETIME + 1)
        with fake.hold_token_requests():
            thread, outcome = _in_thread(_getter(first, mode))
            assert fake.wait_for_held_token_requests(1)
            forgetful_redis.restart()  # the token, its generation and the lock: all gone
        thread.join(30)
        renewed = outcome[0]
        assert isinstance(renewed, Token), renewed
        assert store().get(first._manager.key) == renewed  # written again at once
        messages = [r.getMessage() for r in caplog.records]
        assert any("written again" in message for message in messages)
        assert not any("another process renewed" in message for message in messages)
        # Another process continues from it, with no call of its own and nothing stale.
        second = _chain(fake, store(), clock)
        assert second.get_token() == renewed
        clock.advance(LIFETIME + 1)
        assert second.get_token().refresh_token != renewed.refresh_token
        assert fake.stale_refresh_tokens == 0


def test_after_redis_restarts_empty_another_machines_newer_token_is_taken_not_ours(
    forgetful_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted without persistence counts generations from 0 again, so a token
    written since is at a generation below the one this process last saw; for a chain the
    store's token is still weighed by its place on the chain, like ours and the spare's:
    this machine continues from the other machine's newer token instead of presenting its
    own spent refresh token (which a server with reuse detection answers by revoking the
    whole chain)."""
    clock = ManualClock(START)
    machine_a, machine_b = forgetful_redis.directory / "a", forgetful_redis.directory / "b"
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        a = _chain(fake, RedisStore(forgetful_redis.url), clock)
        b = _chain(fake, RedisStore(forgetful_redis.url), clock)

        def on(machine: Path, auth: OAuth2RefreshToken) -> Token:
            monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(machine))
            return auth.get_token()

        for _ in range(3):  # a few renewals: both have seen generation 3 or more
            on(machine_a, a)
            assert on(machine_b, b) == a.get_token()
            clock.advance(LIFETIME + 1)
        forgetful_redis.restart()  # empty
        newest = on(machine_a, a)  # machine A renews first: written at generation 1
        assert on(machine_b, b) == newest
        assert fake.stale_refresh_tokens == 0


def test_a_token_file_deleted_mid_renewal_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        first = _chain(fake, FileStore(tmp_path / "tokens"), clock)
        first.get_token()
        clock.advance(LIFETIME + 1)
        with fake.hold_token_requests():
            thread, outcome = _in_thread(first.get_token)
            assert fake.wait_for_held_token_requests(1)
            (tmp_path / "tokens" / f"{first._manager.key}.json").unlink()
        thread.join(30)
        renewed = outcome[0]
        assert isinstance(renewed, Token), renewed
        assert FileStore(tmp_path / "tokens").get(first._manager.key) == renewed
        assert any("written again" in r.getMessage() for r in caplog.records)
        second = _chain(fake, FileStore(tmp_path / "tokens"), clock)
        clock.advance(LIFETIME + 1)
        second.get_token()
        assert fake.stale_refresh_tokens == 0


def test_a_deleted_token_file_is_restored_from_the_spare_copy(tmp_path: Path) -> None:
    """The store forgot between two renewals: the spare copy on this machine still has the
    newest token of the chain, and a process that never held it continues from it."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        first = _chain(fake, FileStore(tmp_path / "tokens"), clock)
        first.get_token()
        clock.advance(LIFETIME + 1)
        newest = first.get_token()
        (tmp_path / "tokens" / f"{first._manager.key}.json").unlink()
        second = _chain(fake, FileStore(tmp_path / "tokens"), clock)  # a fresh process
        assert second.get_token() == newest  # no call: the spare's token is still valid
        assert FileStore(tmp_path / "tokens").get(first._manager.key) == newest  # restored
        clock.advance(LIFETIME + 1)
        second.get_token()
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls == 3


class _Forgetful(FileStore):
    """A shared store that answers "nothing" to the next `forget` reads (a replica that has
    not caught up, say), then the truth again."""

    forget = 0

    def get_with_generation(self, key: str) -> tuple[Token | None, int]:
        if self.forget > 0:
            self.forget -= 1
            return None, 0
        return super().get_with_generation(key)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_refresh_token_continues_from_a_newer_one_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "machine-a"))
        first = _chain(fake, FileStore(tmp_path / "tokens"), clock)
        forgetful = _Forgetful(tmp_path / "tokens")
        second = _chain(fake, forgetful, clock)
        held = second.get_token()  # both hold the same token now
        clock.advance(LIFETIME + 1)
        newest = first.get_token()  # machine A rotates the chain
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "machine-b"))
        # Machine B reads a store that has not caught up, before the lock and under it.
        forgetful.forget = 2
        assert _getter(second, mode)() == newest  # refused, read again, continued from A's
        assert held.refresh_token != newest.refresh_token
        assert fake.stale_refresh_tokens == 1  # the one refusal
        assert forgetful.get_pause(second._manager.key) is None  # not shared as a pause


def test_a_refusal_of_an_older_refresh_token_never_pauses_the_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "machine-a"))
        first = _chain(fake, FileStore(tmp_path / "tokens"), clock)
        forgetful = _Forgetful(tmp_path / "tokens")
        second = _chain(fake, forgetful, clock)
        second.get_token()
        clock.advance(LIFETIME + 1)
        newest = first.get_token()
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "machine-b"))
        forgetful.forget = 3  # B never sees A's token while it renews (three reads)
        with pytest.raises(InvalidGrant) as refused:
            second.get_token()
        message = str(refused.value)
        assert f"FileStore at {tmp_path / 'tokens'}" in message  # where the chain was sought
        assert newest.refresh_token is not None
        assert newest.refresh_token not in message
        pause = forgetful.get_pause(second._manager.key)
        assert pause is not None
        assert pause.refresh is not None  # about B's refresh token only
        # A holds the newest refresh token: the pause B shared does not stop its renewal.
        monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "machine-a"))
        first.invalidate()  # A renews now, while B's pause lasts
        renewed = first.get_token()
        assert renewed.refresh_token != newest.refresh_token
        # And B, reading the store again, continues from A's chain.
        assert second.get_token() == renewed
        assert fake.stale_refresh_tokens == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_refresh_token_names_the_store_it_was_read_from(
    forgetful_redis: RedisServer, mode: str
) -> None:
    with FakeOAuth2Provider() as fake:
        fake.job_refresh_token = "never-issued"  # type: ignore[attr-defined]
        store = RedisStore(forgetful_redis.url, prefix=f"test:{os.urandom(4).hex()}:")
        auth = _chain(fake, store, ManualClock(START))
        with pytest.raises(InvalidGrant) as refused:
            auth.get_token() if mode == "sync" else asyncio.run(auth.aget_token())
        assert f"redis://127.0.0.1:{forgetful_redis.port}/0" in str(refused.value)
        assert "never-issued" not in str(refused.value)


# --- 3. nothing kept is lost at exit ---------------------------------------------------------

_REFUSING_RUN = """
    import os, sys, requests
    from renewauth import FileStore, OAuth2RefreshToken, StoreError

    class Refusing(FileStore):  # a disk that is full while the flag file exists
        def set_if_generation(self, key, token, generation):
            if os.path.exists(sys.argv[4]):
                raise StoreError("the token store cannot write the token file: No space left")
            return super().set_if_generation(key, token, generation)

    auth = OAuth2RefreshToken(sys.argv[1], "client-id", sys.argv[2],
                              client_secret="client-secret", store=Refusing(sys.argv[5]))
    print(requests.get(sys.argv[3], auth=auth, timeout=10).status_code, flush=True)
"""


def _run_refusing(
    fake: FakeOAuth2Provider, refresh_token: str, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return _child(
        _REFUSING_RUN,
        fake.token_url,
        refresh_token,
        fake.api_url + "orders",
        str(tmp_path / "disk-full"),
        str(tmp_path / "tokens"),
        env=env,
    )


def test_a_token_the_store_refused_until_the_exit_is_continued_by_the_next_process(
    tmp_path: Path,
) -> None:
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        environment = _environment(tmp_path / "state")
        assert _run_refusing(fake, refresh_token, tmp_path, environment).returncode == 0
        fake.revoke_access_tokens()
        (tmp_path / "disk-full").write_text("")  # the disk fills up
        run = _run_refusing(fake, refresh_token, tmp_path, environment)
        assert run.stdout.strip() == "200", run.stderr
        assert "left in" in run.stderr  # a WARNING saying where the token waits
        assert refresh_token not in run.stderr
        (tmp_path / "disk-full").unlink()  # freed only after that process exited
        fake.revoke_access_tokens()
        after = _run_refusing(fake, refresh_token, tmp_path, environment)
        assert after.stdout.strip() == "200", after.stderr
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"refresh_token": 3}


def test_an_exit_with_nowhere_to_keep_the_token_says_the_chain_breaks(tmp_path: Path) -> None:
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        (tmp_path / "a-file").write_text("")
        environment = _environment(tmp_path / "a-file" / "state")  # no state directory either
        (tmp_path / "disk-full").write_text("")
        run = _run_refusing(fake, refresh_token, tmp_path, environment)
        assert run.stdout.strip() == "200", run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR")]
        assert len(errors) == 1, run.stderr
        assert fake.token_url.rsplit("/oauth", 1)[0] in errors[0]  # the credential's origin
        assert "store key" in errors[0]
        assert "chain breaks" in errors[0]
        assert refresh_token not in run.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["/bin/mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["/bin/umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_token_survives_a_disk_that_stays_full_until_after_the_exit(
    small_disk: Path, tmp_path: Path
) -> None:
    """The store and the state directory on one real file system that fills up: the kept
    token goes to the runtime directory (a RAM disk on a desktop or server)."""
    run_code = """
        import sys, requests
        from renewauth import OAuth2RefreshToken
        auth = OAuth2RefreshToken(sys.argv[1], "client-id", sys.argv[2],
                                  client_secret="client-secret")  # the durable default
        print(requests.get(sys.argv[3], auth=auth, timeout=10).status_code, flush=True)
    """
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        environment = _environment(small_disk / "state", XDG_RUNTIME_DIR=str(runtime))

        def run() -> subprocess.CompletedProcess[str]:
            return _child(
                run_code, fake.token_url, refresh_token, fake.api_url + "orders", env=environment
            )

        first = run()
        assert first.stdout.strip() == "200", first.stderr
        fake.revoke_access_tokens()
        _fill(small_disk)
        full = run()
        assert full.stdout.strip() == "200", full.stderr
        assert str(runtime) in full.stderr  # where the kept token was left
        (small_disk / "filler").unlink()
        fake.revoke_access_tokens()
        after = run()
        assert after.stdout.strip() == "200", after.stderr
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"refresh_token": 3}


# --- 4. store errors are StoreError ------------------------------------------------------------


def _unlockable(tmp_path: Path, key: str) -> FileStore:
    """A FileStore whose lock file cannot be created: the path is taken by a directory."""
    store = FileStore(tmp_path / "tokens")
    (tmp_path / "tokens" / f"{key}.lock").mkdir()
    return store


def test_a_file_store_that_cannot_lock_raises_store_error_naming_it(tmp_path: Path) -> None:
    store = _unlockable(tmp_path, "ab12")
    with pytest.raises(StoreError) as failed, store.lock("ab12"):
        pass
    assert str(tmp_path / "tokens" / "ab12.lock") in str(failed.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_grant_that_loses_nothing_renews_in_its_process_while_the_store_cannot_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    with FakeOAuth2Provider() as fake:
        probe = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret")
        store = _unlockable(tmp_path, probe._manager.key)
        auth = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", store=store)
        token = auth.get_token() if mode == "sync" else asyncio.run(auth.aget_token())
        assert token.access_token
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "unreachable" in warnings[0]


def test_a_chain_whose_store_cannot_lock_raises_store_error_not_oserror(
    tmp_path: Path,
) -> None:
    with FakeOAuth2Provider() as fake:
        probe = _chain(fake, MemoryStore(), ManualClock(START))
        store = _unlockable(tmp_path, probe._manager.key)
        auth = _chain(fake, store, ManualClock(START))
        with pytest.raises(StoreError):
            auth.get_token()
        assert fake.token_calls == 0  # a refresh token is never spent without the lock


def test_a_full_disk_never_makes_a_grant_that_loses_nothing_wait_for_the_lock(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        full = FullDiskStore(tmp_path / "tokens")
        first = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=full, clock=clock
        )
        full.full.set()
        first.get_token()  # kept in memory; its writer keeps trying
        assert first._manager._renewal.keeper.kept is not None
        second = OAuth2ClientCredentials(
            fake.token_url,
            "client-id",
            "client-secret",
            store=FileStore(tmp_path / "tokens"),
            clock=clock,
        )
        thread, outcome = _in_thread(second.get_token)
        thread.join(60)  # it used to wait for the writer's lock: 300 s
        assert not thread.is_alive()
        assert isinstance(outcome[0], Token)
        full.full.clear()


# --- 6. a refresh token's life counts from when it was first seen ---------------------------

DAY = 86400.0


def _year_long_refresh_token(clock: ManualClock) -> FakeOAuth2Provider:
    """A server that keeps one refresh token for a year (not rotated), counting its life
    down in `refresh_expires_in`."""
    return FakeOAuth2Provider(
        token_lifetime=3600,
        rotate_refresh_tokens=False,
        refresh_token_lifetime=365 * DAY,
        clock=clock,
    )


def test_a_fixed_end_refresh_token_is_warned_about_however_often_it_is_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from renewauth import events

    clock = ManualClock(START)
    seen: list[object] = []
    with _year_long_refresh_token(clock) as fake:
        auth = job_chain(fake, MemoryStore(), clock, on_event=seen.append)
        while clock.now < START + 365 * DAY - 8 * DAY:  # daily use for a year
            auth.get_token()
            clock.advance(DAY)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        clock.now = START + 365 * DAY - 2.4 * 3600
        token = auth.get_token()  # 2.4 hours before the end
        auth.get_token()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "ends in 2 h 24 min" in warnings[0] or "ends in 2 h 23 min" in warnings[0]
    expiring = [event for event in seen if isinstance(event, events.RefreshTokenExpiring)]
    assert len(expiring) == 1
    assert not expiring[0].idle
    assert token.refresh_seen_at == START  # first seen a year ago


def test_renewauth_check_reports_a_fixed_end_refresh_token_near_its_end() -> None:
    from renewauth.cli import _check_entry

    clock = ManualClock(START)
    with _year_long_refresh_token(clock) as fake:
        auth = job_chain(fake, MemoryStore(), clock)
        auth.get_token()
        clock.advance(365 * DAY - 2.4 * 3600)
        report = _check_entry("user", auth, clock.now)
    assert report["status"] == "warning"
    assert json.dumps(report)  # the --json shape


def test_a_read_only_file_system_is_a_store_error_and_client_credentials_renew_locally(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeOAuth2Provider() as fake:
        store = FileStore(small_disk / "tokens")
        remount = subprocess.run(
            ["/bin/mount", "-o", "remount,ro", str(small_disk)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert remount.returncode == 0, remount.stderr
        with pytest.raises(StoreError, match="Read-only file system"), store.lock("ab12"):
            pass
        auth = OAuth2ClientCredentials(fake.token_url, "client-id", "client-secret", store=store)
        assert auth.get_token().access_token  # renewed in this process, 1 call
        assert fake.token_calls == 1
        chain = _chain(fake, store, ManualClock(START))
        with pytest.raises(StoreError):
            chain.get_token()  # a refresh token is never spent without the store's lock
        assert fake.token_calls == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings


def test_a_discovered_refresh_token_is_never_spent_without_the_stores_lock(
    tmp_path: Path,
) -> None:
    with FakeOAuth2Provider() as fake:
        probe = OAuth2RefreshToken.from_issuer(fake.base_url, "client-id", "refresh-token")
        store = _unlockable(tmp_path, probe._manager.key)
        auth = OAuth2RefreshToken.from_issuer(
            fake.base_url, "client-id", "refresh-token", store=store
        )
        with pytest.raises(StoreError):
            auth.get_token()
        assert fake.token_calls == 0


# --- found by review: each failed before its fix ---------------------------------------------


@pytest.mark.parametrize("cause", ["refused", "retry-after"])
def test_a_shared_pause_ends_though_processes_take_turns_hitting_it(
    tmp_path: Path, cause: str
) -> None:
    """A request that a pause stops makes no call, so it must not start the pause again: two
    processes taking turns would push it forward for ever."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        secret = "wrong-secret" if cause == "refused" else "client-secret"
        first, second = (
            OAuth2ClientCredentials(
                fake.token_url,
                "client-id",
                secret,
                store=FileStore(tmp_path / "tokens"),
                clock=clock,
                retries=0,
            )
            for _ in range(2)
        )
        if cause == "retry-after":
            fake.fail_token_requests(503, headers={"Retry-After": "60"})
        failures = 0
        for turn in range(30):  # five minutes, a request every 10 s, taking turns
            try:
                (first if turn % 2 == 0 else second).get_token()
            except TokenRequestError:
                failures += 1
            clock.advance(10)
    if cause == "refused":
        assert failures == 30
        assert 4 <= fake.token_calls <= 6  # one call per 60 s pause between them
    else:
        assert failures <= 7  # the 60 s the server asked for, then tokens again
        assert fake.tokens_issued >= 1


class _RefusingRedis(RedisStore):
    """A Redis that refuses writes while `refuse` is set (out of memory, say)."""

    refuse = False

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        if self.refuse:
            raise StoreError("the token store, Redis, could not write (OOM command not allowed)")
        return super().set_if_generation(key, token, generation)


def test_a_restart_while_a_kept_token_waits_never_spends_a_refresh_token_twice(
    forgetful_redis: RedisServer,
) -> None:
    """C renewed but Redis refused the write; Redis then restarts empty (its lease gone) while
    C's token is due again. C renews from its kept token while A, on the same machine, wants a
    token too: this machine's lock, held by C's writer, keeps A from the spare's copy of the
    refresh token C is spending."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        refusing = _RefusingRedis(forgetful_redis.url, prefix="t:", socket_timeout=1)
        kept_by = _chain(fake, refusing, clock)
        other = _chain(fake, RedisStore(forgetful_redis.url, prefix="t:", socket_timeout=1), clock)
        kept_by.get_token()
        clock.advance(LIFETIME + 1)
        refusing.refuse = True
        kept = kept_by.get_token()  # kept in memory and in the spare copy
        clock.advance(LIFETIME + 1)
        forgetful_redis.restart()
        renewing, renewed = _in_thread(kept_by.get_token)
        waiting, adopted = _in_thread(other.get_token)
        renewing.join(30)
        refusing.refuse = False  # the writer writes, then lets the locks go
        waiting.join(30)
        assert not waiting.is_alive()
        assert isinstance(renewed[0], Token), renewed
        assert isinstance(adopted[0], Token), adopted
        assert fake.stale_refresh_tokens == 0
        assert RedisStore(forgetful_redis.url, prefix="t:").get(other._manager.key).sequence > (
            kept.sequence
        )


def test_a_stale_read_under_the_lock_never_discards_the_renewed_token(tmp_path: Path) -> None:
    """A store that answers with nothing once (a lagging replica) while a 401 renews: the
    renewed token is written (the store had gone back), never left in memory alone."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        store = _Forgetful(tmp_path / "tokens")
        auth = _chain(fake, store, clock)
        first = auth.get_token()
        store.forget = 2  # the read before the lock, and the one under it
        renewed = auth._manager.renew_rejected(first)  # the API answered 401
        assert renewed is not None
        assert renewed.refresh_token != first.refresh_token
        assert FileStore(tmp_path / "tokens").get(auth._manager.key) == renewed
        fresh = _chain(fake, FileStore(tmp_path / "tokens"), clock)  # the next process
        clock.advance(LIFETIME + 1)
        fresh.get_token()
        assert fake.stale_refresh_tokens == 0


def test_client_credentials_adopt_a_fresh_token_in_the_store_whatever_its_sequence(
    tmp_path: Path,
) -> None:
    """Only a chain orders tokens by sequence: for any other grant the store's valid token
    wins (one written by an earlier version has sequence 0)."""
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url,
            "client-id",
            "client-secret",
            store=FileStore(tmp_path / "tokens"),
            clock=clock,
        )
        auth.get_token()
        clock.advance(LIFETIME - 20)  # in its soft window
        fresh = Token(access_token="fresh", expires_at=clock.now + LIFETIME, issued_at=clock.now)
        FileStore(tmp_path / "tokens").set(auth._manager.key, fresh)
        calls = fake.token_calls
        auth.get_token()  # the valid token at once; the renewal reads the store meanwhile
        settle()
        assert auth.get_token() == fresh
        assert fake.token_calls == calls


def test_an_event_loop_that_ends_during_a_chains_token_call_loses_nothing(
    tmp_path: Path,
) -> None:
    """The caller gives up (a timeout) and its `asyncio.run` ends while the token call is at
    the server: the server rotates the refresh token anyway, so the call runs on to the
    spare copy, and the next run continues from it."""
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()

        def auth() -> OAuth2RefreshToken:
            return OAuth2RefreshToken(
                fake.token_url,
                "client-id",
                refresh_token,
                client_secret="client-secret",
                store=FileStore(tmp_path / "tokens"),
            )

        gave_up = threading.Event()

        async def impatient() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(auth().aget_token(), 0.2)
            gave_up.set()  # and asyncio.run cancels what is left

        with fake.hold_token_requests():
            run, _ = _in_thread(lambda: asyncio.run(impatient()))
            assert fake.wait_for_held_token_requests(1)
            assert gave_up.wait(30)
        run.join(30)
        assert not run.is_alive()
        auth().get_token()  # the next run
        assert fake.stale_refresh_tokens == 0


class _RefusingFiles(FileStore):
    """A disk that refuses every token write."""

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        raise StoreError("the token store cannot write the token file: No space left")


def _renew_in_worker(token_url: str, refresh_token: str, directory: str) -> None:
    """A multiprocessing worker: renews, then returns (a fork or forkserver worker ends with
    os._exit, so no exit hook runs; forkserver, because forking this multi-threaded test
    process itself could deadlock the child)."""
    OAuth2RefreshToken(
        token_url,
        "client-id",
        refresh_token,
        client_secret="client-secret",
        store=_RefusingFiles(directory),
    ).get_token()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_multiprocessing_worker_that_renews_and_ends_leaves_its_token(
    tmp_path: Path, method: str
) -> None:
    import multiprocessing

    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        context = multiprocessing.get_context(method)
        worker = context.Process(
            target=_renew_in_worker, args=(fake.token_url, refresh_token, str(tmp_path / "t"))
        )
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
        _ = OAuth2RefreshToken(
            fake.token_url,
            "client-id",
            refresh_token,
            client_secret="client-secret",
            store=FileStore(tmp_path / "t"),
        ).get_token()
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls == 1  # continued from the worker's token, which is still valid


_TWICE_RUN = """
    import os, sys, requests
    from renewauth import FileStore, OAuth2RefreshToken, StoreError

    class Refusing(FileStore):  # a full disk while the flag file exists
        def set_if_generation(self, key, token, generation):
            if os.path.exists(sys.argv[4]):
                raise StoreError("the token store cannot write the token file: No space left")
            return super().set_if_generation(key, token, generation)

    offset = [0.0]
    import time
    auth = OAuth2RefreshToken(sys.argv[1], "client-id", sys.argv[2],
                              client_secret="client-secret", store=Refusing(sys.argv[5]),
                              clock=lambda: time.time() + offset[0])
    print(requests.get(sys.argv[3], auth=auth, timeout=10).status_code)  # kept
    offset[0] += 4000  # that token expires: the next renewal is from the kept token
    print(requests.get(sys.argv[3], auth=auth, timeout=10).status_code)
"""


def test_a_token_renewed_from_a_kept_one_is_the_one_left_at_exit(tmp_path: Path) -> None:
    with FakeOAuth2Provider(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        environment = _environment(tmp_path / "state")
        (tmp_path / "disk-full").write_text("")
        arguments = [
            fake.token_url,
            refresh_token,
            fake.api_url + "orders",
            str(tmp_path / "disk-full"),
            str(tmp_path / "tokens"),
        ]
        twice = _child(_TWICE_RUN, *arguments, env=environment)
        assert twice.stdout.split() == ["200", "200"], twice.stderr
        (tmp_path / "disk-full").unlink()
        fake.revoke_access_tokens()
        after = _run_refusing(fake, refresh_token, tmp_path, environment)
        assert after.stdout.strip() == "200", after.stderr
        assert fake.stale_refresh_tokens == 0
        assert fake.token_calls_by_grant == {"refresh_token": 3}


def test_invalidate_while_a_token_is_kept_expires_it_without_waiting_for_the_store(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START)
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        full = FullDiskStore(tmp_path / "tokens")
        auth = _chain(fake, full, clock)
        auth.get_token()
        clock.advance(LIFETIME + 1)
        full.full.set()
        kept = auth.get_token()  # kept; the writer holds the store's lock
        auth.invalidate()  # used to wait for that lock: 300 s
        renewed = auth.get_token()
        assert renewed.refresh_token != kept.refresh_token  # renewed from the kept token
        full.full.clear()
        assert fake.stale_refresh_tokens == 0
