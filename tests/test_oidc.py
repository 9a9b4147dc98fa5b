"""Against node's oidc-provider (npm) on loopback over real TLS: discovery, every client
authentication method, the JWT bearer grant, mutual TLS and DPoP, in real time.

The server (tests/oidc_server.mjs, started by tests/oidc_fixture.py) issues 3 s access
tokens and judges every API request itself (`/api/hello` looks the token up in its own
store), so a request that carried an expired or unknown token fails the test.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import requests

from renewauth import MemoryStore, OAuth2ClientCredentials, TokenAuth

from .oidc_fixture import SECRET, Oidc

THREADS = 8


def hammer(auth: TokenAuth, url: str, seconds: float, *, verify: str) -> list[int]:
    """8 threads, half on requests and half on one httpx.Client, for `seconds`."""
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    client = httpx.Client(auth=auth, timeout=20, verify=verify)
    deadline: list[float] = []

    def work(index: int) -> None:
        session = requests.Session()
        session.auth = auth
        session.verify = verify
        if start.wait() == 0:
            deadline.append(time.monotonic() + seconds)
        start.wait()
        while time.monotonic() < deadline[0]:
            try:
                if index % 2:
                    status = session.get(url, timeout=20).status_code
                else:
                    status = client.get(url).status_code
            except Exception:
                status = 0
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    return statuses


def options(oidc: Oidc, **more: Any) -> dict[str, Any]:
    return {"store": MemoryStore(), "leeway": 1.0, "verify": oidc.ca, **more}


def test_smoke(oidc: Oidc) -> None:
    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer, "basic", SECRET, client_auth="basic", **options(oidc)
    )
    token = auth.get_token()
    assert token.access_token
    assert auth.server_metadata is not None
    r = requests.get(oidc.api, auth=auth, verify=oidc.ca)
    assert r.status_code == 200, r.text
