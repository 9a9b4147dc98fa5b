"""No header renewauth adds reaches an origin the caller did not address, on any path.

Van Marcke's API key is the header at risk: requests and httpx drop `Authorization` on a
redirect to another origin, but not a header they do not know. The fake API redirects to a
second server that echoes the headers it received.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest
import requests

from renewauth import MemoryStore
from renewauth.providers import VanMarcke
from renewauth.testing import FakeOrderCloud, FakeVanMarcke

from .helpers import ALL_KINDS, ManualClock, send

API_KEY = "test-api-key"


@pytest.fixture
def vanmarcke(clock: ManualClock) -> Iterator[FakeVanMarcke]:
    with FakeVanMarcke(clock=clock) as fake:
        yield fake


@pytest.fixture
def elsewhere() -> Iterator[FakeOrderCloud]:
    with FakeOrderCloud() as fake:
        yield fake


def _auth(fake: FakeVanMarcke, clock: ManualClock) -> VanMarcke:
    return VanMarcke(
        "API-APP1-P123456",
        "service-password",
        client_id="vm-client",
        client_secret="vm-secret",
        api_key=API_KEY,
        token_url=fake.token_url,
        store=MemoryStore(),
        clock=clock,
    )


def _echoed_headers(body: bytes) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body).items()}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_api_key_and_token_never_follow_a_redirect_to_another_origin(
    kind: str, vanmarcke: FakeVanMarcke, elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
    reply = send(kind, _auth(vanmarcke, clock), f"{vanmarcke.api_url}redirect?to={target}")
    assert reply.status == 200
    received = _echoed_headers(reply.body)
    assert "x-api-key" not in received
    assert "authorization" not in received


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_api_key_never_follows_the_redirect_of_a_resend_after_401(
    kind: str, vanmarcke: FakeVanMarcke, elsewhere: FakeOrderCloud, clock: ManualClock
) -> None:
    auth = _auth(vanmarcke, clock)
    auth.get_token()
    vanmarcke.revoke_access_tokens()  # the first answer is a 401, the resend's a redirect
    target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
    reply = send(kind, auth, f"{vanmarcke.api_url}redirect?to={target}")
    assert reply.status == 200
    assert reply.history >= 1  # the 401 (and, with httpx, the resend's 307)
    received = _echoed_headers(reply.body)
    assert "x-api-key" not in received
    assert "authorization" not in received


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_api_key_still_reaches_the_addressed_origin(
    kind: str, vanmarcke: FakeVanMarcke, clock: ManualClock
) -> None:
    reply = send(kind, _auth(vanmarcke, clock), vanmarcke.api_url + "items")
    assert reply.status == 200
    assert vanmarcke.api_ok == 1  # the fake's API answers 401 without the key


# --- through a forwarding proxy: the hop names its origin in its request line ---------------


class _ForwardingProxy(http.server.ThreadingHTTPServer):
    """A plain-HTTP forwarding proxy on loopback: takes absolute-form requests, relays them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.relayed = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""

    def do_GET(self) -> None:  # the name http.server dispatches to
        target = urlsplit(self.path)
        assert target.hostname == "127.0.0.1"  # loopback only
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        connection.request("GET", target.path or "/", headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert isinstance(self.server, _ForwardingProxy)
        self.server.relayed += 1
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy() -> Iterator[_ForwardingProxy]:
    server = _ForwardingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_request_through_a_forwarding_proxy_keeps_its_token_and_key(
    kind: str, vanmarcke: FakeVanMarcke, proxy: _ForwardingProxy, clock: ManualClock
) -> None:
    auth = _auth(vanmarcke, clock)
    url = vanmarcke.api_url + "items"
    if kind == "requests":
        status = requests.get(url, auth=auth, proxies={"http": proxy.url}, timeout=10).status_code
    elif kind == "httpx":
        with httpx.Client(auth=auth, proxy=proxy.url, trust_env=False) as client:
            status = client.get(url).status_code
    else:

        async def main() -> int:
            async with httpx.AsyncClient(auth=auth, proxy=proxy.url, trust_env=False) as client:
                return (await client.get(url)).status_code

        status = asyncio.run(main())
    assert status == 200
    assert proxy.relayed == 1
    assert vanmarcke.api_ok == 1
