"""Token-endpoint faults that are not answers: a hang, a reset, garbage; sync and async."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from renewauth import (
    InvalidClient,
    MemoryStore,
    OAuth2ClientCredentials,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, send


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _auth(token_url: str, **options: object) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        token_url,
        "client-id",
        "client-secret",
        store=MemoryStore(),
        **options,  # type: ignore[arg-type]
    )


def test_hanging_token_endpoint_is_bounded_by_timeout_and_tries(kind: str) -> None:
    with FakeOAuth2Provider() as fake, fake.hold_token_requests():  # never answers
        auth = _auth(fake.token_url, timeout=0.3, retries=1)
        with pytest.raises(TokenEndpointUnavailable, match="timeout="):
            send(kind, auth, fake.api_url)
        assert fake.token_calls == 2  # the first try and one retry, each cut at 0.3 s


def test_hanging_token_endpoint_error_says_how_long_it_waited_and_keeps_the_timeout(
    kind: str,
) -> None:
    with FakeOAuth2Provider() as fake, fake.hold_token_requests():
        auth = _auth(fake.token_url, timeout=0.3, retries=0)
        with pytest.raises(
            TokenEndpointUnavailable, match=r"did not answer within 0\.3 s; raise timeout="
        ) as caught:
            send(kind, auth, fake.api_url)
    assert type(caught.value.__cause__) is TimeoutError


def test_event_loop_keeps_running_while_the_token_endpoint_hangs() -> None:
    with FakeOAuth2Provider() as fake, fake.hold_token_requests():
        auth = _auth(fake.token_url, timeout=0.5, retries=0)

        async def scenario() -> int:
            ticks = 0
            renewal = asyncio.create_task(auth.aget_token())
            while not renewal.done():
                ticks += 1
                await asyncio.sleep(0.01)
            with pytest.raises(TokenEndpointUnavailable):
                renewal.result()
            return ticks

        assert asyncio.run(scenario()) >= 10  # the loop ticked through the whole wait


@pytest.fixture
def resetting_server() -> Iterator[str]:
    """A token URL whose server resets every connection as soon as it is accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    accepted = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            # SO_LINGER 0: close() sends a reset instead of an orderly shutdown.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/oauth/token"
    stop.set()
    thread.join()
    listener.close()


def test_connection_reset_is_retried_then_unavailable(kind: str, resetting_server: str) -> None:
    auth = _auth(resetting_server, retries=2)
    with pytest.raises(TokenEndpointUnavailable, match="could not be reached"):
        send(kind, auth, resetting_server.replace("/oauth/token", "/api/"))


def test_backoff_jitter_leaves_the_programs_random_stream_alone(resetting_server: str) -> None:
    """Retries wait a jittered while, drawn from renewauth's own generator: a program (or a
    test framework) that seeded `random` gets the same numbers with renewauth as without."""
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    with pytest.raises(TokenEndpointUnavailable):
        _auth(resetting_server, retries=2).get_token()  # two jittered waits
    assert [random.random() for _ in range(3)] == expected


@pytest.fixture
def server_resetting_after_the_request() -> Iterator[str]:
    """A token URL whose server reads each request whole, then resets the connection: the
    client is waiting for the answer when the reset comes (not still writing, when httpcore
    would drop the write error and report only a closed connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(10)
                received = b""
                while b"\r\n\r\n" not in received:
                    received += connection.recv(65536)
                head, _, body = received.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += connection.recv(65536)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/oauth/token"
    stop.set()
    thread.join()
    listener.close()


def test_reset_token_call_says_connection_reset_and_keeps_the_reset_as_cause(
    kind: str, server_resetting_after_the_request: str
) -> None:
    token_url = server_resetting_after_the_request
    origin = token_url.removesuffix("/oauth/token")
    with pytest.raises(
        TokenEndpointUnavailable, match=f"connection reset by {origin}; check the network"
    ) as caught:
        send(kind, _auth(token_url, retries=0), token_url.replace("/oauth/token", "/api/"))
    assert type(caught.value.__cause__) is ConnectionResetError


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>Sign in</body></html>", "not an OAuth 2 JSON answer|text/html"),
        (b'{"token": "abc"}', "without access_token"),
        (b"\x00\xff garbage", "token_url="),
    ],
)
def test_200_that_is_not_a_token_is_a_typed_error_naming_the_fix(
    kind: str, body: bytes, match: str
) -> None:
    with FakeOAuth2Provider() as fake:
        headers = {"Content-Type": "text/html"} if body.startswith(b"<") else None
        fake.fail_token_requests(200, body=body, headers=headers)
        with pytest.raises(TokenRequestError, match=match):
            send(kind, _auth(fake.token_url), fake.api_url)
        assert fake.token_calls == 1  # an answer, not a fault: never retried
        assert send(kind, _auth(fake.token_url), fake.api_url).status == 200  # recovered


def test_invalid_client_makes_no_retry_storm(kind: str) -> None:
    with FakeOAuth2Provider() as fake:
        fake.fail_token_requests(400, times=-1, body=b'{"error": "invalid_client"}')
        auth = _auth(fake.token_url, retries=5)
        with pytest.raises(InvalidClient):
            send(kind, auth, fake.api_url)
        assert fake.token_calls == 1  # at most 1 + retries; credential errors are not retried
