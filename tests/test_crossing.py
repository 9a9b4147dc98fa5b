"""Objects that cross processes, or get copied, keep working.

An auth object pickles after any use (requests, httpx, httpx async) and its copy fetches a
token and signs, here and in a spawned process. A signed `requests.PreparedRequest` that was
deep-copied or pickled (by a cache, a recorder, a retry library) renews and resends once on
its 401, as the original would; a deep copy still asks the manager for the token to leave
with, and a pickled one carries no secret its header does not need (no refresh token). A
`Token` pickles and deep-copies whole, its read-only `raw` included.
"""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from types import MappingProxyType
from typing import Any

import pytest
import requests

from renewauth import MemoryStore, OAuth2ClientCredentials, OAuth2Password, Token
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, send

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
USER, PASSWORD = "alice", "alice-password"

# No injected clock here: a clock that crosses must pickle, and the suite's ManualClock holds
# a lock. The fake's tokens live an hour; revocation, not time, makes them fail.


@pytest.fixture
def fake() -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider() as provider:
        yield provider


def credentials(fake: FakeOAuth2Provider) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore())


def _unpickled(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - our own bytes


def _pickled(value: Any) -> Any:
    return _unpickled(pickle.dumps(value))


COPIERS: dict[str, Callable[[Any], Any]] = {"pickle": _pickled, "deepcopy": copy.deepcopy}


def _send_with_every_client(auth: OAuth2ClientCredentials, url: str) -> list[int]:
    """Run in a spawned process: the statuses the API gives each client there."""
    return [send(kind, auth, url).status for kind in KINDS]


def _hook_auth(request: requests.PreparedRequest) -> OAuth2ClientCredentials:
    """The auth object behind the response hook a signed request carries (its copy's own)."""
    hook: Any = request.hooks["response"][-1]
    auth: OAuth2ClientCredentials = hook.__self__
    return auth


# --- auth objects --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uses",
    [("requests",), ("httpx",), ("httpx-async",), KINDS],
    ids=["requests", "httpx", "httpx-async", "all"],
)
def test_auth_object_pickles_after_use_and_its_copy_signs_with_every_client(
    uses: Sequence[str], fake: FakeOAuth2Provider
) -> None:
    """Whatever used it, the object pickles, and its copy (used by every client in turn,
    the async one included) pickles again: what a client keeps per use never crosses."""
    auth = credentials(fake)
    for kind in uses:
        assert send(kind, auth, fake.api_url).status == 200
    crossed = _pickled(auth)
    assert crossed.token is None  # the token never travels
    replies = [send(kind, crossed, fake.api_url) for kind in KINDS]
    again = _pickled(crossed)
    assert [(reply.status, reply.history) for reply in replies] == [(200, 0)] * 3
    assert send("httpx-async", again, fake.api_url).status == 200
    assert fake.token_calls == 3  # one each: a MemoryStore arrives empty


def test_auth_object_used_by_every_client_gets_200_in_a_spawned_process(
    fake: FakeOAuth2Provider,
) -> None:
    auth = credentials(fake)
    for kind in KINDS:
        assert send(kind, auth, fake.api_url).status == 200
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        statuses = pool.submit(_send_with_every_client, auth, fake.api_url).result(timeout=120)
    assert statuses == [200, 200, 200]
    assert fake.token_calls == 2  # the child fetched its own token, once


# --- signed prepared requests --------------------------------------------------------------


@pytest.mark.parametrize("copier", list(COPIERS.values()), ids=list(COPIERS))
def test_copied_prepared_request_renews_and_resends_once_on_its_401(
    copier: Callable[[Any], Any], fake: FakeOAuth2Provider
) -> None:
    auth = credentials(fake)
    signed = requests.Request("GET", fake.api_url, auth=auth).prepare()
    copied: requests.PreparedRequest = copier(signed)
    fake.revoke_access_tokens()
    with requests.Session() as session:
        response = session.send(copied, timeout=10)
    assert response.status_code == 200
    assert len(response.history) == 1
    assert response.history[0].status_code == 401
    assert fake.token_calls == 2  # one renewal
    assert fake.api_unauthorized == 1  # one resend
    renewed = _hook_auth(copied).token  # the token the copy's own auth object renewed to
    assert renewed is not None
    assert renewed.authorization != signed.headers["Authorization"]
    assert response.request.headers["Authorization"] == renewed.authorization


def test_pickled_request_leaves_the_refresh_token_behind_and_renews_on_its_401(
    fake: FakeOAuth2Provider,
) -> None:
    auth = OAuth2Password(
        fake.token_url,
        CLIENT_ID,
        USER,
        PASSWORD,
        client_secret=CLIENT_SECRET,
        store=MemoryStore(),
    )
    pickled = pickle.dumps(requests.Request("GET", fake.api_url, auth=auth).prepare())
    fake.revoke_access_tokens()
    with requests.Session() as session:
        response = session.send(_unpickled(pickled), timeout=10)
    assert (response.status_code, len(response.history)) == (200, 1)
    assert fake.token_calls_by_grant == {"password": 2}  # the copy's own grant, once
    signed = auth.token
    assert signed is not None
    assert signed.refresh_token
    assert signed.refresh_token.encode() not in pickled  # only what the header needs


def test_deep_copied_request_leaves_with_the_token_its_manager_holds_now(
    fake: FakeOAuth2Provider,
) -> None:
    """A deep copy in this process still asks the manager when its headers are written."""
    auth = credentials(fake)
    copied = copy.deepcopy(requests.Request("GET", fake.api_url, auth=auth).prepare())
    fake.revoke_access_tokens()
    auth.invalidate()
    auth.get_token()  # a newer token, renewed while the copy waited
    with requests.Session() as session:
        response = session.send(copied, timeout=10)
    # The signed token is revoked: a 200 at the first try means the newer one left.
    assert (response.status_code, len(response.history)) == (200, 0)
    assert fake.api_unauthorized == 0
    assert fake.token_calls == 2


# --- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("copier", list(COPIERS.values()), ids=list(COPIERS))
def test_token_copies_whole_with_its_read_only_raw_fields(copier: Callable[[Any], Any]) -> None:
    token = Token(
        access_token="access-value",
        expires_at=200.0,
        issued_at=100.0,
        refresh_token="refresh-value",
        refresh_expires_at=300.0,
        refresh_used_at=100.0,
        scope="read",
        api_origin="https://api.example.com",
        raw={"access_token": "access-value", "extra": {"nested": [1, 2]}},
    )
    copied: Token = copier(token)
    assert copied == token
    for field in dataclasses.fields(Token):  # every field, those added later too
        assert getattr(copied, field.name) == getattr(token, field.name), field.name
    assert isinstance(copied.raw, MappingProxyType)
    assert repr(copied) == repr(token)
    assert "access-value" not in repr(copied)
    assert "refresh-value" not in repr(copied)
