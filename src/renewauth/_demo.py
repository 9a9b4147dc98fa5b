"""`renewauth demo`: renewals happening, against the embedded fake provider.

One auth object serves a `requests.Session`, an `httpx.Client` and 50 asyncio tasks on an
`httpx.AsyncClient` while short-lived tokens expire, refresh tokens rotate and the server
revokes every access token once. It prints a line per renewal and a summary; it exits 1 if
any request failed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import requests

from .auth import OAuth2Password
from .stores import MemoryStore
from .testing import FakeOAuth2Provider
from .token import Token

__all__ = ["run_demo"]

_CLIENT_ID, _CLIENT_SECRET = "demo-client", "demo-secret"
_USER, _PASSWORD = "demo-user", "demo-password"


@dataclass
class _Tally:
    """What the demo counts; guarded by a lock, since threads and tasks all add to it."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    failures: int = 0
    renewals: int = 0
    resends: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def count(self, status: int, history: int) -> None:
        with self.lock:
            self.requests += 1
            self.failures += status != 200
            self.resends += history


def run_demo(*, lifetime: float = 2.0, print_line: Callable[[str], None] = print) -> int:
    """Run the demo and return its exit status (0 when no request failed)."""
    tally = _Tally()
    with FakeOAuth2Provider(
        token_lifetime=lifetime,
        rotate_refresh_tokens=True,
        clients={_CLIENT_ID: _CLIENT_SECRET},
        users={_USER: _PASSWORD},
        token_delay=0.02,
    ) as fake:

        def on_token(token: Token) -> None:
            with tally.lock:
                tally.renewals += 1
                number = tally.renewals
            recorded = fake.last_token_request
            grant = recorded.grant_type if recorded else "?"
            left = (token.expires_at or time.time()) - time.time()
            what = "fetched" if number == 1 else "renewed"
            print_line(
                f"[{tally.elapsed():5.2f} s] token #{number} {what} with the {grant} grant, "
                f"valid {left:.1f} s; refresh token rotated and stored"
            )

        auth = OAuth2Password(
            fake.token_url,
            _CLIENT_ID,
            _USER,
            _PASSWORD,
            client_secret=_CLIENT_SECRET,
            store=MemoryStore(),
            # Renew at half life: a token has half its life left when a request is signed,
            # room for the queueing of 50 tasks and a server that shares this process.
            leeway=lifetime / 2,
            on_token=on_token,
        )
        print_line(
            f"renewauth demo: a fake OAuth2 provider on {fake.base_url}, "
            f"tokens live {lifetime:g} s, refresh tokens rotate on every use"
        )
        pause = lifetime / 8

        print_line(
            f"[{tally.elapsed():5.2f} s] requests.Session: 20 calls, one every {pause:.2f} s"
        )
        with requests.Session() as session:
            session.auth = auth
            for _ in range(20):
                response = session.get(fake.api_url + "orders", timeout=10)
                tally.count(response.status_code, len(response.history))
                time.sleep(pause)

            # Revoke just after a renewal, so the token the next call carries is young and
            # only the revocation (not its age) can make the API reject it.
            renewals = tally.renewals
            while tally.renewals == renewals:
                response = session.get(fake.api_url + "orders", timeout=10)
                tally.count(response.status_code, len(response.history))
                time.sleep(pause)
            fake.revoke_access_tokens()
            print_line(f"[{tally.elapsed():5.2f} s] the server revokes every access token")
            response = session.get(fake.api_url + "orders", timeout=10)
            tally.count(response.status_code, len(response.history))
            what = (
                "401, renewed, resent once"
                if [earlier.status_code for earlier in response.history] == [401]
                else "sent"
            )
            print_line(f"[{tally.elapsed():5.2f} s] next call: {what} -> {response.status_code}")

        print_line(f"[{tally.elapsed():5.2f} s] httpx.Client: 20 calls, one every {pause:.2f} s")
        with httpx.Client(auth=auth) as client:
            for _ in range(20):
                reply = client.get(fake.api_url + "prices")
                tally.count(reply.status_code, len(reply.history))
                time.sleep(pause)

        # 50 tasks at most 250 calls/s together: a load this machine serves without queueing
        # requests for longer than a short token lives.
        task_pause = max(pause, 0.25)
        print_line(f"[{tally.elapsed():5.2f} s] httpx.AsyncClient: 50 tasks, 10 calls each")
        asyncio.run(_tasks(auth, fake.api_url + "stock", tally, task_pause))

        print_line("")
        print_line(
            f"summary: {tally.requests} requests, {tally.failures} failed, "
            f"{fake.token_calls} token calls ({_grants(fake)}), {tally.renewals - 1} renewals, "
            f"{tally.resends} request(s) resent after a 401, "
            f"{fake.stale_refresh_tokens} stale refresh tokens presented"
        )
    return 0 if tally.failures == 0 else 1


async def _tasks(auth: OAuth2Password, url: str, tally: _Tally, pause: float) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(auth=auth, limits=limits) as client:

        async def work() -> None:
            for _ in range(10):
                reply = await client.get(url)
                tally.count(reply.status_code, len(reply.history))
                await asyncio.sleep(pause)

        await asyncio.gather(*(work() for _ in range(50)))


def _grants(fake: FakeOAuth2Provider) -> str:
    return ", ".join(
        f"{count} {grant}" for grant, count in sorted(fake.token_calls_by_grant.items())
    )
