"""When a refresh token ends: what the server says, the idle window, and `refresh_used_at`."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renewauth.answers import parse_token_response
from renewauth.flows import TokenResponse
from renewauth.token import Token

URL = "https://idp.example.com/token"
SENT = 1_700_000_000.0


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def response(body: dict[str, object], *, sent_at: float = SENT) -> TokenResponse:
    return TokenResponse(
        status=200,
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode(),
        url=URL,
        sent_at=sent_at,
        received_at=sent_at,
    )


@pytest.mark.parametrize("field", ["refresh_expires_in", "refresh_token_expires_in"])
def test_parser_reads_refresh_expiry_from_either_field(field: str) -> None:
    token = parse_token_response(response({"access_token": "A", "refresh_token": "R", field: 600}))
    assert token.refresh_expires_at == SENT + 600


def test_parser_reads_refresh_expiry_from_a_jwt_refresh_token() -> None:
    refresh = jwt({"exp": SENT + 900, "typ": "Refresh"})
    token = parse_token_response(response({"access_token": "A", "refresh_token": refresh}))
    assert token.refresh_expires_at == SENT + 900


def test_parser_treats_keycloak_offline_zero_as_no_stated_expiry() -> None:
    refresh = jwt({"typ": "Offline"})  # Keycloak's offline tokens carry no exp
    token = parse_token_response(
        response({"access_token": "A", "refresh_token": refresh, "refresh_expires_in": 0})
    )
    assert token.refresh_expires_at is None
    assert token.refresh_used_at == SENT


def test_parser_ignores_a_refresh_lifetime_past_float_range() -> None:
    token = parse_token_response(
        response({"access_token": "A", "refresh_token": "R", "refresh_expires_in": 10**400})
    )
    assert token.refresh_expires_at is None


def test_parser_marks_a_kept_refresh_token_used_by_a_refresh() -> None:
    previous = Token(access_token="old", refresh_token="R1", refresh_used_at=SENT - 500)
    token = parse_token_response(
        response({"access_token": "A"}), previous=previous, grant="refresh_token"
    )
    assert (token.refresh_token, token.refresh_used_at) == ("R1", SENT)


def test_token_refresh_ends_at_the_earlier_of_expiry_and_idle_end() -> None:
    token = Token(
        access_token="A", refresh_token="R", refresh_expires_at=SENT + 1000, refresh_used_at=SENT
    )
    assert token.refresh_ends_at() == SENT + 1000
    assert token.refresh_ends_at(idle_timeout=300) == SENT + 300
    assert token.refresh_ends_at(idle_timeout=5000) == SENT + 1000


def test_token_refresh_ends_at_is_none_without_refresh_token() -> None:
    assert Token(access_token="A", refresh_expires_at=SENT).refresh_ends_at(60) is None


def test_token_keeps_refresh_used_at_through_the_stores_dict() -> None:
    token = Token(access_token="A", refresh_token="R", refresh_used_at=SENT)
    assert Token.from_dict(json.loads(json.dumps(token.to_dict()))).refresh_used_at == SENT


@given(used=st.integers(10**309, 10**400) | st.text(max_size=5) | st.booleans())
def test_token_from_dict_refuses_a_bad_refresh_used_at(used: object) -> None:
    data = {**Token(access_token="A").to_dict(), "refresh_used_at": used}
    with pytest.raises(ValueError, match="refresh_used_at"):
        Token.from_dict(data)
