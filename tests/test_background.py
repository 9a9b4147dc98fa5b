"""No request waits for a renewal while its token is valid (the soft window's renewal runs in
the background), and a renewal in flight at the interpreter's exit is finished and stored.

Against the loopback fake, whose token calls are held (`hold_token_requests`) for as long as
a test needs: a request that waited for the renewal could not return while the call is held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from renewauth import (
    FileStore,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2RefreshToken,
    Token,
    _flight,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import FlightWatch, ManualClock, send, settle, started

LIFETIME = 100.0  # renewed from 70 s (leeway 30 s); spent at 99.5 s
CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"


def _auth(fake: FakeOAuth2Provider, clock: ManualClock) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), clock=clock, leeway=30.0
    )


def test_a_request_in_the_soft_window_goes_at_once_while_its_renewal_is_held(
    kind: str, clock: ManualClock
) -> None:
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        auth = _auth(fake, clock)
        first = auth.get_token()
        clock.advance(75.0)  # in the soft window: valid for 25 s more
        with fake.hold_token_requests():
            request, outcome = started(lambda: send(kind, auth, fake.api_url))
            request.join(30)
            # The request was answered while the renewal it started is still held.
            assert not request.is_alive()
            assert fake.wait_for_held_token_requests(1)
            assert outcome[0].status == 200  # type: ignore[attr-defined]
            assert auth.get_token() is first  # every caller keeps the valid token meanwhile
        settle()
        renewed = auth.get_token()
        assert renewed.access_token != first.access_token
        assert fake.token_calls == 2
        assert fake.api_unauthorized == 0


def test_a_spent_token_waits_for_the_background_renewal_which_nobody_takes_over(
    clock: ManualClock, flights: FlightWatch
) -> None:
    """The thread that noticed the soft window is gone when the token is spent: the waiters
    wait for the renewal's own thread (the flight's leader now), and never renew twice."""
    with FakeOAuth2Provider(token_lifetime=LIFETIME, clock=clock) as fake:
        auth = _auth(fake, clock)
        first = auth.get_token()
        clock.advance(75.0)
        with fake.hold_token_requests():
            starter, returned = started(auth.get_token)
            starter.join(30)
            assert returned == [first]  # sent at once; that thread has ended
            assert fake.wait_for_held_token_requests(1)
            clock.now += 30.0  # spent now (not `advance`: the renewal is held on purpose)
            flight = _flight._REGISTRY[auth._manager._flight_key]
            assert not flight.abandon_if_leader_gone()  # its leader is the renewal's thread
            waiters = [started(auth.get_token) for _ in range(8)]
            assert flights.wait_for_joined(8)
        for waiter, _ in waiters:
            waiter.join(30)
        tokens = {outcome[0] for _, outcome in waiters}
        assert len(tokens) == 1
        (renewed,) = tokens
        assert isinstance(renewed, Token)
        assert renewed.access_token != first.access_token
        assert fake.token_calls == 2  # the first token, and the one renewal


_EXITING_RUN = """
    import asyncio, sys, time
    from renewauth import FileStore, OAuth2RefreshToken
    # This process's clock is 90 s ahead: the stored token (another process renewed it) is
    # in its soft window, past the half this process leaves to the one that renewed it.
    auth = OAuth2RefreshToken(sys.argv[1], "client-id", sys.argv[2],
                              client_secret="client-secret", store=FileStore(sys.argv[3]),
                              clock=lambda: time.time() + 90)
    auth.get_token()  # read from the store
    if sys.argv[4] == "sync":
        auth.get_token()  # sent at once, renewed in the background
    else:
        asyncio.run(auth.aget_token())
    print("exiting", flush=True)  # main ends here, its renewal still in flight
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_renewal_in_flight_at_exit_is_finished_and_its_rotated_token_stored(
    tmp_path: Path, mode: str
) -> None:
    with FakeOAuth2Provider(token_lifetime=LIFETIME) as fake:
        configured = fake.issue_refresh_token()
        tokens = tmp_path / "tokens"
        auth = OAuth2RefreshToken(
            fake.token_url, CLIENT_ID, configured, client_secret=CLIENT_SECRET,
            store=FileStore(tokens),
        )  # fmt: skip
        first = auth.get_token()  # the store holds the chain's first rotation
        environment = {**os.environ, "RENEWAUTH_STATE_DIR": str(tmp_path / "state")}
        script = textwrap.dedent(_EXITING_RUN)
        arguments = [fake.token_url, configured, str(tokens), mode]
        with fake.hold_token_requests():
            child = subprocess.Popen(
                [sys.executable, "-c", script, *arguments],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            assert fake.wait_for_held_token_requests(1, timeout=60)
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "exiting"  # while its call is held
        _, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
        stored = FileStore(tokens).get(auth._manager.key)
        assert stored is not None
        assert stored.refresh_token not in (None, first.refresh_token)  # rotated, and stored
        # The next process continues the chain from it: no refresh token was lost.
        later = OAuth2RefreshToken(
            fake.token_url, CLIENT_ID, configured, client_secret=CLIENT_SECRET,
            store=FileStore(tokens), clock=lambda: time.time() + 2 * LIFETIME,
        )  # fmt: skip
        assert later.get_token().refresh_token != stored.refresh_token
        assert fake.stale_refresh_tokens == 0
