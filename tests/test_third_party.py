"""Against a real third-party authorization server (django-oauth-toolkit), in real time.

The server (tests/third_party_server.py) issues 4 s tokens and rotates refresh tokens; 16
threads use each grant for several token lifetimes. It revokes the old access token when it
refreshes, so requests in flight during a refresh get a 403 and are resent with the new token;
4 s tokens keep this loaded machine's slowest request under one refresh interval. Its client
secret holds `+ / : % =` and a space, so Basic client authentication must encode it as
RFC 6749 §2.3.1 says.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from renewauth import MemoryStore, OAuth2ClientCredentials, OAuth2Password, TokenAuth

SERVER = pathlib.Path(__file__).with_name("third_party_server.py")


@pytest.fixture(scope="module")
def third_party() -> Iterator[dict[str, Any]]:
    pytest.importorskip("oauth2_provider", reason="django-oauth-toolkit is in the test extra")
    process = subprocess.Popen(
        [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdin is not None
    info: dict[str, Any] = json.loads(process.stdout.readline())
    info["base"] = f"http://127.0.0.1:{info['port']}"
    try:
        yield info
    finally:
        process.stdin.close()  # the server stops when its stdin closes
        process.wait(timeout=30)


def _hammer(auth: TokenAuth, url: str, seconds: float) -> list[int]:
    """16 threads, half on requests and half on one httpx.Client, for `seconds`."""
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)
    deadline = time.monotonic() + seconds
    client = httpx.Client(auth=auth, timeout=20)

    def work(index: int) -> None:
        session = requests.Session()
        session.auth = auth
        start.wait()
        while time.monotonic() < deadline:
            try:
                if index % 2:
                    status = session.get(url, timeout=20).status_code
                else:
                    status = client.get(url).status_code
            except Exception:
                status = 0
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    return statuses


def _options() -> dict[str, Any]:
    # django-oauth-toolkit's protected views answer a bad token with 403, not 401. Renewing
    # 0.5 s before expiry (not at half life) leaves 3.5 s between refreshes, each of which
    # revokes the token before it: far more than any request here takes.
    return {"store": MemoryStore(), "retry_statuses": (401, 403), "leeway": 0.5}


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_client_credentials_against_a_real_server(
    third_party: dict[str, Any], client_auth: str
) -> None:
    auth = OAuth2ClientCredentials(
        f"{third_party['base']}/o/token/",
        third_party["clients"]["client-credentials"],
        third_party["secret"],
        client_auth=client_auth,  # type: ignore[arg-type]
        **_options(),
    )
    statuses = _hammer(
        auth, f"{third_party['base']}/api/hello", seconds=2.5 * third_party["lifetime"]
    )
    assert statuses
    assert set(statuses) == {200}


def test_password_grant_with_rotating_refresh_tokens_against_a_real_server(
    third_party: dict[str, Any],
) -> None:
    renewed: list[str | None] = []
    auth = OAuth2Password(
        f"{third_party['base']}/o/token/",
        third_party["clients"]["password"],
        "alice",
        "alice-password",
        client_secret=third_party["secret"],
        client_auth="basic",
        on_token=lambda token: renewed.append(token.refresh_token),
        **_options(),
    )
    statuses = _hammer(
        auth, f"{third_party['base']}/api/hello", seconds=2.5 * third_party["lifetime"]
    )
    assert set(statuses) == {200}
    assert len(renewed) >= 3  # several lifetimes passed
    assert len(set(renewed)) == len(renewed)  # every renewal rotated the refresh token
