"""The Token value: renewal times, immutability, serialisation, repr."""

from __future__ import annotations

import dataclasses

import pytest

from renewauth.token import Token


def test_token_renews_leeway_before_expiry_when_it_lives_long() -> None:
    token = Token(access_token="A", issued_at=0.0, expires_at=3600.0)
    assert token.renew_at(30.0) == 3570.0


def test_token_renews_at_half_life_when_it_lives_less_than_twice_leeway() -> None:
    token = Token(access_token="A", issued_at=100.0, expires_at=101.0)
    assert token.renew_at(30.0) == 100.5


def test_token_is_frozen() -> None:
    token = Token(access_token="A")
    with pytest.raises(dataclasses.FrozenInstanceError):
        token.access_token = "B"  # type: ignore[misc]


def test_token_rejects_empty_access_token() -> None:
    with pytest.raises(ValueError, match="access_token"):
        Token(access_token="")


def test_token_repr_shows_no_secret() -> None:
    token = Token(access_token="SECRET-A", refresh_token="SECRET-R", raw={"x": "SECRET-X"})
    assert "SECRET" not in repr(token)


def test_token_round_trips_through_dict() -> None:
    token = Token(access_token="A", issued_at=1.0, expires_at=2.0, refresh_token="R", scope="read")
    assert Token.from_dict(token.to_dict()) == token


def test_token_from_dict_rejects_wrong_types() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        Token.from_dict({"access_token": "A", "expires_at": "soon"})
