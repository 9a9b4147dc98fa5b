"""Van Marcke's service-user set-up after the END user logs in in a browser (issue 22, point 3):
`renewauth vanmarcke create-service-user --browser` and `reset-password --browser` against
FakeVanMarcke's login page, with `BROWSER` pointing at tests/vanmarcke_browser.py (a person's
browser played over HTTP); and `VanMarcke.log_in_end_user` from Python.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import webbrowser
from collections.abc import Iterator

import pytest

from renewauth import AccessDenied, ConfigurationError, ConsentExpired
from renewauth.cli import main
from renewauth.providers import VanMarcke
from renewauth.testing import FakeVanMarcke

HERE = pathlib.Path(__file__).parent
API_KEY = "test-api-key"
CLIENT_SECRET = "vm-secret"
END_USER, END_USER_PASSWORD = "enduser", "enduser-password"


@pytest.fixture
def fake() -> Iterator[FakeVanMarcke]:
    with FakeVanMarcke() as server:
        yield server


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> None:
    """`BROWSER` set to the end user's browser, which logs in with the right password."""
    monkeypatch.setenv("BROWSER", f"{sys.executable} {HERE / 'vanmarcke_browser.py'} %s")
    monkeypatch.setenv("VANMARCKE_BROWSER_USER", END_USER)
    monkeypatch.setenv("VANMARCKE_BROWSER_PASSWORD", END_USER_PASSWORD)
    # webbrowser reads BROWSER once, when first used: make it read it again.
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    monkeypatch.setenv("VANMARCKE_API_KEY", API_KEY)
    monkeypatch.setenv("VM_SECRET", CLIENT_SECRET)


def _common(fake: FakeVanMarcke) -> list[str]:
    return [
        "--client-id",
        "vm-client",
        "--client-secret-env",
        "VM_SECRET",
        "--authorize-url",
        fake.authorize_url,
        "--token-url",
        fake.token_url,
        "--service-users-url",
        fake.service_users_url,
    ]


@pytest.mark.usefixtures("browser")
def test_create_service_user_and_reset_its_password_after_a_login_in_a_browser(
    fake: FakeVanMarcke,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    output = tmp_path / "service-user.json"

    assert (
        main(
            [
                "vanmarcke",
                "create-service-user",
                "--browser",
                *_common(fake),
                "--output",
                str(output),
            ]
        )
        == 0
    )

    assert output.stat().st_mode & 0o777 == 0o600
    created = json.loads(output.read_text())
    assert created["username"].startswith("API-")
    assert fake.codes_issued == fake.codes_exchanged == 1
    assert fake.codes_refused == fake.logins_refused == 0
    assert fake.missing_api_key == 0  # x-api-key went with the code exchange too
    exchange = fake.last_token_request
    assert exchange is not None
    assert exchange.grant_type == "authorization_code"
    assert exchange.headers["x-api-key"] == API_KEY
    secrets = [exchange.params["code"], exchange.params["code_verifier"], created["password"]]
    first = capsys.readouterr()
    assert "To log in, open this URL" in first.err
    assert created["username"] in first.out

    # The same service user again: Van Marcke answers 403, and the message names the fix.
    assert main(["vanmarcke", "create-service-user", "--browser", *_common(fake)]) == 1
    assert "reset-password" in capsys.readouterr().err

    arguments = [
        "vanmarcke",
        "reset-password",
        "--browser",
        *_common(fake),
        "--service-user",
        created["username"],
    ]
    assert main(arguments) == 0
    shown = capsys.readouterr()
    assert created["username"] in shown.out
    assert "password: " in shown.out  # shown once, on purpose: the new one
    assert fake.codes_issued == fake.codes_exchanged == 3
    for request in fake.recent_token_requests:
        secrets += [request.params.get("code", "-"), request.params.get("code_verifier", "-")]

    # The end user's token lives in memory on purpose: a login is no rotation to warn about.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    text = first.out + first.err + shown.err + caplog.text
    for secret in [*secrets, END_USER_PASSWORD, CLIENT_SECRET, API_KEY]:
        assert secret not in text, "a secret reached the output"
    assert "eyJ" not in text + shown.out  # no JWT: the end user's access token is never shown


def test_log_in_end_user_from_python(fake: FakeVanMarcke) -> None:
    """The Python call, its login page given to `show` (a program that is not the CLI)."""
    shown: list[str] = []

    def show(url: str) -> None:
        shown.append(url)
        # What the person does in a browser (the fake's helper), then the browser's redirect.
        import urllib.request

        location = fake.log_in(url, END_USER, END_USER_PASSWORD)
        with urllib.request.urlopen(location, timeout=10) as callback:  # noqa: S310 - loopback
            assert callback.status == 200

    access_token = VanMarcke.log_in_end_user(
        client_id="vm-client",
        api_key=API_KEY,
        client_secret=CLIENT_SECRET,
        authorize_url=fake.authorize_url,
        token_url=fake.token_url,
        show=show,
        open_browser=False,
    )
    assert shown[0].startswith(fake.authorize_url + "?")
    assert "code_challenge_method=S256" in shown[0]
    user = VanMarcke.create_service_user(access_token, api_key=API_KEY, url=fake.service_users_url)
    assert user.username.startswith("API-")
    # The service user then logs in with the password grant, as every later run does.
    service = VanMarcke(
        user.username,
        user.password,
        client_id="vm-client",
        client_secret=CLIENT_SECRET,
        api_key=API_KEY,
        token_url=fake.token_url,
    )
    assert service.get_token().access_token != access_token


def test_a_declined_or_abandoned_login_says_so(fake: FakeVanMarcke) -> None:
    def decline(url: str) -> None:
        import urllib.error
        import urllib.parse
        import urllib.request

        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        error = urllib.parse.urlencode({"error": "access_denied", "state": query["state"]})
        with pytest.raises(urllib.error.HTTPError) as page:  # the "not completed" page
            urllib.request.urlopen(f"{query['redirect_uri']}?{error}", timeout=10)  # noqa: S310
        assert page.value.code == 400
        page.value.close()

    common = {
        "client_id": "vm-client",
        "api_key": API_KEY,
        "client_secret": CLIENT_SECRET,
        "authorize_url": fake.authorize_url,
        "token_url": fake.token_url,
        "open_browser": False,
    }
    with pytest.raises(AccessDenied):
        VanMarcke.log_in_end_user(show=decline, **common)  # type: ignore[arg-type]
    with pytest.raises(ConsentExpired):
        VanMarcke.log_in_end_user(show=lambda url: None, timeout=0.01, **common)  # type: ignore[arg-type]
    assert fake.token_calls == 0


def test_browser_and_password_options_refused_together_with_the_fix(
    fake: FakeVanMarcke, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VANMARCKE_API_KEY", API_KEY)
    monkeypatch.setenv("END_USER_PASSWORD", END_USER_PASSWORD)
    with pytest.raises(SystemExit):
        main(
            [
                "vanmarcke",
                "create-service-user",
                "--browser",
                "--username",
                END_USER,
                *_common(fake),
            ]
        )
    assert "not allowed with argument" in capsys.readouterr().err
    arguments = [
        "vanmarcke",
        "create-service-user",
        "--browser",
        "--password-env",
        "END_USER_PASSWORD",
        *_common(fake),
    ]
    assert main(arguments) == 1
    assert "with --browser the end user types the password in the browser" in (
        capsys.readouterr().err
    )
    assert (
        main(
            [
                "vanmarcke",
                "create-service-user",
                "--username",
                END_USER,
                "--no-open",
                "--password-env",
                "END_USER_PASSWORD",
                *_common(fake),
            ]
        )
        == 1
    )
    assert "--no-open goes with --browser" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="token_headers="):
        VanMarcke.log_in_end_user(
            client_id="vm-client",
            api_key="key\r\nx: y",
            authorize_url=fake.authorize_url,
            token_url=fake.token_url,
        )
    assert fake.token_calls == 0
