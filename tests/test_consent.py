"""The first consent (issue 22): `OAuth2AuthorizationCode` and `OAuth2DeviceCode` against node's
oidc-provider on loopback (tests/oidc_consent_server.mjs), with a person's browser played over
HTTP by tests/consent_browser.py; then the chain each login stores, renewed and rotated.

Time never passes for real here: the objects run on a fake clock that a test moves past a
token's lifetime, and the device flow's waits go to an injected `sleep` that records them and
waits only for the browser process to finish (an event, not a guess).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from renewauth import (
    AccessDenied,
    ConfigurationError,
    ConsentExpired,
    DevicePrompt,
    FileStore,
    InvalidGrant,
    LoginRequired,
    MemoryStore,
    OAuth2AuthorizationCode,
    OAuth2DeviceCode,
    RedisStore,
    StoreError,
    Token,
    TokenEndpointUnavailable,
    TokenRequestError,
    events,
)
from renewauth._consent import (
    code_challenge,
    new_verifier,
    parse_device_authorization,
    poll_outcome,
)
from renewauth.config import load_config
from renewauth.flows import TokenResponse

from .consent_browser import STOLEN_CODE
from .oidc_fixture import npm_prefix
from .redis_server import RedisServer

HERE = pathlib.Path(__file__).parent
LIFETIME = 60  # seconds an access token lives; the fake clock moves past it
MANY = 12  # lifetimes a chain is renewed across
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid offline_access"


@dataclass(frozen=True)
class ConsentServer:
    issuer: str

    def refuse_codes(self, refuse: bool) -> None:
        switch = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.issuer}/refuse-codes", data=b"on" if refuse else b"off"
        )
        with urllib.request.urlopen(switch, timeout=10) as response:  # noqa: S310
            assert response.status == 204

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.issuer}/counts", timeout=10) as response:  # noqa: S310
            counts: dict[str, Any] = json.load(response)
            return counts


def _client(client_id: str, grants: list[str], **metadata: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "token_endpoint_auth_method": "none",
        "grant_types": grants,
        "response_types": [],
        "redirect_uris": [],
        **metadata,
    }


def _native(client_id: str) -> dict[str, Any]:
    """A native app's client (RFC 8252): the code flow, a loopback redirect on any port."""
    return _client(
        client_id,
        ["authorization_code", "refresh_token"],
        response_types=["code"],
        redirect_uris=["http://127.0.0.1/callback"],
        application_type="native",
    )


@pytest.fixture(scope="module")
def consent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsentServer]:
    prefix = npm_prefix()
    directory = tmp_path_factory.mktemp("consent")
    # ES module imports resolve from the script's directory: give it the installed packages.
    (directory / "node_modules").symlink_to(prefix / "node_modules", target_is_directory=True)
    script = directory / "oidc_consent_server.mjs"
    shutil.copyfile(HERE / "oidc_consent_server.mjs", script)
    device = [DEVICE_CODE, "refresh_token"]
    config = {
        "lifetime": LIFETIME,
        "device_lifetime": 600,
        "clients": [
            _native("consent-cli"),
            _client("consent-device", device),
            _client("consent-slow", device),
            _client("consent-flaky", device),
            _client("consent-busy", device),
            _client("consent-once", [DEVICE_CODE]),  # no refresh_token grant: no refresh token
            _native("consent-cli-run"),
            _client("consent-device-run", device),
        ],
        "quick_device_clients": ["consent-device-run"],
    }
    (directory / "config.json").write_text(json.dumps(config))
    errors = (directory / "node.err").open("w")
    process = subprocess.Popen(
        [str(shutil.which("node")), str(script), str(directory / "config.json")],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        pytest.fail(f"oidc-provider did not start: {(directory / 'node.err').read_text()[-2000:]}")
    try:
        yield ConsentServer(issuer=f"http://127.0.0.1:{json.loads(line)['port']}")
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        errors.close()


class Clock:
    """A clock the test moves; it starts at the real time so the server's JWTs agree."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """`BROWSER` set to the test's browser; the file it writes what it saw to."""
    log = tmp_path / "browser.jsonl"
    command = f"{sys.executable} {HERE / 'consent_browser.py'} %s"
    monkeypatch.setenv("BROWSER", command)
    monkeypatch.setenv("CONSENT_BROWSER_LOG", str(log))
    # webbrowser reads BROWSER once, when first used: make it read it again.
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    return log


def _events(log: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


class DeviceBrowser:
    """`show` for the device flow: starts the browser on the complete URI; `sleep` records
    each wait and, the first time, waits for that browser to finish."""

    def __init__(self, mode: str = "allow") -> None:
        self.mode = mode
        self.process: subprocess.Popen[bytes] | None = None
        self.shown: list[DevicePrompt] = []
        self.waits: list[float] = []

    def show(self, prompt: DevicePrompt) -> None:
        self.shown.append(prompt)
        assert prompt.verification_uri_complete is not None
        env = {**os.environ, "CONSENT_BROWSER_MODE": self.mode}
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "consent_browser.py"), prompt.verification_uri_complete],
            env=env,
        )

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        assert self.process is not None
        assert self.process.wait(timeout=60) == 0


def _renew_across_lifetimes(auth: Any, clock: Clock, times: int) -> list[Token]:
    """Move the clock past the token's life `times` times; each request renews."""
    tokens = [auth.get_token()]
    for _ in range(times):
        clock.now += LIFETIME + 1
        tokens.append(auth.get_token())
    return tokens


def _assert_no_secrets(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a secret reached the output"


# --- the authorization code flow ------------------------------------------------------------


def test_authorization_code_login_stores_a_chain_that_rotates(
    consent: ConsentServer,
    browser: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CONSENT_BROWSER_MODE", "wrong-state-first")
    verifiers: list[str] = []
    import renewauth.consent

    made = renewauth.consent.new_verifier
    monkeypatch.setattr(
        renewauth.consent, "new_verifier", lambda: verifiers.append(made()) or verifiers[-1]
    )
    before = consent.counts()
    clock, seen = Clock(), []
    store = FileStore(tmp_path / "tokens")
    auth = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=store, clock=clock,
        on_token=seen.append,
    )  # fmt: skip

    first = auth.login(timeout=60)

    events = _events(browser)
    assert events[0] == {"step": "wrong-state", "status": 400}
    assert events[-1] == {"step": "callback", "status": 200, "loopback": True}
    after = consent.counts()
    exchanged = after["exchangedCodes"][len(before["exchangedCodes"]) :]
    assert len(exchanged) == 1
    assert STOLEN_CODE not in after["exchangedCodes"]
    assert first.refresh_token
    assert auth.token == first

    tokens = _renew_across_lifetimes(auth, clock, MANY)
    refreshes = [token.refresh_token for token in tokens]
    assert len(set(refreshes)) == MANY + 1  # rotated on every renewal
    final = consent.counts()
    assert (
        final["tokenCalls"].get("refresh_token", 0) - before["tokenCalls"].get("refresh_token", 0)
        == MANY
    )
    assert final["refreshRefused"] == before["refreshRefused"]

    # A later run (a new object, the same store) continues the chain.
    again = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=FileStore(tmp_path / "tokens"),
        clock=clock,
    )  # fmt: skip
    clock.now += LIFETIME + 1
    continued = again.get_token()
    assert continued.refresh_token not in refreshes
    assert consent.counts()["refreshRefused"] == before["refreshRefused"]

    out = capsys.readouterr()
    assert "To log in, open this URL" in out.err
    secrets = [*exchanged, *verifiers]
    for token in [*tokens, continued, *seen]:
        secrets += [token.access_token, token.refresh_token or "-"]
    _assert_no_secrets(out.out + out.err + caplog.text + repr(auth) + repr(tokens), secrets)


def test_a_login_after_a_step_up_asks_for_the_stronger_login(
    consent: ConsentServer, browser: pathlib.Path
) -> None:
    """What `events.StepUpRequired` names goes into the next login's URL (OpenID Connect
    `acr_values`, `max_age`), and oidc-provider completes that login."""
    step_up = events.StepUpRequired(
        origin="https://api.example.com", status=401, acr_values=("mfa", "phr"), max_age=300
    )
    shown: list[str] = []
    auth = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=MemoryStore()
    )
    token = auth.login(  # an iterator will do: it is read once
        shown.append, timeout=60, acr_values=iter(step_up.acr_values), max_age=step_up.max_age
    )
    assert token.refresh_token
    query = dict(parse_qsl(urlsplit(shown[0]).query))
    assert (query["acr_values"], query["max_age"]) == ("mfa phr", "300")
    with pytest.raises(ConfigurationError, match="acr_values="):
        auth.login(shown.append, acr_values="mfa")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="acr_values="):
        auth.login(shown.append, acr_values=["mfa", "two words"])
    with pytest.raises(ConfigurationError, match="max_age="):
        auth.login(shown.append, max_age=-1)
    assert len(shown) == 1  # refused before any URL


def test_authorization_code_declined_is_access_denied(
    consent: ConsentServer, browser: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_BROWSER_MODE", "deny")
    before = consent.counts()
    shown: list[str] = []
    auth = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=MemoryStore()
    )
    with pytest.raises(AccessDenied) as caught:
        auth.login(shown.append, timeout=60)
    assert caught.value.error == "access_denied"
    assert len(shown) == 1
    assert "code_challenge_method=S256" in shown[0]
    assert consent.counts()["exchangedCodes"] == before["exchangedCodes"]
    with pytest.raises(LoginRequired):
        auth.get_token()


def test_a_callback_with_a_wrong_state_is_refused_and_never_exchanged(
    consent: ConsentServer,
) -> None:
    """Only the loopback server and the token endpoint: a callback with a wrong state (and a
    code) is answered 400; the login then ends with the right state's error, no exchange."""
    before = consent.counts()
    statuses: list[int] = []
    threads: list[threading.Thread] = []

    def attacker_then_denial(url: str) -> None:
        from urllib.parse import parse_qs, urlencode, urlsplit

        query = parse_qs(urlsplit(url).query)
        redirect, state = query["redirect_uri"][0], query["state"][0]

        def visit(params: dict[str, str]) -> None:
            try:
                with urllib.request.urlopen(f"{redirect}?{urlencode(params)}", timeout=10) as r:  # noqa: S310
                    statuses.append(r.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)

        def run() -> None:
            visit({"code": STOLEN_CODE, "state": state + "x"})
            visit({"code": STOLEN_CODE})
            visit({"error": "access_denied", "state": state})

        threads.append(threading.Thread(target=run))
        threads[0].start()

    auth = OAuth2AuthorizationCode("consent-cli", issuer=consent.issuer, store=MemoryStore())
    with pytest.raises(AccessDenied):
        auth.login(attacker_then_denial, open_browser=False, timeout=60)
    threads[0].join(timeout=30)  # its last answer is read after the login has ended
    assert statuses == [400, 400, 400]
    assert consent.counts()["exchangedCodes"] == before["exchangedCodes"]


def test_no_callback_within_the_timeout_is_consent_expired(consent: ConsentServer) -> None:
    auth = OAuth2AuthorizationCode("consent-cli", issuer=consent.issuer, store=MemoryStore())
    with pytest.raises(ConsentExpired):
        auth.login(lambda url: None, open_browser=False, timeout=0.01)


# --- the device flow ------------------------------------------------------------------------


def test_device_login_stores_a_chain_that_rotates(
    consent: ConsentServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    before = consent.counts()
    clock, person = Clock(), DeviceBrowser()
    auth = OAuth2DeviceCode(
        "consent-device", issuer=consent.issuer, scope=SCOPE,
        store=FileStore(tmp_path / "tokens"), clock=clock,
    )  # fmt: skip

    first = auth.login(person.show, sleep=person.sleep)

    assert person.waits == [5.0]  # the default interval, once: then the person had consented
    assert first.refresh_token
    tokens = _renew_across_lifetimes(auth, clock, MANY)
    assert len({token.refresh_token for token in tokens}) == MANY + 1
    after = consent.counts()
    assert after["refreshRefused"] == before["refreshRefused"]
    device_codes = after["deviceCodes"][len(before["deviceCodes"]) :]
    assert len(device_codes) == 1

    out = capsys.readouterr()
    secrets = [*device_codes]
    for token in tokens:
        secrets += [token.access_token, token.refresh_token or "-"]
    _assert_no_secrets(out.out + out.err + caplog.text + repr(auth), secrets)


def test_a_login_after_the_chain_was_refused_starts_a_new_one(
    consent: ConsentServer, tmp_path: pathlib.Path
) -> None:
    """The chain dies (its refresh token revoked at the server): requests raise InvalidGrant,
    and a pause holds that refresh token; a new login is not held by it and starts a chain."""
    clock = Clock()
    auth = OAuth2DeviceCode(
        "consent-device", issuer=consent.issuer, scope=SCOPE,
        store=FileStore(tmp_path / "tokens"), clock=clock,
    )  # fmt: skip
    person = DeviceBrowser()
    first = auth.login(person.show, sleep=person.sleep)
    form = urlencode({"token": first.refresh_token, "client_id": "consent-device"}).encode()
    revoked = urllib.request.Request(f"{consent.issuer}/token/revocation", data=form)  # noqa: S310
    with urllib.request.urlopen(revoked, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200
    clock.now += LIFETIME + 1
    refused = consent.counts()["refreshRefused"]
    with pytest.raises(InvalidGrant):
        auth.get_token()
    with pytest.raises(InvalidGrant):
        auth.get_token()  # paused: no second call with the refused refresh token
    assert consent.counts()["refreshRefused"] == refused + 1

    person = DeviceBrowser()
    second = auth.login(person.show, sleep=person.sleep)
    assert second.refresh_token not in (None, first.refresh_token)
    clock.now += LIFETIME + 1
    renewed = auth.get_token()
    assert renewed.refresh_token not in (first.refresh_token, second.refresh_token)


class StoreWithAnotherProcess(FileStore):
    """A FileStore through which, once armed, another process renews the chain just after an
    invalidation is written and the store's lock let go: the moment between a login's
    `invalidate()` and its own renewal, when a cron job or a second program may renew."""

    def __init__(self, path: pathlib.Path, other: list[str]) -> None:
        super().__init__(path)
        self.other, self.armed, self.ran = other, False, ""
        self.invalidated = False

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        written = super().set_if_generation(key, token, generation)
        self.invalidated = self.armed and token.expires_at == token.issued_at
        return written

    def set(self, key: str, token: Token) -> None:
        super().set(key, token)
        self.invalidated = self.armed and token.expires_at == token.issued_at

    def lock(self, key: str) -> Any:
        held = super().lock(key)
        store = self

        class Then:
            def __enter__(self) -> object:
                return held.__enter__()

            def __exit__(self, *exc: object) -> None:
                held.__exit__(*exc)
                if store.invalidated and not store.ran:
                    done = subprocess.run(
                        store.other, check=True, timeout=60, capture_output=True, text=True
                    )
                    store.ran = done.stdout.strip()  # the old chain's new refresh token

        return Then()


def test_a_login_replaces_the_chain_even_if_another_process_renews_it_meanwhile(
    consent: ConsentServer, tmp_path: pathlib.Path
) -> None:
    """The second login's token is the one stored and used (its refresh token from the
    server, never dropped), although another process renewed the old chain in between."""
    renew_old = (
        "from renewauth import FileStore, OAuth2DeviceCode; "
        f"print(OAuth2DeviceCode('consent-device', issuer={consent.issuer!r}, scope={SCOPE!r}, "
        f"store=FileStore({str(tmp_path / 'tokens')!r})).get_token().refresh_token, end='')"
    )
    store = StoreWithAnotherProcess(tmp_path / "tokens", [sys.executable, "-c", renew_old])
    auth = OAuth2DeviceCode("consent-device", issuer=consent.issuer, scope=SCOPE, store=store)
    person = DeviceBrowser()
    first = auth.login(person.show, sleep=person.sleep)
    before = consent.counts()

    store.armed = True
    person = DeviceBrowser()
    second = auth.login(person.show, sleep=person.sleep)

    assert store.ran  # the other process did renew the old chain in between
    assert second.refresh_token != store.ran  # and the login's token is not that one
    after = consent.counts()
    assert after["tokenCalls"]["refresh_token"] == before["tokenCalls"].get("refresh_token", 0) + 1
    assert second.refresh_token not in (None, first.refresh_token)
    later = OAuth2DeviceCode(
        "consent-device", issuer=consent.issuer, scope=SCOPE, store=FileStore(tmp_path / "tokens")
    )
    assert later.get_token() == second  # the login's is stored, not the old chain's
    assert auth.get_token() == second
    auth.invalidate()
    assert auth.get_token().refresh_token != second.refresh_token  # the new chain renews
    assert consent.counts()["refreshRefused"] == before["refreshRefused"]


@pytest.mark.parametrize("refused", [True, False], ids=["code-refused", "code-accepted"])
def test_a_login_while_requests_keep_renewing_ends_as_its_own_exchange_did(
    consent: ConsentServer, browser: pathlib.Path, tmp_path: pathlib.Path, refused: bool
) -> None:
    """Threads of the same object keep making requests while a second login's code is
    exchanged: the login's invalidate() makes their token due, and any of their renewals may
    run the login's exchange. Refused, the login raises
    (never returns the old chain as if it had worked) and the old chain still renews; accepted,
    it returns the new chain's token. 0 refused refresh tokens either way."""
    auth = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=FileStore(tmp_path / "t")
    )
    first = auth.login(timeout=60)
    before = consent.counts()
    stop, errors, renewals = threading.Event(), [], []

    def renew_all_along() -> None:  # requests: each renews when its token is due
        while not stop.wait(0.001):
            try:
                renewals.append(auth.get_token())
            except TokenRequestError as exc:  # the login's exchange, run by this thread
                errors.append(exc)

    workers = [threading.Thread(target=renew_all_along) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        consent.refuse_codes(refused)
        if refused:
            with pytest.raises(InvalidGrant, match="code refused by the test") as caught:
                auth.login(timeout=60)
            assert "refresh token was looked for" not in str(caught.value)  # a code, not it
        else:
            second = auth.login(timeout=60)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        consent.refuse_codes(False)
    after = consent.counts()
    assert len(after["exchangedCodes"]) == len(before["exchangedCodes"]) + 1
    assert after["refreshRefused"] == before["refreshRefused"]
    assert all(isinstance(exc, InvalidGrant) for exc in errors)
    latest = auth.get_token()
    auth.invalidate()
    assert auth.get_token().refresh_token != latest.refresh_token  # the chain renews on
    if not refused:
        assert second.refresh_token not in {t.refresh_token for t in [first, *renewals[:1]]}
    assert consent.counts()["refreshRefused"] == before["refreshRefused"]


def test_a_device_login_while_redis_is_stopped_keeps_its_token_for_when_it_is_back(
    consent: ConsentServer, redis_server: RedisServer
) -> None:
    """The store stops while the person consents: the token the polls brought is not dropped
    (a login spends no refresh token another process needs). It goes to this machine's spare
    copy and is written to Redis once Redis is back; the chain then renews from it."""
    prefix = f"test:{os.urandom(4).hex()}:"
    store = RedisStore(redis_server.url, prefix=prefix, socket_timeout=1, connect_timeout=1)
    person = DeviceBrowser()

    def show(prompt: DevicePrompt) -> None:
        redis_server.stop()
        person.show(prompt)

    auth = OAuth2DeviceCode("consent-device", issuer=consent.issuer, scope=SCOPE, store=store)
    token = auth.login(show, sleep=person.sleep)
    assert token.refresh_token
    before = consent.counts()
    redis_server.start()  # the same port, its data kept
    reader = RedisStore(redis_server.url, prefix=prefix)

    def stored() -> bool:
        later = OAuth2DeviceCode("consent-device", issuer=consent.issuer, scope=SCOPE,
                                 store=reader)  # fmt: skip
        return later.get_token() == token

    done = threading.Event()
    for _ in range(1000):  # until the keeper's writer thread has written it (bounded)
        with contextlib.suppress(StoreError):
            if stored():
                break
        done.wait(0.02)
    assert stored()
    auth.invalidate()
    assert auth.get_token().refresh_token != token.refresh_token  # the chain renews on
    assert consent.counts()["refreshRefused"] == before["refreshRefused"]


def test_device_default_show_prints_the_code_at_once(
    consent: ConsentServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    person = DeviceBrowser()
    printed: list[str] = []
    real_print = person.show

    def sleep(seconds: float) -> None:
        # By the first wait the prompt is on stderr: take the complete URI from it.
        err = capsys.readouterr().err
        printed.append(err)
        uri = err.split("(or open ", 1)[1].split(")", 1)[0]
        prompt = DevicePrompt(
            verification_uri="", user_code="", verification_uri_complete=uri, expires_in=1
        )
        real_print(prompt)
        person.sleep(seconds)

    auth = OAuth2DeviceCode("consent-device", issuer=consent.issuer, scope=SCOPE,
                            store=MemoryStore())  # fmt: skip
    auth.login(sleep=sleep)
    assert "enter the code" in printed[0]
    assert "/device" in printed[0]


def test_device_slow_down_adds_five_seconds(consent: ConsentServer) -> None:
    person = DeviceBrowser()
    auth = OAuth2DeviceCode("consent-slow", issuer=consent.issuer, scope=SCOPE, store=MemoryStore())
    polls = consent.counts()["devicePolls"]
    auth.login(person.show, sleep=person.sleep)
    assert person.waits == [5.0, 10.0]
    assert consent.counts()["devicePolls"] - polls == 2  # each poll after its wait, no sooner


def test_device_poll_answered_503_is_tried_again(consent: ConsentServer) -> None:
    person = DeviceBrowser()
    auth = OAuth2DeviceCode(
        "consent-flaky", issuer=consent.issuer, scope=SCOPE, store=MemoryStore()
    )
    assert auth.login(person.show, sleep=person.sleep).refresh_token
    assert person.waits == [5.0, 10.0]  # backing off after the 503 (RFC 8628 §3.5)


def test_device_poll_answered_429_waits_as_long_as_retry_after_says(
    consent: ConsentServer,
) -> None:
    person = DeviceBrowser()
    auth = OAuth2DeviceCode("consent-busy", issuer=consent.issuer, scope=SCOPE, store=MemoryStore())
    assert auth.login(person.show, sleep=person.sleep).refresh_token
    assert person.waits == [5.0, 30.0]


def test_device_polls_that_cannot_reach_the_token_endpoint_back_off_and_say_so(
    consent: ConsentServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Until the code's life ends: then the failure is raised (the person may have
    approved), not an expiry; the waits double up to a minute and stop at the code's end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # closed again: nothing listens there
    clock, waits = Clock(), []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    auth = OAuth2DeviceCode(
        "consent-device",
        device_authorization_url=f"{consent.issuer}/device/auth",
        token_url=f"http://127.0.0.1:{dead}/token",
        scope=SCOPE,
        store=MemoryStore(),
        clock=clock,
        retries=0,
    )
    with caplog.at_level(logging.INFO, logger="renewauth"), pytest.raises(TokenEndpointUnavailable):
        auth.login(lambda prompt: None, sleep=sleep)
    assert waits[:6] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert max(waits) == 60.0
    assert sum(waits) == pytest.approx(600.0)  # the device code's whole life, not past it
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "failed 3 times" in warnings[0].getMessage()


def test_a_login_without_a_refresh_token_says_so(
    consent: ConsentServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock, person = Clock(), DeviceBrowser()
    # oidc-provider ends a login that asked for no scope at all with access_denied.
    auth = OAuth2DeviceCode(
        "consent-once", issuer=consent.issuer, scope="openid", store=MemoryStore(), clock=clock
    )
    token = auth.login(person.show, sleep=person.sleep)
    assert token.refresh_token is None
    assert "brought no refresh token" in caplog.text
    assert auth.get_token() == token  # good for its life
    clock.now += LIFETIME + 1
    with pytest.raises(LoginRequired, match="issued no refresh token"):
        auth.get_token()


def test_device_declined_is_access_denied(consent: ConsentServer) -> None:
    person = DeviceBrowser(mode="deny")
    auth = OAuth2DeviceCode(
        "consent-device", issuer=consent.issuer, scope=SCOPE, store=MemoryStore()
    )
    with pytest.raises(AccessDenied) as caught:
        auth.login(person.show, sleep=person.sleep)
    assert caught.value.error == "access_denied"
    assert "aborted" in (caught.value.error_description or "")  # the abort button


def test_device_code_past_its_life_is_consent_expired(consent: ConsentServer) -> None:
    clock = Clock()
    auth = OAuth2DeviceCode(
        "consent-device", issuer=consent.issuer, store=MemoryStore(), clock=clock
    )

    def sleep(seconds: float) -> None:
        clock.now += 601  # past the device code's 600 s

    with pytest.raises(ConsentExpired):
        auth.login(lambda prompt: None, sleep=sleep)


# --- the command line ------------------------------------------------------------------------


def test_renewauth_login_then_token(
    consent: ConsentServer,
    browser: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from renewauth.cli import main

    config = tmp_path / "renewauth.toml"
    config.write_text(
        f'store_path = "{tmp_path / "tokens"}"\n'
        "[auth.cli]\n"
        'provider = "oauth2-authorization-code"\n'
        f'issuer = "{consent.issuer}"\n'
        'client_id = "consent-cli"\n'
        f'scope = "{SCOPE}"\n'
        "[auth.box]\n"
        'provider = "oauth2-device-code"\n'
        f'issuer = "{consent.issuer}"\n'
        'client_id = "consent-device"\n'
        "[auth.service]\n"
        'provider = "oauth2-client-credentials"\n'
        f'token_url = "{consent.issuer}/token"\n'
        'client_id = "nobody"\n'
        'client_secret_env = "HOME"\n'
    )
    assert main(["token", "--config", str(config), "cli"]) == 1
    assert "renewauth login --config" in capsys.readouterr().err
    assert main(["login", "--config", str(config), "cli"]) == 0
    err = capsys.readouterr().err
    assert "logged in: [auth.cli]" in err
    assert main(["token", "--config", str(config), "cli"]) == 0
    access_token = capsys.readouterr().out.strip()
    assert access_token
    assert access_token not in err
    # After a step-up: the login again, asking for what the API named; a new chain replaces it.
    arguments = ["login", "--config", str(config), "cli", "--acr-values", "mfa", "--max-age", "300"]
    assert main(arguments) == 0
    assert "acr_values=mfa&max_age=300" in capsys.readouterr().err  # in the printed URL
    assert main(["token", "--config", str(config), "cli"]) == 0
    assert capsys.readouterr().out.strip() not in ("", access_token)
    assert main(["login", "--config", str(config), "box", "--max-age", "300"]) == 1
    assert "go with an oauth2-authorization-code entry" in capsys.readouterr().err
    assert main(["login", "--config", str(config), "service"]) == 1
    assert "needs no login" in capsys.readouterr().err


def _cli(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "renewauth.cli", *arguments],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _cli_device_login(config: pathlib.Path, name: str, env: dict[str, str]) -> str:
    """`renewauth -v login` of a device-flow entry, in its own process; the person enters the
    code the command prints (the complete URI from its stderr) as soon as it is printed."""
    command = [sys.executable, "-m", "renewauth.cli", "-v", "login", "--config", str(config), name]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen: list[str] = []
    person: subprocess.Popen[bytes] | None = None
    for line in process.stderr:  # read to the end: the prompt, then the rest
        seen.append(line)
        if person is None and "(or open " in line:
            uri = line.split("(or open ", 1)[1].rsplit(")", 1)[0]
            browser = [sys.executable, str(HERE / "consent_browser.py"), uri]
            person = subprocess.Popen(browser, env=env)
    assert process.wait(timeout=60) == 0, "".join(seen)
    assert person is not None
    assert person.wait(timeout=60) == 0
    process.stderr.close()
    return "".join(seen)


@pytest.mark.parametrize("flow", ["authorization-code", "device-code"])
def test_a_login_from_the_command_line_starts_a_chain_that_renews_for_many_lifetimes(
    consent: ConsentServer, browser: pathlib.Path, tmp_path: pathlib.Path, flow: str
) -> None:
    """Done when: the consent from the CLI (its own process, with `-v`: every DEBUG line) ends
    in a stored chain that the CLI and Python then renew in turn, rotating it for many
    lifetimes, with 0 refused refresh tokens and no secret in anything the CLI printed.
    (Renewals by expiry over many lifetimes, on a fake clock, are the Python tests above.)"""
    client = "consent-cli-run" if flow == "authorization-code" else "consent-device-run"
    store = tmp_path / "tokens"
    config = tmp_path / "renewauth.toml"
    config.write_text(
        f'store_path = "{store}"\n'
        "[auth.person]\n"
        f'provider = "oauth2-{flow}"\n'
        f'issuer = "{consent.issuer}"\n'
        f'client_id = "{client}"\n'
        f'scope = "{SCOPE}"\n'
        f'prefixes = ["{consent.issuer}/me"]\n'
    )
    env = {**os.environ}
    before = consent.counts()

    if flow == "authorization-code":
        login = _cli("-v", "login", "--config", str(config), "person", env=env)
        assert login.returncode == 0, login.stderr
        printed = login.stdout + login.stderr
    else:
        printed = _cli_device_login(config, "person", env)
    assert "logged in: [auth.person]" in printed

    # The CLI and Python then take turns on the chain in the same store, in real time: each
    # turn ends the token's life early (`invalidate()` marks it spent, in the store too), so
    # the next one, in the other process, must renew with the rotated refresh token.
    if flow == "authorization-code":
        auth: Any = OAuth2AuthorizationCode(
            client, issuer=consent.issuer, scope=SCOPE, store=FileStore(store)
        )
    else:
        auth = OAuth2DeviceCode(client, issuer=consent.issuer, scope=SCOPE, store=FileStore(store))
    tokens = [auth.get_token()]  # the login's, from the store
    for _ in range(6):
        auth.invalidate()
        shown = _cli("token", "--config", str(config), "person", env=env)
        assert shown.returncode == 0, shown.stderr
        printed += shown.stderr
        from_cli = shown.stdout.strip()
        assert from_cli != tokens[-1].access_token  # the CLI renewed...
        again = _cli("token", "--config", str(config), "person", env=env)
        assert again.stdout.strip() == from_cli  # ...and stored it: its next run reuses it
        adopted = auth.get_token()  # Python finds it in the store
        assert adopted.access_token == from_cli
        auth.invalidate()
        tokens += [adopted, auth.get_token()]  # and renews on from there

    # The other commands use the chain too: `run` signs a program's calls with it (its
    # userinfo answers 200), `check` finds it healthy, `keepalive` has nothing due.
    program = f"import httpx; print(httpx.get('{consent.issuer}/me').status_code)"
    run = _cli("run", "--config", str(config), "--", sys.executable, "-c", program, env=env)
    assert (run.returncode, run.stdout.strip()) == (0, "200"), run.stderr
    checked = _cli("check", "--config", str(config), env=env)
    kept = _cli("keepalive", "--config", str(config), env=env)
    assert (checked.returncode, kept.returncode) == (0, 0), checked.stdout + kept.stdout
    printed += run.stderr + checked.stdout + checked.stderr + kept.stdout + kept.stderr

    after = consent.counts()
    assert after["refreshRefused"] == before["refreshRefused"]
    renewed = after["tokenCalls"].get("refresh_token", 0) - before["tokenCalls"].get(
        "refresh_token", 0
    )
    assert renewed == 6 * 2  # the CLI's and Python's, in turn
    refreshes = [token.refresh_token for token in tokens]
    assert len(set(refreshes)) == len(refreshes)  # rotated every time
    secrets = [*after["exchangedCodes"], *after["deviceCodes"]]
    for token in tokens:
        secrets += [token.access_token, token.refresh_token or "-"]
    _assert_no_secrets(printed, secrets)


# --- before any login -------------------------------------------------------------------------


def test_a_request_before_any_login_raises_login_required(
    consent: ConsentServer, tmp_path: pathlib.Path
) -> None:
    httpx = pytest.importorskip("httpx")
    before = consent.counts()
    for auth in (
        OAuth2AuthorizationCode(
            "consent-cli", issuer=consent.issuer, store=FileStore(tmp_path / "a")
        ),
        OAuth2DeviceCode(
            "consent-device",
            device_authorization_url=f"{consent.issuer}/device/auth",
            token_url=f"{consent.issuer}/token",
            store=FileStore(tmp_path / "b"),
        ),
    ):
        with httpx.Client(auth=auth) as client, pytest.raises(LoginRequired) as caught:
            client.get(f"{consent.issuer}/me")
        assert "renewauth login --config" in str(caught.value)
        assert ".login()" in str(caught.value)

        async def from_a_task(auth: Any = auth) -> None:
            async with httpx.AsyncClient(auth=auth) as client:
                await client.get(f"{consent.issuer}/me")

        with pytest.raises(LoginRequired):
            asyncio.run(from_a_task())
    assert consent.counts()["tokenCalls"] == before["tokenCalls"]


# --- parsing, sans-IO -------------------------------------------------------------------------


def _response(status: int, body: bytes) -> TokenResponse:
    return TokenResponse(
        status=status,
        headers={"content-type": "application/json"},
        body=body,
        url="https://idp.example.com/device",
    )


def test_an_idle_connection_to_the_loopback_holds_up_neither_the_callback_nor_the_exit(
    consent: ConsentServer,
) -> None:
    """A browser's speculative pre-connection (or any local process) that opens the loopback
    port and sends nothing: the real callback is still served, and the login ends."""
    idle: list[socket.socket] = []

    def show(url: str) -> None:
        redirect = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
        port = urlsplit(redirect).port
        assert port is not None
        idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        browser = subprocess.run(
            [sys.executable, str(HERE / "consent_browser.py"), url], timeout=60, check=False
        )
        assert browser.returncode == 0

    auth = OAuth2AuthorizationCode(
        "consent-cli", issuer=consent.issuer, scope=SCOPE, store=MemoryStore()
    )
    try:
        assert auth.login(show, open_browser=False, timeout=30).refresh_token
    finally:
        for connection in idle:
            connection.close()
    assert len(idle) == 1


def test_a_session_without_a_display_runs_no_text_browser(
    consent: ConsentServer, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """Over SSH, `webbrowser` would run lynx or w3m in the terminal and wait for it: with no
    display and no BROWSER, the URL is only shown."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    ran = tmp_path / "text-browser-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("www-browser", "lynx", "w3m", "links", "elinks"):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ntouch {ran}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})

    def person(url: str) -> None:  # the person opens it elsewhere, as a tunnelled browser
        threading.Thread(
            target=subprocess.run,
            args=([sys.executable, str(HERE / "consent_browser.py"), url],),
            kwargs={"timeout": 60, "check": False},
        ).start()

    auth = OAuth2AuthorizationCode("consent-cli", issuer=consent.issuer, scope=SCOPE,
                                   store=MemoryStore())  # fmt: skip
    assert auth.login(person, timeout=60).refresh_token
    assert not ran.exists()


@pytest.mark.parametrize(
    ("redirect_path", "ok"),
    [("/callback", True), ("/cb/renewauth", True), ("callback", True), ("/cb?x=1", False),
     ("/cb#f", False), ("/c b", False), ("", True)],
)  # fmt: skip
def test_redirect_path_is_a_plain_path(redirect_path: str, ok: bool) -> None:
    if ok:
        OAuth2AuthorizationCode("c", issuer="https://idp.example.com", redirect_path=redirect_path)
        return
    with pytest.raises(ConfigurationError, match="plain path"):
        OAuth2AuthorizationCode("c", issuer="https://idp.example.com", redirect_path=redirect_path)


def test_the_loopback_hands_over_the_first_right_callback_only() -> None:
    from renewauth._loopback import LoopbackReceiver

    with LoopbackReceiver("/callback", "the-state") as receiver:
        base = receiver.redirect_uri
        answers = []
        for query in (
            "code=first&state=the-state",
            "code=second&state=the-state",
            "code=third&state=another",
        ):
            try:
                with urllib.request.urlopen(f"{base}?{query}", timeout=10) as page:  # noqa: S310
                    answers.append(page.status)
            except urllib.error.HTTPError as refused:
                answers.append(refused.code)
                refused.close()
        callback = receiver.wait(10)
    assert answers == [200, 404, 404]
    assert callback is not None
    assert callback.code == "first"


def test_pkce_verifier_and_s256_challenge() -> None:
    """RFC 7636 §4.1-4.2 (oidc-provider checks the pair for real in the login tests)."""
    import base64
    import hashlib
    import re

    verifiers = {new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
        challenge = code_challenge(verifier)
        digest = base64.urlsafe_b64decode(challenge + "=")
        assert digest == hashlib.sha256(verifier.encode()).digest()
        assert "=" not in challenge
        assert len(challenge) == 43


def test_device_authorization_parsed() -> None:
    body = {
        "device_code": "dc",
        "user_code": "ABCD-EFGH",
        "verification_uri": "https://idp.example.com/device",
        "expires_in": 600,
    }
    found = parse_device_authorization(_response(200, json.dumps(body).encode()))
    assert (found.user_code, found.interval, found.verification_uri_complete) == (
        "ABCD-EFGH",
        5.0,
        None,
    )
    assert "dc" not in repr(found)


_FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["https://idp.example.com/device", "http://[::1", "ftp://x", ""]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            (
                "device_code",
                "user_code",
                "verification_uri",
                "verification_uri_complete",
                "expires_in",
                "interval",
            ),
            _FIELD_VALUES,
        ),
    ).map(lambda data: json.dumps(data).encode()),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
    ).map(lambda data: json.dumps(data).encode()),
)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 201, 400, 401, 500]), body=_BODIES)
def test_device_authorization_parser_raises_only_typed_errors(status: int, body: bytes) -> None:
    try:
        found = parse_device_authorization(_response(status, body))
    except TokenRequestError:
        return
    assert found.expires_in > 0
    assert found.interval >= 1
    assert found.verification_uri.startswith(("http://", "https://"))


def test_poll_outcomes() -> None:
    def answer(error: str) -> TokenResponse:
        return _response(400, json.dumps({"error": error}).encode())

    assert poll_outcome(answer("authorization_pending"), 5.0, client_fix="") == 5.0
    assert poll_outcome(answer("slow_down"), 5.0, client_fix="") == 10.0
    with pytest.raises(AccessDenied):
        poll_outcome(answer("access_denied"), 5.0, client_fix="")
    with pytest.raises(ConsentExpired):
        poll_outcome(answer("expired_token"), 5.0, client_fix="")
    with pytest.raises(TokenRequestError):
        poll_outcome(answer("invalid_grant"), 5.0, client_fix="")


# --- configuration ----------------------------------------------------------------------------


def test_configuration_providers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "renewauth.toml"
    path.write_text(
        "[auth.cli]\n"
        'provider = "oauth2-authorization-code"\n'
        'issuer = "https://idp.example.com"\n'
        'client_id = "my-cli"\n'
        'scope = "openid offline_access"\n'
        "[auth.box]\n"
        'provider = "oauth2-device-code"\n'
        'device_authorization_url = "https://idp.example.com/device/auth"\n'
        'token_url = "https://idp.example.com/token"\n'
        'client_id = "my-box"\n'
        'client_secret_env = "BOX_SECRET"\n'
    )
    entries = load_config(path, environ={"BOX_SECRET": "s3cret-value"})
    assert isinstance(entries["cli"].auth, OAuth2AuthorizationCode)
    assert isinstance(entries["box"].auth, OAuth2DeviceCode)
    assert "s3cret-value" not in repr(entries["box"].auth)


@pytest.mark.parametrize(
    ("keys", "fix"),
    [
        (
            'issuer = "https://idp.example.com"\ntoken_url = "https://idp.example.com/t"\n',
            "issuer= or authorization_url= and token_url=, not both",
        ),
        ('token_url = "https://idp.example.com/t"\n', "issuer=.* both authorization_url= and"),
        ('issuer = "https://idp.example.com"\nclient_auth = "private_key_jwt"\n', "client_auth"),
        ('authorization_url = "http://idp.example.com/a"\ntoken_url = "https://x/t"\n', "http"),
    ],
)
def test_configuration_refused_with_the_fix(tmp_path: pathlib.Path, keys: str, fix: str) -> None:
    path = tmp_path / "renewauth.toml"
    path.write_text(
        f'[auth.cli]\nprovider = "oauth2-authorization-code"\nclient_id = "my-cli"\n{keys}'
    )
    with pytest.raises(ConfigurationError, match=fix):
        load_config(path)


@pytest.mark.parametrize(
    ("headers", "fix"),
    [
        ({"x-api-key": "caf\u00e9"}, "visible ASCII"),
        ({"x-api-key": "key\xa0"}, "visible ASCII"),
        ({"x-api-key": "key\r\nx-evil: 1"}, "visible ASCII"),
        ({"x api key": "secret-value"}, "no valid name"),
        ({"Host": "evil.example"}, "cannot set Host"),
        ({"Content-Length": "0"}, "cannot set Content-Length"),
        ({"Transfer-Encoding": "chunked"}, "cannot set Transfer-Encoding"),
        ("x-api-key: k", "must be a mapping"),
    ],
)
def test_token_headers_refused_with_the_fix_before_any_login(headers: Any, fix: str) -> None:
    for kind in (OAuth2AuthorizationCode, OAuth2DeviceCode):
        with pytest.raises(ConfigurationError, match=fix) as caught:
            kind("c", issuer="https://idp.example.com", token_headers=headers)
        for value in headers.values() if isinstance(headers, dict) else ():
            assert value not in str(caught.value)  # a value may be a key: never shown


def test_token_headers_from_a_configuration_file(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "renewauth.toml"
    config.write_text(
        "[auth.gateway]\n"
        'provider = "oauth2-authorization-code"\n'
        'authorization_url = "https://idp.example.com/authorize"\n'
        'token_url = "https://idp.example.com/token"\n'
        'client_id = "c"\n'
        'token_headers = { x-api-key = "k" }\n'
    )
    assert isinstance(load_config(config)["gateway"].auth, OAuth2AuthorizationCode)
    config.write_text(config.read_text().replace('{ x-api-key = "k" }', '"x-api-key: k"'))
    with pytest.raises(ConfigurationError, match=r"token_headers.*a table of strings"):
        load_config(config)


def test_device_code_arguments_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="both device_authorization_url= and token_url="):
        OAuth2DeviceCode("box", token_url="https://idp.example.com/token")
    with pytest.raises(ConfigurationError, match="dpop"):
        OAuth2DeviceCode("box", issuer="https://idp.example.com", dpop=True)


def test_metadata_names_the_consent_endpoints() -> None:
    from renewauth.discovery import parse_metadata

    document = {
        "issuer": "https://idp.example.com",
        "token_endpoint": "https://idp.example.com/token",
        "authorization_endpoint": "https://idp.example.com/auth",
        "device_authorization_endpoint": "http://[::1",  # unparsable: left out
    }
    metadata = parse_metadata(
        _response(200, json.dumps(document).encode()), issuer="https://idp.example.com"
    )
    assert metadata.authorization_endpoint == "https://idp.example.com/auth"
    assert metadata.device_authorization_endpoint is None
