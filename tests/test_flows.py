"""Grant flows driven by hand: responses sent into the generator, no server, no clock."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, unquote_plus

import pytest

from renewauth.errors import InvalidClient, InvalidGrant, TokenRequestError
from renewauth.flows import Flow, TokenRequest, TokenResponse
from renewauth.oauth2 import (
    Client,
    ClientCredentialsGrant,
    PasswordGrant,
    RefreshTokenGrant,
    basic_credentials,
)
from renewauth.token import Token

TOKEN_URL = "https://idp.example.com/oauth/token"


def answer(status: int, body: object, *, sent_at: float = 1000.0) -> TokenResponse:
    return TokenResponse(
        status=status,
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode(),
        url=TOKEN_URL,
        sent_at=sent_at,
        received_at=sent_at + 0.02,
    )


def form(request: TokenRequest) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.body.decode()).items()}


def run(flow: Flow, *responses: TokenResponse) -> tuple[list[TokenRequest], Token]:
    """Drive `flow` with `responses`, one per yielded request."""
    requests = [next(flow)]
    for response in responses[:-1]:
        requests.append(flow.send(response))
    with pytest.raises(StopIteration) as done:
        flow.send(responses[-1])
    return requests, done.value.value


def test_client_credentials_sends_secret_in_body_by_default() -> None:
    grant = ClientCredentialsGrant(
        token_url=TOKEN_URL, client=Client(client_id="app", client_secret="s3"), scope="read"
    )
    requests, token = run(grant.fetch(None), answer(200, {"access_token": "A", "expires_in": 60}))
    assert form(requests[0]) == {
        "grant_type": "client_credentials",
        "client_id": "app",
        "client_secret": "s3",
        "scope": "read",
    }
    assert "Authorization" not in requests[0].headers
    assert token.access_token == "A"
    assert token.expires_at == 1060.0  # from the moment the request was sent


def test_basic_client_auth_form_encodes_id_and_secret_before_base64() -> None:
    secret = "a+b/c:d%e=f g"
    header = basic_credentials("my client", secret)
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    encoded_id, encoded_secret = decoded.split(":", 1)
    assert ":" not in encoded_secret  # the colon in the secret was encoded, so the split is safe
    assert unquote_plus(encoded_id) == "my client"
    assert unquote_plus(encoded_secret) == secret


def test_basic_client_auth_keeps_secret_out_of_body() -> None:
    client = Client(client_id="app", client_secret="s3", auth="basic")
    request = client.request(TOKEN_URL, "client_credentials", {})
    assert request.headers["Authorization"].startswith("Basic ")
    assert "client_secret" not in form(request)
    assert "client_id" not in form(request)


def test_json_body_encodes_every_parameter() -> None:
    client = Client(client_id="app", client_secret="s3", body="json")
    request = client.request(TOKEN_URL, "password", {"username": "u", "password": "p"})
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "grant_type": "password",
        "username": "u",
        "password": "p",
        "client_id": "app",
        "client_secret": "s3",
    }


def test_password_grant_logs_in_when_there_is_no_refresh_token() -> None:
    grant = PasswordGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), username="u", password="p"
    )
    requests, token = run(
        grant.fetch(None), answer(200, {"access_token": "A", "refresh_token": "R"})
    )
    assert form(requests[0])["grant_type"] == "password"
    assert token.refresh_token == "R"


def test_password_grant_renews_with_refresh_token_when_it_has_one() -> None:
    grant = PasswordGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), username="u", password="p"
    )
    current = Token(access_token="old", refresh_token="R1")
    requests, token = run(grant.fetch(current), answer(200, {"access_token": "new"}))
    assert form(requests[0]) == {
        "grant_type": "refresh_token",
        "refresh_token": "R1",
        "client_id": "app",
    }
    assert token.refresh_token == "R1"  # the reply had none: the old one is kept


def test_password_grant_falls_back_to_password_when_refresh_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant = PasswordGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), username="u", password="p"
    )
    current = Token(access_token="old", refresh_token="R1")
    requests, token = run(
        grant.fetch(current),
        answer(400, {"error": "invalid_grant", "error_description": "Token is not active"}),
        answer(200, {"access_token": "fresh", "refresh_token": "R2"}),
    )
    assert [form(request)["grant_type"] for request in requests] == ["refresh_token", "password"]
    assert token.refresh_token == "R2"
    assert "password grant" in caplog.text


def test_password_grant_raises_invalid_grant_naming_the_fix_when_password_is_wrong() -> None:
    grant = PasswordGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), username="u", password="p"
    )
    flow = grant.fetch(None)
    next(flow)
    with pytest.raises(InvalidGrant, match="password=") as caught:
        flow.send(answer(400, {"error": "invalid_grant", "error_description": "bad creds"}))
    assert caught.value.status == 400
    assert caught.value.error == "invalid_grant"
    assert caught.value.origin == "https://idp.example.com"


def test_refresh_grant_does_not_fall_back_when_refresh_fails_with_invalid_client() -> None:
    grant = PasswordGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), username="u", password="p"
    )
    flow = grant.fetch(Token(access_token="old", refresh_token="R1"))
    next(flow)
    with pytest.raises(InvalidClient, match="client_secret="):
        flow.send(answer(401, {"error": "invalid_client"}))


def test_refresh_token_grant_prefers_the_stored_refresh_token() -> None:
    grant = RefreshTokenGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), refresh_token="R0"
    )
    current = Token(access_token="old", refresh_token="R5")
    requests, _ = run(
        grant.fetch(current), answer(200, {"access_token": "A", "refresh_token": "R6"})
    )
    assert form(requests[0])["refresh_token"] == "R5"


def test_refresh_token_grant_starts_from_the_constructor_token() -> None:
    grant = RefreshTokenGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), refresh_token="R0"
    )
    requests, token = run(grant.fetch(None), answer(200, {"access_token": "A"}))
    assert form(requests[0])["refresh_token"] == "R0"
    assert token.refresh_token == "R0"  # no rotation in the reply: R0 is kept


def test_refresh_token_grant_says_how_to_get_a_new_one_when_refused() -> None:
    grant = RefreshTokenGrant(
        token_url=TOKEN_URL, client=Client(client_id="app"), refresh_token="R0"
    )
    flow = grant.fetch(None)
    next(flow)
    with pytest.raises(InvalidGrant, match="refresh_token=") as caught:
        flow.send(answer(400, {"error": "invalid_grant"}))
    assert "R0" not in str(caught.value)


def test_html_error_page_gives_token_request_error_naming_token_url() -> None:
    grant = ClientCredentialsGrant(
        token_url=TOKEN_URL, client=Client(client_id="app", client_secret="s")
    )
    flow = grant.fetch(None)
    next(flow)
    page = TokenResponse(
        status=404,
        headers={"content-type": "text/html"},
        body=b"<html>Not Found</html>",
        url=TOKEN_URL,
    )
    with pytest.raises(TokenRequestError, match="token_url=") as caught:
        flow.send(page)
    assert type(caught.value) is TokenRequestError
    assert caught.value.status == 404
