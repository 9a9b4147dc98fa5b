"""The departure check over HTTP/2: it never makes a leaving request wait.

On HTTP/2, httpcore takes a stream id before it announces that the headers go, and the id is
claimed only once they are sent: a request that waited there (for a renewal) would let another
request on the same connection take its id. So on HTTP/2 a leaving request takes a newer token
when one is cached, and otherwise leaves as it is. The server here is a small prior-knowledge
HTTP/2 server on loopback (the `h2` state machine over a socket) that records what it got.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from renewauth import MemoryStore, OAuth2ClientCredentials
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock


class _Http2Server:
    """Answers every request 200 with its path; records (path, Authorization) per stream."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.received: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self._stopped.set()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        state = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        state.initiate_connection()
        connection.sendall(state.data_to_send())
        with connection:
            while data := connection.recv(65535):
                try:
                    events = state.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.errors.append(type(exc).__name__)
                    return
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {bytes(k).decode(): bytes(v).decode() for k, v in event.headers}
                        path = headers.get(":path", "")
                        self.received.append((path, headers.get("authorization", "")))
                        body = path.encode()
                        state.send_headers(
                            event.stream_id,
                            [(":status", "200"), ("content-length", str(len(body)))],
                        )
                        state.send_data(event.stream_id, body, end_stream=True)
                connection.sendall(state.data_to_send())


@pytest.fixture
def server() -> Iterator[_Http2Server]:
    api = _Http2Server()
    yield api
    api.close()


@pytest.fixture
def slow_fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, token_delay=0.3, clock=clock) as fake:
        yield fake


def _auth(fake: FakeOAuth2Provider, clock: ManualClock) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url, "client-id", "client-secret", store=MemoryStore(), clock=clock
    )


def test_http2_request_with_a_spent_token_never_waits_while_others_share_the_connection(
    server: _Http2Server, slow_fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = _auth(slow_fake, clock)

    async def age(request: httpx.Request) -> None:
        if request.url.path == "/aged":
            clock.advance(150.0)  # it queued past its token's expiry

    async def main() -> list[int]:
        hooks = {"request": [age]}
        departing = asyncio.Event()

        async def trace(event: str, info: object) -> None:
            # Runs after renewauth's own check of the leaving request: it did not wait.
            if event == "http2.send_request_headers.started":
                departing.set()

        async with httpx.AsyncClient(http1=False, http2=True, event_hooks=hooks) as client:
            assert (await client.get(server.url + "warm", auth=auth)).status_code == 200
            aged = asyncio.create_task(
                client.get(server.url + "aged", auth=auth, extensions={"trace": trace})
            )
            await departing.wait()  # its stream id is taken and its headers go now
            assert slow_fake.token_calls == 1  # no renewal was waited for on the way out
            other = asyncio.create_task(client.get(server.url + "other"))
            return [(await aged).status_code, (await other).status_code]

    assert asyncio.run(main()) == [200, 200]
    assert server.errors == []
    assert [path for path, _ in server.received] == ["/warm", "/aged", "/other"]
    assert slow_fake.token_calls == 1  # the aged request left as it was: the API decides
    warm, aged, other = (authorization for _, authorization in server.received)
    assert aged == warm != ""  # with the token it was signed with
    assert other == ""


def test_http2_request_leaves_with_a_newer_token_already_cached(
    server: _Http2Server, slow_fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    auth = _auth(slow_fake, clock)
    signed = auth.get_token()

    def renew_meanwhile(request: httpx.Request) -> None:
        auth.invalidate()
        auth.get_token()  # another request renewed while this one queued

    with httpx.Client(
        http1=False, http2=True, event_hooks={"request": [renew_meanwhile]}
    ) as client:
        assert client.get(server.url + "item", auth=auth).status_code == 200
    assert auth.token is not None
    assert auth.token != signed
    assert server.received == [("/item", auth.token.authorization)]
