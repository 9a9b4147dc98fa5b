"""Tests of renewauth.testing's fake OAuth2 provider, driven with plain httpx."""

from __future__ import annotations

import ast
import base64
import inspect
import json
import pathlib
import re
import threading
import types
import urllib.parse
from collections.abc import Iterator, Mapping

import httpx
import pytest

import renewauth.testing
from renewauth.testing import FakeOAuth2Provider

from .helpers import ManualClock

CLIENT_BODY_AUTH = {"client_id": "client-id", "client_secret": "client-secret"}


@pytest.fixture
def fake() -> Iterator[FakeOAuth2Provider]:
    with FakeOAuth2Provider() as provider:
        yield provider


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http_client:
        yield http_client


def basic_header(client_id: str, secret: str) -> str:
    """Build RFC 6749 §2.3.1 Basic credentials: each half form-encoded before base64."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def password_grant(fake: FakeOAuth2Provider, client: httpx.Client) -> httpx.Response:
    return client.post(
        fake.token_url,
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "alice-password",
            **CLIENT_BODY_AUTH,
        },
    )


def refresh_grant(
    fake: FakeOAuth2Provider, client: httpx.Client, refresh_token: str
) -> httpx.Response:
    return client.post(
        fake.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, **CLIENT_BODY_AUTH},
    )


def client_credentials(fake: FakeOAuth2Provider, client: httpx.Client) -> httpx.Response:
    return client.post(
        fake.token_url, data={"grant_type": "client_credentials", **CLIENT_BODY_AUTH}
    )


def jwt_claims(access_token: str) -> dict[str, object]:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def call_api(
    fake: FakeOAuth2Provider, client: httpx.Client, access_token: str, path: str = ""
) -> httpx.Response:
    return client.get(fake.api_url + path, headers={"Authorization": f"Bearer {access_token}"})


# -- token endpoint ---------------------------------------------------------------------------


def test_fake_issues_token_when_client_authenticates_in_body(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """Client credentials in the form body earn a bearer token and no refresh token."""
    response = client_credentials(fake, client)

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    assert "date" in response.headers
    assert fake.tokens_issued == 1


def test_fake_issues_token_when_basic_secret_has_reserved_characters(
    client: httpx.Client,
) -> None:
    """Basic credentials are form-decoded per RFC 6749 §2.3.1, so + / : % = and space survive."""
    secret = "s+e/c:r%e=t x"
    with FakeOAuth2Provider(clients={"my:client": secret}) as fake:
        response = client.post(
            fake.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_header("my:client", secret)},
        )

    assert response.status_code == 200


def test_fake_rejects_client_with_basic_challenge_when_secret_is_wrong(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A wrong Basic secret gets 401 invalid_client and a Basic challenge."""
    response = client.post(
        fake.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_header("client-id", "wrong")},
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == "Basic"


def test_fake_rejects_client_when_confidential_client_sends_no_secret(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A confidential client that sends only its id is not authenticated."""
    response = client.post(
        fake.token_url, data={"grant_type": "client_credentials", "client_id": "client-id"}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_fake_issues_refresh_token_when_password_grant_succeeds(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """The password grant returns an access token for the user and a refresh token."""
    response = password_grant(fake, client)

    assert response.status_code == 200
    assert isinstance(response.json()["refresh_token"], str)
    assert jwt_claims(response.json()["access_token"])["sub"] == "alice"


def test_fake_accepts_public_client_when_password_grant_has_no_secret(
    client: httpx.Client,
) -> None:
    """A public client (secret None) authenticates with its id alone."""
    with FakeOAuth2Provider(clients={"cli": None}) as fake:
        response = client.post(
            fake.token_url,
            data={
                "grant_type": "password",
                "client_id": "cli",
                "username": "alice",
                "password": "alice-password",
            },
        )

    assert response.status_code == 200


def test_fake_rejects_password_grant_when_password_is_wrong(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A wrong user password is invalid_grant, not invalid_client."""
    response = client.post(
        fake.token_url,
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "nope",
            **CLIENT_BODY_AUTH,
        },
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid user credentials",
    }


def test_fake_counts_stale_refresh_token_when_rotated_token_is_reused(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """With rotation, the spent refresh token is refused and counted as stale."""
    first = password_grant(fake, client).json()["refresh_token"]
    rotated = refresh_grant(fake, client, first)

    replay = refresh_grant(fake, client, first)

    assert rotated.json()["refresh_token"] != first
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert fake.stale_refresh_tokens == 1


def test_fake_accepts_old_refresh_token_when_rotation_is_off(client: httpx.Client) -> None:
    """Without rotation, the refresh response omits refresh_token and the old one still works."""
    with FakeOAuth2Provider(rotate_refresh_tokens=False) as fake:
        refresh_token = password_grant(fake, client).json()["refresh_token"]
        first = refresh_grant(fake, client, refresh_token)
        second = refresh_grant(fake, client, refresh_token)

    assert "refresh_token" not in first.json()
    assert second.status_code == 200


def test_fake_rejects_refresh_token_when_revoked(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """revoke_refresh_tokens() makes earlier refresh tokens stale."""
    refresh_token = fake.issue_refresh_token()
    fake.revoke_refresh_tokens()

    response = refresh_grant(fake, client, refresh_token)

    assert response.json()["error"] == "invalid_grant"
    assert fake.stale_refresh_tokens == 1


def test_fake_accepts_minted_refresh_token_when_no_token_call_was_made(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """issue_refresh_token() mints a token the refresh grant accepts for its subject."""
    refresh_token = fake.issue_refresh_token(username="bob")

    response = refresh_grant(fake, client, refresh_token)

    assert jwt_claims(response.json()["access_token"])["sub"] == "bob"
    assert fake.token_calls == 1


def test_fake_rejects_refresh_token_when_presented_by_another_client(
    client: httpx.Client,
) -> None:
    """A refresh token belongs to the client it was issued to; others get invalid_grant."""
    with FakeOAuth2Provider(clients={"client-id": "client-secret", "other": "x"}) as fake:
        refresh_token = fake.issue_refresh_token(client_id="other")
        response = refresh_grant(fake, client, refresh_token)

    assert response.json()["error"] == "invalid_grant"
    assert fake.stale_refresh_tokens == 0


def test_fake_rejects_grant_when_grant_type_is_unknown(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """An unknown grant_type is unsupported_grant_type."""
    response = client.post(fake.token_url, data={"grant_type": "magic", **CLIENT_BODY_AUTH})

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_fake_issues_token_when_body_is_json(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A JSON body is accepted and recorded like a form."""
    response = client.post(
        fake.token_url, json={"grant_type": "client_credentials", **CLIENT_BODY_AUTH}
    )

    assert response.status_code == 200
    recorded = fake.last_token_request
    assert recorded is not None
    assert recorded.content_type == "application/json"
    assert recorded.params["client_id"] == "client-id"


def test_fake_echoes_scope_when_scope_is_requested(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """The requested scope comes back in the token response."""
    response = client.post(
        fake.token_url,
        data={"grant_type": "client_credentials", "scope": "read write", **CLIENT_BODY_AUTH},
    )

    assert response.json()["scope"] == "read write"


def test_fake_records_last_token_request_when_basic_auth_is_used(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """last_token_request keeps the grant, lower-case headers and decoded params."""
    client.post(
        fake.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_header("client-id", "client-secret")},
    )

    recorded = fake.last_token_request
    assert recorded is not None
    assert recorded.grant_type == "client_credentials"
    assert recorded.headers["authorization"].startswith("Basic ")
    assert dict(recorded.params) == {"grant_type": "client_credentials"}
    assert "secret" not in repr(recorded)


def test_fake_counts_calls_by_grant_when_grants_are_mixed(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """token_calls_by_grant counts every POST per grant_type, refused ones included."""
    client_credentials(fake, client)
    password_grant(fake, client)
    refresh_grant(fake, client, "unknown")

    assert fake.token_calls_by_grant == {
        "client_credentials": 1,
        "password": 1,
        "refresh_token": 1,
    }
    assert fake.token_calls == 3
    assert fake.tokens_issued == 2


def test_fake_zeroes_counters_when_reset(fake: FakeOAuth2Provider, client: httpx.Client) -> None:
    """reset_counters() zeroes counters but keeps issued tokens valid."""
    access_token = client_credentials(fake, client).json()["access_token"]
    fake.reset_counters()

    response = call_api(fake, client, access_token)

    assert response.status_code == 200
    assert (fake.token_calls, fake.tokens_issued, fake.api_ok) == (0, 0, 1)
    assert fake.last_token_request is None


def test_fake_sends_expires_in_as_string_when_asked(client: httpx.Client) -> None:
    """expires_in_as_string=True sends the lifetime as a JSON string."""
    with FakeOAuth2Provider(expires_in_as_string=True, token_lifetime=300) as fake:
        response = client_credentials(fake, client)

    assert response.json()["expires_in"] == "300"


def test_fake_omits_expires_in_when_disabled(client: httpx.Client) -> None:
    """include_expires_in=False leaves only the JWT exp claim to tell the lifetime."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeOAuth2Provider(include_expires_in=False, clock=clock) as fake:
        body = client_credentials(fake, client).json()

    assert "expires_in" not in body
    assert jwt_claims(body["access_token"])["exp"] == clock.now + 3600


def test_fake_rounds_jwt_exp_up_when_lifetime_is_fractional(client: httpx.Client) -> None:
    """exp never claims an earlier expiry than the real one; expires_in stays exact."""
    clock = ManualClock(now=1000.25)
    with FakeOAuth2Provider(token_lifetime=10.5, clock=clock) as fake:
        body = client_credentials(fake, client).json()

    assert body["expires_in"] == 10.5
    assert jwt_claims(body["access_token"])["exp"] == 1011


def test_fake_sends_configured_token_type_when_set(client: httpx.Client) -> None:
    """token_type is sent as configured, lower case included."""
    with FakeOAuth2Provider(token_type="bearer") as fake:
        body = client_credentials(fake, client).json()

    assert body["token_type"] == "bearer"


def proof_with(nonce: str | None) -> str:
    """A DPoP proof as the fake reads it: unsigned, since it reads only the `nonce` claim."""
    claims: dict[str, object] = {"htm": "POST", "jti": "proof-1"}
    if nonce is not None:
        claims["nonce"] = nonce
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{payload}.signature"


def test_fake_demands_a_dpop_nonce_of_its_own_at_token_endpoint_and_api_when_asked(
    client: httpx.Client,
) -> None:
    """RFC 9449 §8 and §9: the authorization server and the resource server keep their own
    nonce; rotate_dpop_nonces() changes both."""
    with FakeOAuth2Provider(token_type="DPoP", dpop_nonces=True) as fake:

        def token_call(nonce: str | None) -> httpx.Response:
            data = {"grant_type": "client_credentials", **CLIENT_BODY_AUTH}
            return client.post(fake.token_url, data=data, headers={"DPoP": proof_with(nonce)})

        refused = token_call(None)
        token_nonce = refused.headers["DPoP-Nonce"]
        issued = token_call(token_nonce)
        access_token = issued.json()["access_token"]

        def api_call(nonce: str | None) -> httpx.Response:
            headers = {"Authorization": f"DPoP {access_token}", "DPoP": proof_with(nonce)}
            return client.get(fake.api_url, headers=headers)

        challenged = api_call(token_nonce)  # the token endpoint's nonce is not the API's
        api_nonce = challenged.headers["DPoP-Nonce"]
        served = api_call(api_nonce)
        fake.rotate_dpop_nonces()
        stale_token_call, stale_api_call = token_call(token_nonce), api_call(api_nonce)

    assert (refused.status_code, refused.json()["error"]) == (400, "use_dpop_nonce")
    assert (issued.status_code, issued.json()["token_type"]) == (200, "DPoP")
    assert challenged.status_code == 401
    assert challenged.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    assert api_nonce != token_nonce
    assert (served.status_code, served.headers["DPoP-Nonce"]) == (200, api_nonce)
    assert stale_token_call.status_code == 400
    assert stale_token_call.headers["DPoP-Nonce"] not in (token_nonce, api_nonce)
    assert stale_api_call.status_code == 401
    assert stale_api_call.headers["DPoP-Nonce"] not in (token_nonce, api_nonce)
    assert (fake.token_calls, fake.tokens_issued) == (3, 1)
    assert (fake.api_unauthorized, fake.api_ok) == (2, 1)


# -- injected failures, holds and delays ------------------------------------------------------


def test_fake_answers_injected_failures_in_order_when_queued(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """Queued failures answer the next calls in order, then tokens flow again."""
    fake.fail_token_requests(503, headers={"Retry-After": "1"})
    fake.fail_token_requests(429, times=2, body=b"slow down", headers={"Retry-After": "7"})

    responses = [client_credentials(fake, client) for _ in range(4)]

    assert [response.status_code for response in responses] == [503, 429, 429, 200]
    assert responses[0].json()["error"] == "temporarily_unavailable"
    assert responses[0].headers["retry-after"] == "1"
    assert responses[1].content == b"slow down"
    assert responses[2].headers["retry-after"] == "7"
    assert (fake.token_calls, fake.tokens_issued) == (4, 1)


def test_fake_fails_until_cleared_when_times_is_minus_one(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """times=-1 keeps failing until clear_failures()."""
    fake.fail_token_requests(500, times=-1)
    failed = [client_credentials(fake, client).status_code for _ in range(3)]
    fake.clear_failures()

    response = client_credentials(fake, client)

    assert failed == [500, 500, 500]
    assert response.status_code == 200


def test_fake_holds_token_requests_until_released_when_threads_race(
    fake: FakeOAuth2Provider,
) -> None:
    """Held requests wait together, so max_concurrent_token_calls sees all of them."""
    thread_count = 8
    start_together = threading.Barrier(thread_count)
    statuses: list[int] = []
    statuses_lock = threading.Lock()

    def fetch() -> None:
        with httpx.Client(timeout=10.0) as own_client:
            start_together.wait()
            status = client_credentials(fake, own_client).status_code
        with statuses_lock:
            statuses.append(status)

    threads = [threading.Thread(target=fetch) for _ in range(thread_count)]
    with fake.hold_token_requests():
        for thread in threads:
            thread.start()
        assert fake.wait_for_held_token_requests(thread_count)
        assert fake.tokens_issued == 0
    for thread in threads:
        thread.join(timeout=10.0)

    assert statuses == [200] * thread_count
    assert fake.max_concurrent_token_calls == thread_count


def test_fake_reports_timeout_when_too_few_requests_are_held(fake: FakeOAuth2Provider) -> None:
    """wait_for_held_token_requests returns False when the count is not reached in time."""
    with fake.hold_token_requests():
        assert not fake.wait_for_held_token_requests(1, timeout=0.01)


def test_fake_counts_one_concurrent_call_when_calls_are_sequential(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A client that waits for each answer never looks concurrent to the fake."""
    for _ in range(5):
        client_credentials(fake, client)

    assert fake.max_concurrent_token_calls == 1


def test_fake_releases_held_requests_when_stopped(client: httpx.Client) -> None:
    """stop() lets a held token request finish instead of hanging the test."""
    fake = FakeOAuth2Provider()
    fake.start()
    outcome: list[object] = []

    def fetch() -> None:
        try:
            outcome.append(client_credentials(fake, client).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch)
    with fake.hold_token_requests():
        thread.start()
        assert fake.wait_for_held_token_requests(1)
        fake.stop()
    thread.join(timeout=10.0)

    assert not thread.is_alive()
    assert len(outcome) == 1


def test_fake_stops_quietly_when_stopped_twice(fake: FakeOAuth2Provider) -> None:
    """stop() is idempotent, and a stopped fake refuses to start again."""
    fake.stop()
    fake.stop()

    with pytest.raises(RuntimeError, match="build a new one"):
        fake.start()


# -- protected API ----------------------------------------------------------------------------


def test_fake_api_answers_subject_when_token_is_valid(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A valid token with a lower-case scheme gets 200 and the request's shape back."""
    access_token = password_grant(fake, client).json()["access_token"]

    response = client.post(
        fake.api_url + "things",
        content=b"12345",
        headers={"Authorization": f"bearer {access_token}"},
    )

    assert response.json() == {
        "ok": True,
        "method": "POST",
        "path": "/api/things",
        "body_length": 5,
        "subject": "alice",
    }
    assert fake.api_ok == 1


def test_fake_api_rejects_request_when_token_is_missing(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """No token: 401 with an RFC 6750 challenge."""
    response = client.get(fake.api_url)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == {"error": "invalid_token"}
    assert fake.api_unauthorized == 1


def test_fake_api_measures_body_when_body_is_chunked(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """A generator body goes out chunked; the fake reads all of it."""
    access_token = client_credentials(fake, client).json()["access_token"]

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 24

    response = client.put(
        fake.api_url + "upload",
        content=chunks(),
        headers={"Authorization": f"Bearer {access_token}"},
    )

    assert response.json()["body_length"] == 1024


def test_fake_api_rejects_token_when_revoked(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """revoke_access_tokens() makes the API refuse tokens issued before it."""
    access_token = client_credentials(fake, client).json()["access_token"]
    fake.revoke_access_tokens()

    response = call_api(fake, client, access_token)

    assert response.status_code == 401


def test_fake_api_accepts_token_when_clock_is_just_before_expiry(client: httpx.Client) -> None:
    """A token is valid until its exact expiry instant."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeOAuth2Provider(token_lifetime=60, clock=clock) as fake:
        access_token = client_credentials(fake, client).json()["access_token"]
        clock.now += 59.999
        response = call_api(fake, client, access_token)

    assert response.status_code == 200


def test_fake_api_rejects_token_when_clock_passes_expiry(client: httpx.Client) -> None:
    """Once the injected clock reaches expiry, the API answers 401."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeOAuth2Provider(token_lifetime=60, clock=clock) as fake:
        access_token = client_credentials(fake, client).json()["access_token"]
        clock.now += 60
        response = call_api(fake, client, access_token)

    assert response.status_code == 401
    assert fake.api_unauthorized == 1


def test_fake_api_answers_403_when_path_is_forbidden(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """/api/forbidden refuses a valid token with insufficient_scope."""
    access_token = client_credentials(fake, client).json()["access_token"]

    response = call_api(fake, client, access_token, "forbidden")

    assert response.status_code == 403
    assert response.json() == {"error": "insufficient_scope"}
    assert fake.api_forbidden == 1


def test_fake_api_answers_401_when_path_is_always_401(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """/api/always-401 refuses even a valid token."""
    access_token = client_credentials(fake, client).json()["access_token"]

    response = call_api(fake, client, access_token, "always-401")

    assert response.status_code == 401
    assert fake.api_unauthorized == 1


def test_fake_redirects_to_target_when_redirect_is_requested(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """/redirect?to= answers 307 to the target without needing a token."""
    target = "http://elsewhere.example/echo-headers"

    response = client.get(fake.base_url + "/redirect", params={"to": target})

    assert response.status_code == 307
    assert response.headers["location"] == target


def test_fake_api_redirects_when_token_is_valid(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """/api/redirect?to= redirects only behind a valid token."""
    access_token = client_credentials(fake, client).json()["access_token"]
    target = fake.base_url + "/echo-headers"

    response = client.get(
        fake.api_url + "redirect",
        params={"to": target},
        headers={"Authorization": f"Bearer {access_token}"},
    )

    assert response.status_code == 307
    assert response.headers["location"] == target


def test_fake_echoes_headers_when_redirect_is_followed(
    fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """/echo-headers shows what arrived after a redirect, with lower-case names."""
    response = client.get(
        fake.base_url + "/redirect",
        params={"to": fake.base_url + "/echo-headers"},
        headers={"X-Probe": "yes"},
        follow_redirects=True,
    )

    assert response.status_code == 200
    assert response.json()["x-probe"] == "yes"


# -- packaging --------------------------------------------------------------------------------


def test_fake_exports_match_all_when_package_is_imported() -> None:
    """renewauth.testing exports exactly its public names."""
    public = {
        name
        for name, value in vars(renewauth.testing).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert public == set(renewauth.testing.__all__)
    assert renewauth.testing.__all__ == sorted(renewauth.testing.__all__)


def test_fake_fixture_yields_started_provider_when_plugin_is_loaded(
    oauth2_fake: FakeOAuth2Provider, client: httpx.Client
) -> None:
    """The oauth2_fake fixture from the pytest plugin is running with defaults."""
    response = client_credentials(oauth2_fake, client)

    assert response.status_code == 200


# -- docs/testing.md states what the fakes really do ----------------------------------------

TESTING_PAGE = pathlib.Path(__file__).parent.parent / "docs" / "testing.md"
DOCUMENTED_FAKES = [
    renewauth.testing.FakeOAuth2Provider,
    renewauth.testing.FakeKeycloak,
    renewauth.testing.FakeOrderCloud,
    renewauth.testing.FakeShopware,
    renewauth.testing.FakeVendorlink,
    renewauth.testing.FakeVanMarcke,
]
COMMON_SECTION = "Every fake"


def _page_sections() -> dict[str, str]:
    """The page's sections by heading (## or ###), backticks dropped."""
    parts = re.split(r"^#{2,3} (.+)$", TESTING_PAGE.read_text(), flags=re.MULTILINE)
    return {
        heading.strip("`"): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def _settings_table(section: str) -> dict[str, str]:
    """The rows of a section's "| setting | default |" table: name → the default as written."""
    lines = section.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("| setting |"))
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \| `([^`]+)` \|", line)
        assert match, f"a row the test cannot read: {line}"
        rows[match[1]] = match[2]
    return rows


def _as_written(value: object) -> object:
    """A default as the page writes it: mappings as dicts, sets of names as sets."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, frozenset):
        return set(value)
    if callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def _read(written: str) -> object:
    try:
        return ast.literal_eval(written)
    except ValueError:
        return written  # a callable, by its dotted name


def _assert_call_matches(fake_class: type, name: str, arguments: str) -> None:
    """A call the page shows, `name(arguments)`: a method of the fake, with its defaults."""
    parameters = inspect.signature(getattr(fake_class, name)).parameters
    call = ast.parse(f"f({arguments})", mode="eval").body
    assert isinstance(call, ast.Call)
    for argument in call.args:
        assert isinstance(argument, ast.Name), (name, arguments)
        assert argument.id in parameters, (name, argument.id)
    for keyword in call.keywords:
        assert keyword.arg is not None
        assert ast.literal_eval(keyword.value) == parameters[keyword.arg].default, (name, arguments)


@pytest.mark.parametrize("fake_class", DOCUMENTED_FAKES, ids=lambda cls: cls.__name__)
def test_testing_page_states_every_constructor_default_of_each_fake(fake_class: type) -> None:
    """Each fake's table, with the settings every fake takes, is its constructor's signature."""
    sections = _page_sections()
    documented = {
        **_settings_table(sections[COMMON_SECTION]),
        **_settings_table(sections[fake_class.__name__]),
    }
    parameters = inspect.signature(fake_class).parameters

    assert documented.keys() == parameters.keys()
    for name, written in documented.items():
        assert _read(written) == _as_written(parameters[name].default), name


@pytest.mark.parametrize("fake_class", DOCUMENTED_FAKES, ids=lambda cls: cls.__name__)
def test_testing_page_states_each_fakes_urls_and_method_defaults(fake_class: type) -> None:
    """The URLs a default fake serves and the defaults of the methods the page shows."""
    section = _page_sections()[fake_class.__name__]
    urls = re.findall(r"`(\w+_url)`(?: \(also `(\w+_url)`\))?\s+=\s+`\{base_url\}([^`]*)`", section)
    calls = re.findall(r"`(\w+)\(([^`]*)\)`", section)
    assert urls
    fake = fake_class()
    try:
        for name, other_name, path in urls:
            for attribute in filter(None, (name, other_name)):
                assert getattr(fake, attribute) == fake.base_url + path, attribute
    finally:
        fake.stop()
    for name, arguments in calls:
        _assert_call_matches(fake_class, name, arguments)


def test_testing_page_names_only_counters_and_controls_every_fake_has() -> None:
    """The shared tables name attributes and method defaults that every fake really has."""
    section = _page_sections()[COMMON_SECTION]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    names = [name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)]
    calls = re.findall(r"^\| `(\w+)\(([^`]*)\)`", section, flags=re.MULTILINE)
    assert "api_unauthorized" in names
    assert calls
    for fake_class in DOCUMENTED_FAKES:
        for name in names:
            if name != "clock":  # a setting, checked above (token_delay is an attribute too)
                assert hasattr(fake_class, name), (fake_class.__name__, name)
        for name, arguments in calls:
            _assert_call_matches(fake_class, name, arguments)


def test_fixtures_build_each_fake_with_its_defaults() -> None:
    """The page promises each fixture is its fake with the defaults in the tables."""
    from renewauth.testing import pytest_plugin

    exported = {name for name in renewauth.testing.__all__ if name.startswith("Fake")}
    assert {fake_class.__name__ for fake_class in DOCUMENTED_FAKES} == exported
    source = inspect.getsource(pytest_plugin)
    for fake_class in DOCUMENTED_FAKES:
        assert f"with {fake_class.__name__}() as fake:" in source
