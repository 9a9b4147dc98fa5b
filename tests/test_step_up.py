"""RFC 9470 step-up: an API answer that asks for a stronger login goes back to the caller as
it is, with no renewal and no resend, for every client, and one `StepUpRequired` event says
what the API asked for. The challenge parser never raises, whatever the header."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import renewauth
from renewauth import MemoryStore, OAuth2ClientCredentials, events
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._challenges import StepUp, parse_challenges, step_up_of
from renewauth.transports._signing import should_renew_after

from .helpers import ALL_KINDS, ManualClock, send

CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
ASKED = "step-up?acr_values=urn%3Aexample%3Amfa+urn%3Aexample%3Aphr&max_age=300"


@pytest.fixture(params=ALL_KINDS)
def every_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as provider:
        yield provider


def credentials(
    fake: FakeOAuth2Provider,
    clock: ManualClock,
    seen: list[events.Event],
    *,
    retry_statuses: tuple[int, ...] = (401,),
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        fake.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        store=MemoryStore(),
        clock=clock,
        on_event=seen.append,
        retry_statuses=retry_statuses,
    )


def api_requests(fake: FakeOAuth2Provider) -> int:
    return fake.api_ok + fake.api_unauthorized + fake.api_forbidden


def step_ups(seen: list[events.Event]) -> list[events.Event]:
    return [event for event in seen if isinstance(event, events.StepUpRequired)]


@pytest.mark.parametrize(
    ("status", "retry_statuses"),
    [(401, (401,)), (403, (401,)), (403, (401, 403)), (401, ())],
    ids=["401", "403-not-listed", "403-listed", "401-not-listed"],
)
def test_step_up_answer_is_returned_without_renewal_and_reported_once(
    every_kind: str,
    fake: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    status: int,
    retry_statuses: tuple[int, ...],
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen, retry_statuses=retry_statuses)
    auth.get_token()
    fake.reset_counters()
    seen.clear()
    with caplog.at_level(logging.WARNING, logger="renewauth"):
        reply = send(every_kind, auth, f"{fake.api_url}{ASKED}&status={status}")
    assert (reply.status, reply.history) == (status, 0)
    assert fake.token_calls == 0
    assert api_requests(fake) == 1
    assert seen == [
        events.StepUpRequired(
            origin=fake.base_url,
            status=status,
            acr_values=("urn:example:mfa", "urn:example:phr"),
            max_age=300,
        )
    ]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert fake.base_url in warnings[0].getMessage()
    assert "urn:example:mfa urn:example:phr" in warnings[0].getMessage()
    assert "300 s" in warnings[0].getMessage()
    # The token was fine all along: the next request uses it, with no token call.
    assert send(every_kind, auth, fake.api_url).status == 200
    assert fake.token_calls == 0


def test_step_up_without_acr_values_or_max_age_reports_none_asked(
    every_kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen)
    assert send(every_kind, auth, fake.api_url + "step-up").status == 401
    assert step_ups(seen) == [
        events.StepUpRequired(origin=fake.base_url, status=401, acr_values=(), max_age=None)
    ]
    assert fake.token_calls == 1  # the first token only


def test_step_up_answer_to_a_resend_is_reported_too(
    every_kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    """A revoked token is renewed and the request resent once; the resend's answer asks for
    a stronger login: it goes back as it is, reported, with no second renewal."""
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen)
    auth.get_token()
    fake.revoke_access_tokens()
    fake.reset_counters()
    seen.clear()
    reply = send(every_kind, auth, fake.api_url + ASKED)
    assert reply.status == 401
    assert fake.token_calls == 1  # the one renewal the revoked token needed
    assert api_requests(fake) == 2
    assert [type(event) for event in seen] == [
        events.Renewed,
        events.Resent,
        events.StepUpRequired,
    ]


def test_no_step_up_event_without_the_challenge(
    every_kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen)
    assert send(every_kind, auth, fake.api_url + "forbidden").status == 403
    assert send(every_kind, auth, fake.api_url + "insufficient-scope").status == 401
    assert step_ups(seen) == []


# --- retrofit: renewauth.patch() signs legacy calls -----------------------------------------


async def _aiohttp_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        await reply.read()
        return reply.status


def _legacy_status(kind: str, url: str, headers: dict[str, str] | None = None) -> int:
    """One call with no auth object anywhere, as legacy code makes it (`headers` its own)."""
    headers = headers or {}
    if kind == "requests":
        return requests.get(url, headers=headers, timeout=10).status_code
    if kind == "aiohttp":
        return asyncio.run(_aiohttp_status(url, headers))
    module: Any = httpx2 if kind.startswith("httpx2") else httpx
    if not kind.endswith("-async"):
        return int(module.get(url, headers=headers).status_code)

    async def call() -> int:
        async with module.AsyncClient() as client:
            return int((await client.get(url, headers=headers)).status_code)

    return asyncio.run(call())


def test_patched_call_meeting_a_step_up_is_not_renewed(
    every_kind: str, fake: FakeOAuth2Provider, clock: ManualClock
) -> None:
    seen: list[events.Event] = []
    auth = credentials(fake, clock, seen, retry_statuses=(401, 403))
    renewauth.patch({fake.api_url: auth})
    try:
        assert _legacy_status(every_kind, fake.api_url) == 200
        fake.reset_counters()
        assert _legacy_status(every_kind, f"{fake.api_url}{ASKED}&status=403") == 403
    finally:
        renewauth.unpatch()
    assert fake.token_calls == 0
    assert api_requests(fake) == 1
    assert [(event.status, event.max_age) for event in step_ups(seen)] == [(403, 300)]


def test_patched_call_keeps_a_programs_own_token_that_meets_a_step_up(
    every_kind: str,
    fake: FakeOAuth2Provider,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`keep-until-401`: a step-up asked of the program's own Bearer token is no rejection;
    the answer goes back as it is, not resent with renewauth's token."""
    own = auth_of_its_own(fake, clock).get_token().authorization
    seen: list[events.Event] = []
    renewauth.patch({fake.api_url: credentials(fake, clock, seen)})
    fake.reset_counters()
    try:
        with caplog.at_level(logging.WARNING, logger="renewauth"):
            status = _legacy_status(every_kind, fake.api_url + ASKED, {"Authorization": own})
        assert (status, fake.token_calls, api_requests(fake)) == (401, 0, 1)
        # Not remembered as rejected: the next call still carries the program's own token.
        assert _legacy_status(every_kind, fake.api_url, {"Authorization": own}) == 200
    finally:
        renewauth.unpatch()
    assert fake.token_calls == 0
    assert "program's own Bearer token" in caplog.text
    assert "stronger login" in caplog.text


def auth_of_its_own(fake: FakeOAuth2Provider, clock: ManualClock) -> OAuth2ClientCredentials:
    """Where the program's own token comes from: a client of its own (no patch yet)."""
    return OAuth2ClientCredentials(
        fake.token_url, CLIENT_ID, CLIENT_SECRET, store=MemoryStore(), clock=clock
    )


# --- the decision, without I/O ----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_listed_status_with_a_step_up_challenge_never_renews(status: int) -> None:
    challenge = 'Bearer error="insufficient_user_authentication", acr_values="mfa"'
    assert not should_renew_after(
        status,
        (401, 403),
        signed_url="https://api.example.com/a",
        answered_url="https://api.example.com/a",
        carried_token=True,
        already_resent=False,
        challenge=challenge,
    )


# --- the challenge parser -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer error="insufficient_user_authentication", '
            'error_description="A different authentication level is required", '
            'acr_values="myACR"',
            StepUp(acr_values=("myACR",), max_age=None),
        ),
        (
            'Bearer error="insufficient_user_authentication", '
            'error_description="More recent authentication is required", max_age="5"',
            StepUp(acr_values=(), max_age=5),
        ),
        (
            'Basic realm="a, error=\\"insufficient_user_authentication\\"", '
            'Bearer error=insufficient_user_authentication, acr_values="a b", max_age=60',
            StepUp(acr_values=("a", "b"), max_age=60),
        ),
        (
            'Negotiate dG9rZW4=, DPoP algs="ES256", error="insufficient_user_authentication"',
            StepUp(acr_values=(), max_age=None),
        ),
        ('Basic realm="error=insufficient_user_authentication"', None),
        ('Bearer realm="x", error_description="insufficient_user_authentication"', None),
        ('Bearer error="insufficient_user_authentication', None),  # unterminated quote
        (
            'Bearer error="insufficient_user_authentication", max_age="-5"',
            StepUp(acr_values=(), max_age=None),
        ),
        ("", None),
        (None, None),
    ],
)
def test_step_up_of_reads_the_bearer_challenge(header: str | None, expected: StepUp | None) -> None:
    assert step_up_of(header) == expected


def _check_parsed(header: str) -> None:
    """What the parser gives for any header: schemes, and a step-up or None; never raises."""
    challenges = parse_challenges(header)
    assert all(challenge.scheme for challenge in challenges)
    step_up = step_up_of(header)
    assert step_up is None or (
        all(isinstance(value, str) and value for value in step_up.acr_values)
        and (step_up.max_age is None or step_up.max_age >= 0)
    )


@given(st.text())
def test_challenge_parser_never_raises(header: str) -> None:
    _check_parsed(header)


_PIECES = st.sampled_from(
    [
        "Bearer",
        "DPoP",
        "Basic",
        " ",
        "\t",
        ",",
        "=",
        '"',
        "\\",
        "error",
        "insufficient_user_authentication",
        "acr_values",
        "max_age",
        "realm",
        "0",
        "99999999999999999999",
        "a b",
        "==",
    ]
)


@given(st.lists(_PIECES, max_size=40).map("".join))
def test_challenge_parser_never_raises_on_near_misses(header: str) -> None:
    """Headers made of the pieces a real one is made of, in any order: every branch of the
    parser (quotes unterminated, escapes, token68, empty values, huge numbers)."""
    _check_parsed(header)


_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)
_ACR = st.from_regex(r"[A-Za-z0-9:._/-]{1,20}", fullmatch=True)


@given(
    noise=st.lists(_VALUE, max_size=3),
    acr_values=st.lists(_ACR, max_size=4),
    max_age=st.none() | st.integers(min_value=0, max_value=10**12),
    before=st.booleans(),
)
def test_step_up_of_finds_the_values_whatever_the_other_challenges_quote(
    noise: list[str], acr_values: list[str], max_age: int | None, before: bool
) -> None:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    others = ", ".join(
        f"Scheme{index} realm={quoted(text)}, note={quoted(text + ', error=x')}"
        for index, text in enumerate(noise)
    )
    params = ['error="insufficient_user_authentication"', f"realm={quoted(''.join(noise))}"]
    if acr_values:
        params.append(f"acr_values={quoted(' '.join(acr_values))}")
    if max_age is not None:
        params.append(f'max_age="{max_age}"')
    bearer = "Bearer " + ", ".join(params)
    header = f"{others}, {bearer}" if before and others else f"{bearer}, {others}"
    assert step_up_of(header) == StepUp(acr_values=tuple(acr_values), max_age=max_age)
