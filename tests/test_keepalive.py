"""A technical user's refresh token: the warning before it ends, and keepalive()."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Iterator

import pytest

from renewauth import MemoryStore, events
from renewauth.cli import main
from renewauth.config import load_config
from renewauth.manager import KEEPALIVE_SHARE
from renewauth.providers import Keycloak
from renewauth.testing import FakeKeycloak

from .helpers import ManualClock

DAY = 86400.0
IDLE = 30 * DAY


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def keycloak(clock: ManualClock) -> Iterator[FakeKeycloak]:
    with FakeKeycloak(clock=clock, token_lifetime=300) as fake:
        yield fake


def technical_user(
    fake: FakeKeycloak, clock: ManualClock, *, offline: bool = True, **options: object
) -> Keycloak:
    return Keycloak(
        fake.server_url,
        "portal",
        client_id="portal-client",
        client_secret="portal-secret",
        refresh_token=fake.issue_refresh_token(offline=offline),
        store=MemoryStore(),
        clock=clock,
        **options,  # type: ignore[arg-type]  # options of the test's choosing
    )


def twin(fake: FakeKeycloak, clock: ManualClock, refresh_token: str, **options: object) -> Keycloak:
    """An auth object for the same technical user (same store entry as its twins)."""
    return Keycloak(
        fake.server_url,
        "portal",
        client_id="portal-client",
        client_secret="portal-secret",
        refresh_token=refresh_token,
        clock=clock,
        **options,  # type: ignore[arg-type]  # options of the test's choosing
    )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
        and "refresh token for" in record.getMessage()
        and " ends in " in record.getMessage()  # not the warning about a chain kept in memory
    ]


def test_keycloak_offline_refresh_token_has_no_stated_expiry(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    token = technical_user(keycloak, clock).get_token()
    assert token.refresh_expires_at is None
    assert token.refresh_used_at == clock.now


def test_keycloak_session_refresh_token_expiry_is_read(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    token = technical_user(keycloak, clock, offline=False).get_token()
    assert token.refresh_expires_at == clock.now + 1800


def test_manager_warns_once_when_refresh_token_enters_its_idle_window(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside the last 20 % (at most 7 days) of 30 idle days: one WARNING per refresh token."""
    with FakeKeycloak(clock=clock, token_lifetime=40 * DAY) as fake:
        store = MemoryStore()
        refresh_token = fake.issue_refresh_token()
        first, second, third = (
            twin(fake, clock, refresh_token, store=store, refresh_idle_timeout=IDLE)
            for _ in range(3)
        )
        first.get_token()
        clock.advance(IDLE - 6 * DAY - 60)  # just before the window (20 % of 30 days)
        second.get_token()  # adopts the stored token: no warning yet
        assert warnings_of(caplog) == []
        clock.advance(120)
        third.get_token()  # adopts it inside the window
        third.get_token()
        third.keepalive()  # renews (past half its idle window): the new one is fresh
        messages = warnings_of(caplog)
    assert len(messages) == 1
    assert "5 d 23 h" in messages[0]
    assert "keepalive" in messages[0]


def test_manager_does_not_warn_when_the_refresh_end_is_unknown(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeKeycloak(clock=clock, token_lifetime=400 * DAY) as fake:
        store = MemoryStore()
        refresh_token = fake.issue_refresh_token()
        twin(fake, clock, refresh_token, store=store).get_token()
        clock.advance(399 * DAY)
        twin(fake, clock, refresh_token, store=store).get_token()
    assert warnings_of(caplog) == []


def test_keepalive_does_nothing_before_its_share_of_the_idle_window(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    auth = technical_user(keycloak, clock, refresh_idle_timeout=IDLE)
    auth.get_token()
    calls = keycloak.token_calls
    clock.advance(IDLE * KEEPALIVE_SHARE - 60)
    assert auth.keepalive() is False
    assert keycloak.token_calls == calls


def test_keepalive_renews_past_its_share_of_the_idle_window(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    auth = technical_user(keycloak, clock, refresh_idle_timeout=IDLE)
    auth.get_token()
    calls = keycloak.token_calls
    clock.advance(IDLE * KEEPALIVE_SHARE + 60)
    assert auth.keepalive() is True
    assert keycloak.token_calls == calls + 1
    token = auth.token
    assert token is not None
    assert token.refresh_used_at == clock.now


def test_akeepalive_renews_once_for_twenty_tasks(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    """Through the usual single flight: 20 tasks past the window make one token call."""
    auth = technical_user(keycloak, clock, refresh_idle_timeout=IDLE)

    async def scenario() -> list[bool]:
        await auth.aget_token()
        clock.advance(IDLE * 0.9)
        with keycloak.hold_token_requests():
            tasks = [asyncio.create_task(auth.akeepalive()) for _ in range(20)]
            await asyncio.to_thread(keycloak.wait_for_held_token_requests, 1)
            await asyncio.sleep(0)  # let every task reach the flight
        return await asyncio.gather(*tasks)

    calls_before = 1
    results = asyncio.run(scenario())
    assert keycloak.token_calls == calls_before + 1
    assert any(results)


def test_keepalive_adopts_what_another_object_renewed_in_the_store(
    keycloak: FakeKeycloak, clock: ManualClock
) -> None:
    store = MemoryStore()
    refresh_token = keycloak.issue_refresh_token()
    first = twin(keycloak, clock, refresh_token, store=store, refresh_idle_timeout=IDLE)
    second = twin(keycloak, clock, refresh_token, store=store, refresh_idle_timeout=IDLE)
    first.get_token()
    clock.advance(IDLE * 0.9)
    assert first.keepalive() is True
    calls = keycloak.token_calls
    assert second.keepalive() is False
    assert keycloak.token_calls == calls


def _technical_user_config(tmp_path: pathlib.Path, fake: FakeKeycloak) -> pathlib.Path:
    config = tmp_path / "renewauth.toml"
    config.write_text(
        f"""
[auth.portal]
provider = "keycloak"
server_url = "{fake.server_url}"
realm = "portal"
client_id = "portal-client"
client_secret_env = "KC_SECRET"
refresh_token_env = "KC_REFRESH"
refresh_idle_timeout = {IDLE}
store_path = "{tmp_path}/tokens"
"""
    )
    config.chmod(0o600)
    return config


def test_keepalive_command_renews_only_the_entry_past_half_its_idle_window(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run: no stored token, so it fetches; second: not due; then an old stored token
    (its refresh token last used 20 days ago) is renewed, and the store has the new one."""
    with FakeKeycloak() as fake:
        monkeypatch.setenv("KC_SECRET", "portal-secret")
        monkeypatch.setenv("KC_REFRESH", fake.issue_refresh_token())
        config = _technical_user_config(tmp_path, fake)
        assert main(["keepalive", "--config", str(config)]) == 0
        assert main(["keepalive", "--config", str(config)]) == 0
        assert capsys.readouterr().out.split("\n")[:2] == ["renewed  portal", "not due  portal"]
        entry = load_config(str(config))["portal"]
        store, key = entry.auth._manager.store, entry.auth._manager.key
        stored = store.get(key)
        assert stored is not None
        store.set(key, dataclasses.replace(stored, refresh_used_at=time.time() - 20 * DAY))
        calls = fake.token_calls
        assert main(["keepalive", "--config", str(config)]) == 0
        assert capsys.readouterr().out.strip() == "renewed  portal"
        assert fake.token_calls == calls + 1
        renewed = store.get(key)
        assert renewed is not None
        assert renewed.refresh_used_at is not None
        assert renewed.refresh_used_at > time.time() - DAY


def test_keepalive_command_exits_1_and_names_the_error_when_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeKeycloak() as fake:
        monkeypatch.setenv("KC_SECRET", "portal-secret")
        monkeypatch.setenv("KC_REFRESH", "not-a-refresh-token")
        assert main(["keepalive", "--config", str(_technical_user_config(tmp_path, fake))]) == 1
    output = capsys.readouterr().out
    assert output.startswith("error    portal: InvalidGrant")
    assert "not-a-refresh-token" not in output


def test_refresh_token_expiring_event_comes_with_the_warning(clock: ManualClock) -> None:
    seen: list[events.Event] = []
    with FakeKeycloak(clock=clock, token_lifetime=40 * DAY) as fake:
        store = MemoryStore()
        refresh_token = fake.issue_refresh_token()
        twin(fake, clock, refresh_token, store=store, refresh_idle_timeout=IDLE).get_token()
        clock.advance(IDLE - DAY)
        later = twin(
            fake, clock, refresh_token, store=store, refresh_idle_timeout=IDLE, on_event=seen.append
        )
        later.get_token()
    expiring = [event for event in seen if isinstance(event, events.RefreshTokenExpiring)]
    assert expiring == [
        events.RefreshTokenExpiring(
            origin=fake.base_url, ends_at=clock.now + DAY, ends_in=DAY, idle=True
        )
    ]


def test_check_exits_0_1_2_and_prints_the_json_shape_without_a_secret(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ok -> 0; a refresh token 29 of 30 idle days old -> 1 (warning); a refused one -> 2."""
    with FakeKeycloak() as fake:
        refresh_token = fake.issue_refresh_token()
        monkeypatch.setenv("KC_SECRET", "portal-secret")
        monkeypatch.setenv("KC_REFRESH", refresh_token)
        config = _technical_user_config(tmp_path, fake)
        assert main(["check", "--config", str(config), "--json"]) == 0
        healthy = json.loads(capsys.readouterr().out)
        entry = load_config(str(config))["portal"]
        store, key = entry.auth._manager.store, entry.auth._manager.key
        stored = store.get(key)
        assert stored is not None
        store.set(key, dataclasses.replace(stored, refresh_used_at=time.time() - 29 * DAY))
        assert main(["check", "--config", str(config), "--json"]) == 1
        warned = json.loads(capsys.readouterr().out)
        assert main(["check", "--config", str(config)]) == 1
        text = capsys.readouterr().out
        store.delete(key)
        monkeypatch.setenv("KC_REFRESH", "refused-refresh-token")
        assert main(["check", "--config", str(config), "--json"]) == 2
        failed = json.loads(capsys.readouterr().out)
    (report,) = healthy["entries"]
    assert set(report) == {
        "name",
        "status",
        "access_expires_in",
        "refresh_expires_in",
        "store",
        "last_renewal",
    }
    assert (report["name"], report["status"], report["store"]) == ("portal", "ok", "file")
    assert 290 < report["access_expires_in"] <= 300
    assert IDLE - 60 < report["refresh_expires_in"] <= IDLE
    assert 0 <= report["last_renewal"] < 60
    assert warned["entries"][0]["status"] == "warning"
    assert DAY - 60 < warned["entries"][0]["refresh_expires_in"] <= DAY
    assert text.startswith("warning portal:")
    assert failed["entries"] == [
        {
            "name": "portal",
            "status": "failed",
            "access_expires_in": None,
            "refresh_expires_in": None,
            "store": "file",
            "last_renewal": None,
        }
    ]
    everything = json.dumps([healthy, warned, failed]) + text
    for secret in ("portal-secret", refresh_token, "refused-refresh-token", stored.access_token):
        assert secret not in everything
