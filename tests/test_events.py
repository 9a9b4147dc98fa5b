"""Events: what `on_event=` and `renewauth.events.subscribe` receive, and never a secret."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from renewauth import MemoryStore, OAuth2ClientCredentials, events
from renewauth.errors import InvalidClient, TokenEndpointUnavailable
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, ManualClock, send

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def credentials(
    fake: FakeOAuth2Provider,
    clock: ManualClock,
    seen: list[events.Event],
    *,
    secret: str = CLIENT_SECRET,
    store: MemoryStore | None = None,
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url,
        CLIENT_ID,
        secret,
        store=store or MemoryStore(),
        clock=clock,
        on_event=seen.append,
    )


def assert_no_secret(seen: list[events.Event], *secrets: str) -> None:
    for event in seen:
        text = repr(event) + repr(dataclasses.asdict(event))
        for secret in secrets:
            assert secret not in text


def test_events_report_a_fetch_then_an_adoption_from_the_store(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    store = MemoryStore()
    first = credentials(fake, clock, seen, store=store)
    token = first.get_token()
    clock.advance(80.0)  # inside the soft window (leeway 30 s)
    credentials(fake, clock, seen, store=store).get_token()  # a twin: the store has it
    assert seen[0] == events.Renewed(
        origin=fake.base_url,
        grant="client_credentials",
        source="fetched",
        duration=0.0,
        expires_in=100.0,
    )
    assert seen[1:] == [
        events.Renewed(
            origin=fake.base_url, grant=None, source="store", duration=0.0, expires_in=20.0
        )
    ]
    assert_no_secret(seen, CLIENT_SECRET, token.access_token)


def test_events_report_a_refused_client_and_its_pause_once(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen, secret="wrong-secret")
    for _ in range(3):  # the pause answers the second and third without a call or an event
        with pytest.raises(InvalidClient):
            auth.get_token()
    assert seen == [
        events.RenewalFailed(
            origin=fake.base_url, error="InvalidClient", status=401, next_try_in=60.0
        ),
        events.Paused(origin=fake.base_url, until=clock.now + 60.0, reason="refused"),
    ]
    assert_no_secret(seen, "wrong-secret")


def test_events_report_a_retry_after_pause(fake: FakeOAuth2Provider, clock: ManualClock) -> None:
    fake.fail_token_requests(429, times=-1, headers={"Retry-After": "120"})
    seen: list[events.Event] = []
    with pytest.raises(TokenEndpointUnavailable):
        credentials(fake, clock, seen).get_token()
    assert seen[-1] == events.Paused(
        origin=fake.base_url, until=clock.now + 120.0, reason="retry-after"
    )
    assert isinstance(seen[0], events.RenewalFailed)
    assert seen[0].status == 429


def test_events_report_a_resend_after_401(
    kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen)
    auth.get_token()
    fake.revoke_access_tokens()
    assert send(kind, auth, fake.api_url).status == 200
    resent = [event for event in seen if isinstance(event, events.Resent)]
    assert resent == [events.Resent(origin=fake.base_url, status=401)]
    assert [type(event) for event in seen] == [events.Renewed, events.Renewed, events.Resent]


def test_subscribe_receives_every_objects_events_until_unsubscribed(
    fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    everywhere: list[events.Event] = []
    unsubscribe = events.subscribe(everywhere.append)
    try:
        credentials(fake, clock, []).get_token()
    finally:
        unsubscribe()
    unsubscribe()  # twice is harmless
    credentials(fake, clock, []).get_token()
    assert [type(event) for event in everywhere] == [events.Renewed]


def test_a_failing_event_callback_never_breaks_a_renewal(
    fake: FakeOAuth2Provider, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: events.Event) -> None:
        raise RuntimeError("bug in the user's callback")

    auth = OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), on_event=broken
    )
    assert auth.get_token().access_token
    assert "event callback raised RuntimeError" in caplog.text


def test_events_are_frozen() -> None:
    event = events.Resent(origin="https://api.example.com", status=401)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = 403  # type: ignore[misc]  # the point: it must refuse


def test_subscribe_refuses_what_is_not_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        events.subscribe(42)  # type: ignore[arg-type]  # the point: bad input
