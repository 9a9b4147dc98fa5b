"""The token-response parser: expiry sources, token types, and malformed bodies."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renewauth.answers import parse_token_response, read_jwt_expiry
from renewauth.errors import TokenEndpointUnavailable, TokenRequestError
from renewauth.flows import TokenResponse
from renewauth.token import Token

URL = "https://idp.example.com/token"


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def response(
    body: bytes | dict[str, object],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    sent_at: float = 1_700_000_000.0,
) -> TokenResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return TokenResponse(
        status=status,
        headers=headers or {"content-type": "application/json"},
        body=raw,
        url=URL,
        sent_at=sent_at,
        received_at=sent_at,
    )


@pytest.mark.parametrize("expires_in", [120, 120.0, "120", " 120 "])
def test_parser_reads_expires_in_as_number_or_numeric_string(expires_in: object) -> None:
    token = parse_token_response(response({"access_token": "A", "expires_in": expires_in}))
    assert token.expires_at == 1_700_000_120.0


def test_parser_uses_jwt_exp_when_expires_in_is_missing() -> None:
    token = parse_token_response(response({"access_token": jwt({"exp": 1_700_000_500})}))
    assert token.expires_at == 1_700_000_500.0


def test_parser_corrects_jwt_exp_for_a_server_clock_that_is_ahead() -> None:
    # The server's clock is 60 s ahead of ours: its exp is 60 s later than our expiry.
    headers = {"content-type": "application/json", "date": "Tue, 14 Nov 2023 22:14:20 GMT"}
    sent_at = 1_700_000_000.0  # 22:13:20 GMT
    token = parse_token_response(
        response({"access_token": jwt({"exp": 1_700_000_660})}, headers=headers, sent_at=sent_at)
    )
    assert token.expires_at == pytest.approx(1_700_000_600.0)


def test_parser_ignores_small_clock_differences() -> None:
    headers = {"content-type": "application/json", "date": "Tue, 14 Nov 2023 22:13:22 GMT"}
    token = parse_token_response(
        response({"access_token": jwt({"exp": 1_700_000_660})}, headers=headers)
    )
    assert token.expires_at == 1_700_000_660.0


def test_parser_leaves_expiry_unknown_without_expires_in_or_jwt() -> None:
    token = parse_token_response(response({"access_token": "opaque"}))
    assert token.expires_at is None
    assert token.renew_at(30.0) == float("inf")


@pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer"])
def test_parser_sends_bearer_scheme_whatever_the_case(token_type: str) -> None:
    token = parse_token_response(response({"access_token": "A", "token_type": token_type}))
    assert token.authorization == "Bearer A"


def test_parser_keeps_previous_refresh_token_when_reply_has_none() -> None:
    previous = Token(access_token="old", refresh_token="R1")
    token = parse_token_response(response({"access_token": "A"}), previous=previous)
    assert token.refresh_token == "R1"


def test_parser_treats_refresh_expires_in_zero_as_unknown() -> None:
    token = parse_token_response(
        response({"access_token": "A", "refresh_token": "R", "refresh_expires_in": 0})
    )
    assert token.refresh_expires_at is None


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_parser_raises_unavailable_for_server_errors(status: int) -> None:
    with pytest.raises(TokenEndpointUnavailable):
        parse_token_response(response(b"oops", status=status))


def test_parser_names_the_fix_for_json_without_access_token() -> None:
    with pytest.raises(TokenRequestError, match=r"token_url=.*/token"):
        parse_token_response(response({"token": "A"}))


def test_jwt_expiry_is_none_for_garbage() -> None:
    assert read_jwt_expiry("a.b.c") is None
    assert read_jwt_expiry("not a jwt") is None
    assert read_jwt_expiry(jwt({"exp": "soon"})) is None
    assert read_jwt_expiry(jwt({"exp": True})) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
token_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_token": json_values | st.text(max_size=40),
        "token_type": json_values,
        "expires_in": json_values | st.from_regex(r"\s*-?[0-9]{0,6}(\.[0-9]*)?\s*", fullmatch=True),
        "refresh_token": json_values,
        "refresh_expires_in": json_values | st.integers(10**300, 10**400),
        "refresh_token_expires_in": json_values | st.integers(10**300, 10**400),
        "scope": json_values,
        "error": json_values,
        "error_description": json_values,
    },
)


@given(body=st.binary(max_size=200), status=st.integers(100, 599))
def test_parser_never_raises_anything_but_token_request_error_on_bytes(
    body: bytes, status: int
) -> None:
    try:
        token = parse_token_response(response(body, status=status))
    except TokenRequestError as exc:
        assert str(exc)
    else:
        assert token.access_token


@given(fields=token_fields, status=st.sampled_from([200, 201, 400, 401, 403, 500]))
def test_parser_gives_token_or_typed_error_for_any_json_object(
    fields: dict[str, object], status: int
) -> None:
    try:
        token = parse_token_response(response(fields, status=status))
    except TokenRequestError as exc:
        assert exc.status == status
    else:
        assert isinstance(token.access_token, str)
        assert token.access_token
        assert token.expires_at is None or token.expires_at >= 1_700_000_000.0
        assert token.refresh_expires_at is None or token.refresh_expires_at >= 1_700_000_000.0


@given(payload=st.binary(max_size=80), header=st.text(max_size=20))
def test_jwt_reader_never_raises(payload: bytes, header: str) -> None:
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    result = read_jwt_expiry(f"{header}.{encoded}.sig")
    assert result is None or isinstance(result, float)
