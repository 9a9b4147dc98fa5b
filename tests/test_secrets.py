"""Secrets canary: unique secrets run through every scenario and must surface nowhere.

Password, client secret, and every access and refresh token the fake issues are looked for
in DEBUG logs (renewauth's, httpx's, urllib3's), in every repr, and in every error message
and its chained causes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from renewauth import (
    AuthError,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    Token,
    TokenAuth,
)
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, ManualClock, send

CANARY_SECRET = "canary-client-secret-7f3a+/:%="
CANARY_PASSWORD = "canary-password-91c2"
CLIENT = "canary-client"
USER = "canary-user"


class Canary:
    def __init__(self) -> None:
        self.secrets = {CANARY_SECRET, CANARY_PASSWORD}
        self.texts: list[str] = []

    def on_token(self, token: Token) -> None:
        self.secrets.add(token.access_token)
        if token.refresh_token:
            self.secrets.add(token.refresh_token)

    def see(self, *objects: object) -> None:
        for item in objects:
            self.texts.extend([repr(item), str(item)])

    def see_error(self, exc: BaseException) -> None:
        while exc is not None:
            self.see(exc)
            self.texts.append(repr(exc.args))
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]

    def leaks(self) -> list[str]:
        found = []
        for secret in self.secrets:
            for text in self.texts:
                if secret in text:
                    found.append(f"{secret[:12]}… in {text[:80]!r}")
        return found


@pytest.fixture
def canary(caplog: pytest.LogCaptureFixture) -> Iterator[Canary]:
    caplog.set_level(logging.DEBUG)
    canary = Canary()
    yield canary
    # In teardown, caplog.text holds only teardown records: read the test's own.
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert records, "the scenario logged nothing: the canary would see nothing"
    canary.texts.extend(record.getMessage() for record in records)
    assert canary.leaks() == []


@pytest.fixture
def fake() -> Iterator[FakeOAuth2Provider]:
    clock = ManualClock()
    with FakeOAuth2Provider(
        token_lifetime=100.0,
        clients={CLIENT: CANARY_SECRET},
        users={USER: CANARY_PASSWORD},
        clock=clock,
    ) as provider:
        provider.clock = clock  # type: ignore[attr-defined]
        yield provider


def auths(
    fake: FakeOAuth2Provider, canary: Canary, password: str = CANARY_PASSWORD
) -> list[TokenAuth]:
    clock = fake.clock  # type: ignore[attr-defined]
    refresh_token = fake.issue_refresh_token(USER, CLIENT)
    canary.secrets.add(refresh_token)
    common = {"store": MemoryStore(), "on_token": canary.on_token, "clock": clock}
    return [
        OAuth2ClientCredentials(
            fake.token_url, CLIENT, CANARY_SECRET, client_auth="basic", **common
        ),  # type: ignore[arg-type]
        OAuth2Password(
            fake.token_url, CLIENT, USER, password, client_secret=CANARY_SECRET, **common
        ),  # type: ignore[arg-type]
        OAuth2RefreshToken(
            fake.token_url, CLIENT, refresh_token, client_secret=CANARY_SECRET, **common
        ),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_no_secret_surfaces_in_renewals_rotation_and_resends(
    kind: str, fake: FakeOAuth2Provider, canary: Canary
) -> None:
    for auth in auths(fake, canary):
        assert send(kind, auth, fake.api_url).status == 200
        fake.clock.advance(150.0)  # type: ignore[attr-defined]
        assert send(kind, auth, fake.api_url).status == 200
        fake.revoke_access_tokens()
        assert send(kind, auth, fake.api_url).status == 200
        assert send(kind, auth, fake.api_url + "always-401").status == 401
        canary.see(auth, auth.token, auth._manager.grant)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 503, "times": -1},
        {"status": 400, "times": -1, "body": b'{"error":"invalid_grant","error_description":"no"}'},
        {"status": 200, "times": -1, "body": b"<html>login page</html>"},
        {"status": 401, "times": -1},
    ],
)
def test_no_secret_surfaces_in_token_endpoint_errors(
    failure: dict[str, object], fake: FakeOAuth2Provider, canary: Canary
) -> None:
    fake.fail_token_requests(**failure)  # type: ignore[arg-type]
    for auth in auths(fake, canary):
        auth._manager.retries = 0
        with pytest.raises(AuthError) as caught:
            auth.get_token()
        canary.see_error(caught.value)
        canary.see(auth)


def test_no_secret_surfaces_when_credentials_are_wrong(
    fake: FakeOAuth2Provider, canary: Canary
) -> None:
    refused: list[type[AuthError] | None] = []
    for auth in auths(fake, canary, password="wrong-" + CANARY_PASSWORD):
        canary.secrets.add("wrong-" + CANARY_PASSWORD)
        try:
            auth.get_token()
        except AuthError as exc:
            canary.see_error(exc)
            refused.append(type(exc))
        else:
            refused.append(None)
        canary.see(auth)
    # Only the password grant carries the wrong password, and the server refused it: the
    # canary read that error, not nothing.
    assert refused == [None, InvalidGrant, None]
    assert fake.token_calls_by_grant["password"] == 1


def test_no_secret_surfaces_when_the_endpoint_is_unreachable(canary: Canary) -> None:
    with FakeOAuth2Provider() as gone:
        token_url = gone.token_url
    auth = OAuth2Password(
        token_url,
        CLIENT,
        USER,
        CANARY_PASSWORD,
        client_secret=CANARY_SECRET,
        retries=0,
        store=MemoryStore(),
    )
    with pytest.raises(AuthError) as caught:
        auth.get_token()
    canary.see_error(caught.value)
    canary.see(auth)
