"""Tests of renewauth.testing's vendor fakes, driven with plain httpx: each speaks its dialect."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from renewauth.testing import (
    FakeKeycloak,
    FakeOrderCloud,
    FakeShopware,
    FakeVanMarcke,
    FakeVendorlink,
)

from .helpers import ManualClock

AnyFake = FakeKeycloak | FakeOrderCloud | FakeShopware | FakeVendorlink | FakeVanMarcke

KEYCLOAK_CLIENT = {"client_id": "portal-client", "client_secret": "portal-secret"}
ORDERCLOUD_CLIENT = {"client_id": "oc-client", "client_secret": "oc-secret"}
VANMARCKE_CLIENT = {"client_id": "vm-client", "client_secret": "vm-secret"}
API_KEY = {"x-api-key": "test-api-key"}
SHOPWARE_PASSWORD = "shopware-password"
VENDORLINK_PASSWORD = "demo-password"
SERVICE_USER = "API-APP1-P123456"
SERVICE_PASSWORD = "service-password"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http_client:
        yield http_client


def jwt_part(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_header(client_id: str, secret: str) -> str:
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


# -- how each fake hands out a token, for the tests all fakes share ----------------------------


def keycloak_login(fake: FakeKeycloak, client: httpx.Client, **extra: str) -> httpx.Response:
    data = {"grant_type": "password", "username": "alice", "password": "alice-password"}
    return client.post(fake.token_url, data={**data, **KEYCLOAK_CLIENT, **extra})


def keycloak_refresh(fake: FakeKeycloak, client: httpx.Client, token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, **KEYCLOAK_CLIENT}
    return client.post(fake.token_url, data=data)


def ordercloud_login(fake: FakeOrderCloud, client: httpx.Client, **extra: str) -> httpx.Response:
    data = {"grant_type": "password", "username": "buyer01", "password": "buyer-password"}
    return client.post(fake.token_url, data={**data, **ORDERCLOUD_CLIENT, **extra})


def shopware_login(
    fake: FakeShopware, client: httpx.Client, password: str = SHOPWARE_PASSWORD
) -> httpx.Response:
    body = {"grant_type": "password", "client_id": "administration", "scopes": "write"}
    return client.post(fake.token_url, json={**body, "username": "admin", "password": password})


def shopware_refresh(fake: FakeShopware, client: httpx.Client, token: str) -> httpx.Response:
    body = {"grant_type": "refresh_token", "client_id": "administration", "refresh_token": token}
    return client.post(fake.token_url, json=body)


def vendorlink_login(
    client: httpx.Client, base_url: str, password: str = VENDORLINK_PASSWORD
) -> httpx.Response:
    return client.post(base_url + "/API/auth/login", json={"u": "demo", "p": password})


def vendorlink_extend(
    client: httpx.Client, base_url: str, access_token: str, body: dict[str, str]
) -> httpx.Response:
    return client.post(base_url + "/API/auth/extendtoken", json=body, headers=bearer(access_token))


def vanmarcke_login(
    fake: FakeVanMarcke,
    client: httpx.Client,
    username: str = SERVICE_USER,
    password: str = SERVICE_PASSWORD,
) -> httpx.Response:
    data = {"grant_type": "password", "username": username, "password": password}
    return client.post(fake.token_url, data={**data, **VANMARCKE_CLIENT}, headers=API_KEY)


def fetch_token(fake: AnyFake, client: httpx.Client) -> httpx.Response:
    if isinstance(fake, FakeKeycloak):
        return keycloak_login(fake, client)
    if isinstance(fake, FakeOrderCloud):
        return ordercloud_login(fake, client)
    if isinstance(fake, FakeShopware):
        return shopware_login(fake, client)
    if isinstance(fake, FakeVendorlink):
        return vendorlink_login(client, fake.base_url)
    return vanmarcke_login(fake, client)


def access_token_of(response: httpx.Response) -> str:
    body = response.json()
    token = body.get("access_token", body.get("accessToken"))
    assert isinstance(token, str)
    return token


FAKES: dict[str, type[AnyFake]] = {
    "keycloak": FakeKeycloak,
    "ordercloud": FakeOrderCloud,
    "shopware": FakeShopware,
    "vendorlink": FakeVendorlink,
    "vanmarcke": FakeVanMarcke,
}


@pytest.fixture(params=sorted(FAKES))
def any_fake(request: pytest.FixtureRequest) -> Iterator[AnyFake]:
    with FAKES[request.param]() as fake:
        yield fake


# -- what every fake shares ---------------------------------------------------------------------


def test_fakes_count_token_and_api_calls_when_token_is_used(
    any_fake: AnyFake, client: httpx.Client
) -> None:
    """Every fake counts token calls, issued tokens and API answers the same way."""
    token = access_token_of(fetch_token(any_fake, client))
    headers = {**bearer(token), **API_KEY}

    statuses = [
        client.get(any_fake.api_url + path, headers=headers).status_code
        for path in ("items", "forbidden", "always-401")
    ]

    assert statuses == [200, 403, 401]
    assert (any_fake.token_calls, any_fake.tokens_issued) == (1, 1)
    assert (any_fake.api_ok, any_fake.api_forbidden, any_fake.api_unauthorized) == (1, 1, 1)
    assert any_fake.max_concurrent_token_calls == 1
    assert any_fake.last_token_request is not None


def test_fakes_reject_access_token_when_revoked(any_fake: AnyFake, client: httpx.Client) -> None:
    """revoke_access_tokens() makes every fake's API answer 401."""
    token = access_token_of(fetch_token(any_fake, client))
    any_fake.revoke_access_tokens()

    response = client.get(any_fake.api_url + "items", headers={**bearer(token), **API_KEY})

    assert response.status_code == 401


def test_fakes_answer_injected_failure_when_queued(any_fake: AnyFake, client: httpx.Client) -> None:
    """fail_token_requests() works on every fake, then tokens flow again; reset zeroes counts."""
    any_fake.fail_token_requests(503, headers={"Retry-After": "2"})

    failed = fetch_token(any_fake, client)
    succeeded = fetch_token(any_fake, client)
    any_fake.reset_counters()

    assert (failed.status_code, failed.headers["retry-after"]) == (503, "2")
    assert succeeded.status_code == 200
    assert (any_fake.token_calls, any_fake.token_calls_by_grant) == (0, {})


def test_fakes_hold_token_requests_until_released_when_threads_race(any_fake: AnyFake) -> None:
    """hold_token_requests() keeps every fake's token calls open until the block exits."""
    statuses: list[int] = []

    def fetch() -> None:
        with httpx.Client(timeout=10.0) as own_client:
            statuses.append(fetch_token(any_fake, own_client).status_code)

    with any_fake.hold_token_requests():
        threads = [threading.Thread(target=fetch) for _ in range(3)]
        for thread in threads:
            thread.start()
        assert any_fake.wait_for_held_token_requests(3)
    for thread in threads:
        thread.join()

    assert statuses == [200, 200, 200]
    assert any_fake.max_concurrent_token_calls == 3


@pytest.mark.parametrize("name", sorted(FAKES))
def test_fakes_send_date_by_clock_when_clock_is_injected(name: str, client: httpx.Client) -> None:
    """The Date header follows the fake's clock, so a client's skew correction agrees with it."""
    clock = ManualClock(now=1_600_000_000.0)
    with FAKES[name](clock=clock) as fake:
        response = fetch_token(fake, client)

    assert response.headers["date"] == "Sun, 13 Sep 2020 12:26:40 GMT"


@pytest.mark.parametrize("name", sorted(FAKES))
def test_fakes_fixture_yields_started_fake_when_plugin_is_loaded(
    name: str, request: pytest.FixtureRequest, client: httpx.Client
) -> None:
    """Each vendor fixture from the pytest plugin is a running fake with defaults."""
    fake = request.getfixturevalue(f"{name}_fake")

    assert isinstance(fake, FAKES[name])
    assert fetch_token(fake, client).status_code == 200


# -- Keycloak ------------------------------------------------------------------------------------


def test_keycloak_answers_keycloak_fields_when_password_grant_succeeds(
    client: httpx.Client,
) -> None:
    """A password grant answers Keycloak's token response, with a JWT carrying exp rounded up."""
    clock = ManualClock(now=1000.5)
    with FakeKeycloak(clock=clock) as fake:
        response = keycloak_login(fake, client)

    body = response.json()
    assert response.status_code == 200
    assert body["expires_in"] == 300
    assert body["refresh_expires_in"] == 1800
    assert (body["token_type"], body["not-before-policy"]) == ("Bearer", 0)
    assert body["session_state"]
    assert body["scope"] == "profile email"
    claims = jwt_part(body["access_token"], 1)
    assert (claims["sub"], claims["exp"], claims["iat"]) == ("alice", 1301, 1000)
    assert "jti" in claims


def test_keycloak_omits_refresh_token_when_client_credentials_is_used(
    client: httpx.Client,
) -> None:
    """client_credentials has no refresh token unless the client enables it."""
    data = {"grant_type": "client_credentials", **KEYCLOAK_CLIENT}
    with FakeKeycloak() as plain, FakeKeycloak(refresh_on_client_credentials=True) as enabled:
        without = client.post(plain.token_url, data=data).json()
        with_refresh = client.post(enabled.token_url, data=data).json()

    assert "refresh_token" not in without
    assert isinstance(with_refresh["refresh_token"], str)


def test_keycloak_issues_token_when_client_uses_basic_auth(client: httpx.Client) -> None:
    """HTTP Basic client credentials are form-decoded per RFC 6749 §2.3.1."""
    with FakeKeycloak(clients={"portal:client": "s+c r%t"}) as fake:
        response = client.post(
            fake.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_header("portal:client", "s+c r%t")},
        )

    assert response.status_code == 200


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_keycloak_answers_unauthorized_client_when_secret_is_wrong_or_missing(
    keycloak_fake: FakeKeycloak, client: httpx.Client, secret: str | None
) -> None:
    """A confidential client without its secret gets Keycloak's 401 unauthorized_client."""
    data = {"grant_type": "client_credentials", "client_id": "portal-client"}
    if secret is not None:
        data["client_secret"] = secret

    response = client.post(keycloak_fake.token_url, data=data)

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


def test_keycloak_answers_invalid_client_when_client_id_is_missing(
    keycloak_fake: FakeKeycloak, client: httpx.Client
) -> None:
    """No client_id at all is 400 invalid_client."""
    response = client.post(keycloak_fake.token_url, data={"grant_type": "client_credentials"})

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Missing client_id parameter",
    }


def test_keycloak_answers_401_invalid_grant_when_user_password_is_wrong(
    keycloak_fake: FakeKeycloak, client: httpx.Client
) -> None:
    """Wrong user credentials are 401 invalid_grant, as Keycloak answers them."""
    response = keycloak_login(keycloak_fake, client, password="nope")

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid user credentials",
    }


def test_keycloak_answers_zero_refresh_expiry_when_offline_token_is_refreshed(
    keycloak_fake: FakeKeycloak, client: httpx.Client
) -> None:
    """A technical user's offline token refreshes to refresh_expires_in 0 and a new token."""
    refresh_token = keycloak_fake.issue_refresh_token()

    body = keycloak_refresh(keycloak_fake, client, refresh_token).json()

    assert body["refresh_expires_in"] == 0
    assert body["refresh_token"] != refresh_token
    assert "offline_access" in body["scope"]
    assert jwt_part(refresh_token, 1)["typ"] == "Offline"
    assert "exp" not in jwt_part(refresh_token, 1)


def test_keycloak_accepts_old_refresh_token_when_rotation_is_off(
    keycloak_fake: FakeKeycloak, client: httpx.Client
) -> None:
    """Without rotation a refresh answers a new refresh token and the old one still works."""
    refresh_token = keycloak_fake.issue_refresh_token()
    first = keycloak_refresh(keycloak_fake, client, refresh_token)

    second = keycloak_refresh(keycloak_fake, client, refresh_token)

    assert first.json()["refresh_token"] != refresh_token
    assert second.status_code == 200
    assert keycloak_fake.stale_refresh_tokens == 0


def test_keycloak_answers_stale_token_when_rotated_token_is_reused(client: httpx.Client) -> None:
    """With "Revoke Refresh Token" on, reuse is invalid_grant "Stale token"; the new one works."""
    with FakeKeycloak(rotate_refresh_tokens=True) as fake:
        refresh_token = fake.issue_refresh_token()
        rotated = keycloak_refresh(fake, client, refresh_token).json()["refresh_token"]
        replay = keycloak_refresh(fake, client, refresh_token)
        newer = keycloak_refresh(fake, client, rotated)

        assert replay.status_code == 400
        assert replay.json() == {"error": "invalid_grant", "error_description": "Stale token"}
        assert newer.status_code == 200
        assert fake.stale_refresh_tokens == 1


@pytest.mark.parametrize("revoke", [False, True])
def test_keycloak_answers_token_not_active_when_refresh_token_is_unknown_or_revoked(
    keycloak_fake: FakeKeycloak, client: httpx.Client, revoke: bool
) -> None:
    """An unknown or revoked refresh token is 400 invalid_grant "Token is not active"."""
    refresh_token = keycloak_fake.issue_refresh_token() if revoke else "unknown"
    keycloak_fake.revoke_refresh_tokens()

    response = keycloak_refresh(keycloak_fake, client, refresh_token)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Token is not active",
    }


def test_keycloak_answers_session_not_active_when_session_ended(
    keycloak_fake: FakeKeycloak, client: httpx.Client
) -> None:
    """end_session() makes refresh tokens fail with "Session not active"; new logins work."""
    refresh_token = keycloak_fake.issue_refresh_token()
    keycloak_fake.end_session()

    response = keycloak_refresh(keycloak_fake, client, refresh_token)

    assert response.status_code == 400
    assert response.json()["error_description"] == "Session not active"
    assert keycloak_login(keycloak_fake, client).status_code == 200


@pytest.mark.parametrize("legacy", [False, True])
def test_keycloak_answers_html_404_when_token_path_has_other_prefix(
    client: httpx.Client, legacy: bool
) -> None:
    """The token path lives under /auth only for legacy servers; the other prefix is 404 HTML."""
    with FakeKeycloak(realm="acme", legacy_auth_prefix=legacy) as fake:
        other_prefix = "" if legacy else "/auth"
        other = client.post(
            f"{fake.base_url}{other_prefix}/realms/acme/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", **KEYCLOAK_CLIENT},
        )
        served = client.post(
            fake.token_url, data={"grant_type": "client_credentials", **KEYCLOAK_CLIENT}
        )

        assert fake.server_url == fake.base_url + ("/auth" if legacy else "")
        assert fake.token_url == f"{fake.server_url}/realms/acme/protocol/openid-connect/token"
        assert other.status_code == 404
        assert other.headers["content-type"].startswith("text/html")
        assert served.status_code == 200
        assert fake.token_calls == 1


def test_keycloak_api_rejects_token_when_clock_passes_expiry(client: httpx.Client) -> None:
    """The resource server accepts the realm's token until expires_in has passed."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeKeycloak(clock=clock) as fake:
        token = access_token_of(keycloak_login(fake, client))
        before = client.get(fake.api_url + "items", headers=bearer(token))
        clock.now += 300
        after = client.get(fake.api_url + "items", headers=bearer(token))

    assert (before.status_code, after.status_code) == (200, 401)


# -- OrderCloud ----------------------------------------------------------------------------------


def test_ordercloud_answers_lowercase_bearer_when_password_grant_succeeds(
    ordercloud_fake: FakeOrderCloud, client: httpx.Client
) -> None:
    """OrderCloud's token response: lower-case bearer, scope echoed, no refresh by default."""
    response = ordercloud_login(ordercloud_fake, client, scope="Shopper MeAdmin")

    body = response.json()
    assert response.status_code == 200
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "bearer",
        600,
        "Shopper MeAdmin",
    )
    assert "refresh_token" not in body
    assert jwt_part(body["access_token"], 1)["sub"] == "buyer01"


def test_ordercloud_issues_context_user_token_when_client_credentials_has_secret(
    ordercloud_fake: FakeOrderCloud, client: httpx.Client
) -> None:
    """client_credentials with the secret acts as the default context user."""
    data = {"grant_type": "client_credentials", **ORDERCLOUD_CLIENT}

    body = client.post(ordercloud_fake.token_url, data=data).json()

    assert jwt_part(body["access_token"], 1)["sub"] == "context-user"
    assert ordercloud_fake.anonymous_tokens == 0


def test_ordercloud_issues_anonymous_token_when_only_client_id_is_sent(
    client: httpx.Client,
) -> None:
    """client_credentials with client_id only is an anonymous token, for anonymous clients."""
    clients = {"oc-client": "oc-secret", "closed": None}
    with FakeOrderCloud(clients=clients, anonymous_clients={"oc-client"}) as fake:
        allowed = client.post(
            fake.token_url, data={"grant_type": "client_credentials", "client_id": "oc-client"}
        )
        refused = client.post(
            fake.token_url, data={"grant_type": "client_credentials", "client_id": "closed"}
        )

        assert allowed.status_code == 200
        assert "orderid" in jwt_part(allowed.json()["access_token"], 1)
        assert refused.status_code == 400
        assert fake.anonymous_tokens == 1


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_ordercloud_answers_invalid_client_secret_when_secret_is_wrong_or_missing(
    ordercloud_fake: FakeOrderCloud, client: httpx.Client, secret: str | None
) -> None:
    """A client with a secret must send it on the password grant too."""
    data = {"grant_type": "password", "client_id": "oc-client", "username": "buyer01"}
    data["password"] = "buyer-password"
    if secret is not None:
        data["client_secret"] = secret

    response = client.post(ordercloud_fake.token_url, data=data)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "invalid client secret",
        "Errors": [{"ErrorCode": "Auth.InvalidClientSecret", "Message": "invalid client secret"}],
    }


def test_ordercloud_requires_secret_when_refresh_token_is_used(client: httpx.Client) -> None:
    """With refresh tokens on, the refresh grant also needs the client secret."""
    with FakeOrderCloud(refresh_tokens=True) as fake:
        refresh_token = ordercloud_login(fake, client).json()["refresh_token"]
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        without = client.post(fake.token_url, data={**data, "client_id": "oc-client"})
        with_secret = client.post(fake.token_url, data={**data, **ORDERCLOUD_CLIENT})

    assert without.status_code == 400
    assert without.json()["Errors"][0]["ErrorCode"] == "Auth.InvalidClientSecret"
    assert with_secret.status_code == 200


def test_ordercloud_counts_stale_refresh_token_when_rotated_token_is_reused(
    client: httpx.Client,
) -> None:
    """With rotation, a used refresh token is refused and counted as stale."""
    with FakeOrderCloud(refresh_tokens=True, rotate_refresh_tokens=True) as fake:
        refresh_token = ordercloud_login(fake, client).json()["refresh_token"]
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **ORDERCLOUD_CLIENT}
        rotated = client.post(fake.token_url, data=data)
        replay = client.post(fake.token_url, data=data)

        assert rotated.json()["refresh_token"] != refresh_token
        assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
        assert fake.stale_refresh_tokens == 1


def test_ordercloud_answers_incorrect_password_when_password_is_wrong(
    ordercloud_fake: FakeOrderCloud, client: httpx.Client
) -> None:
    """A wrong password is 400 invalid_grant with Auth.IncorrectPassword."""
    response = ordercloud_login(ordercloud_fake, client, password="nope")

    body = response.json()
    assert response.status_code == 400
    assert (body["error"], body["error_description"]) == (
        "invalid_grant",
        "Invalid username or password",
    )
    assert body["Errors"][0]["ErrorCode"] == "Auth.IncorrectPassword"
    assert ordercloud_fake.failed_logins == 1


def test_ordercloud_locks_user_out_when_failures_reach_limit(client: httpx.Client) -> None:
    """After lockout_after failures even the right password is LockedOut until unlock()."""
    with FakeOrderCloud(lockout_after=3) as fake:
        for _ in range(3):
            ordercloud_login(fake, client, password="nope")
        locked = ordercloud_login(fake, client)
        fake.unlock("buyer01")
        unlocked = ordercloud_login(fake, client)

        assert locked.status_code == 400
        assert locked.json()["Errors"][0]["ErrorCode"] == "PasswordReset.LockedOut"
        assert unlocked.status_code == 200
        assert fake.failed_logins == 4


def test_ordercloud_api_answers_errors_list_when_token_is_invalid_or_lacks_role(
    ordercloud_fake: FakeOrderCloud, client: httpx.Client
) -> None:
    """The API answers 401 InvalidToken and 403 InsufficientRoles with an Errors list."""
    token = access_token_of(ordercloud_login(ordercloud_fake, client))

    invalid = client.get(ordercloud_fake.api_url + "me", headers=bearer("not-a-token"))
    forbidden = client.get(ordercloud_fake.api_url + "forbidden", headers=bearer(token))

    assert invalid.status_code == 401
    assert invalid.json() == {
        "Errors": [{"ErrorCode": "InvalidToken", "Message": "Access token is invalid or expired."}]
    }
    assert forbidden.status_code == 403
    assert forbidden.json()["Errors"][0]["ErrorCode"] == "InsufficientRoles"


# -- Shopware ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_shopware_issues_token_without_refresh_when_integration_authenticates(
    shopware_fake: FakeShopware, client: httpx.Client, encoding: str
) -> None:
    """An integration's access key and secret earn a token and no refresh token."""
    body = {
        "grant_type": "client_credentials",
        "client_id": "SWIAKEY01",
        "client_secret": "integration-secret",
    }
    if encoding == "json":
        response = client.post(shopware_fake.token_url, json=body)
    else:
        response = client.post(shopware_fake.token_url, data=body)

    assert response.status_code == 200
    assert (response.json()["token_type"], response.json()["expires_in"]) == ("Bearer", 600)
    assert "refresh_token" not in response.json()


def test_shopware_answers_code_4_when_integration_secret_is_wrong(
    shopware_fake: FakeShopware, client: httpx.Client
) -> None:
    """Client authentication failure is code "4" with status 401."""
    body = {"grant_type": "client_credentials", "client_id": "SWIAKEY01", "client_secret": "x"}

    response = client.post(shopware_fake.token_url, json=body)

    assert response.status_code == 401
    error = response.json()["errors"][0]
    assert (error["code"], error["status"]) == ("4", "401")


def test_shopware_answers_code_6_when_user_password_is_wrong(
    shopware_fake: FakeShopware, client: httpx.Client
) -> None:
    """Wrong admin credentials are code "6" with status 400."""
    response = shopware_login(shopware_fake, client, password="nope")

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["code"], error["status"]) == ("6", "400")


@pytest.mark.parametrize(("league_version", "status"), [(8, 401), (9, 400)])
def test_shopware_answers_code_8_with_league_status_when_refresh_token_is_reused(
    client: httpx.Client, league_version: int, status: int
) -> None:
    """Refresh tokens always rotate; reuse is code "8", 401 on league 8 and 400 on league 9."""
    with FakeShopware(league_version=league_version) as fake:
        refresh_token = shopware_login(fake, client).json()["refresh_token"]
        rotated = shopware_refresh(fake, client, refresh_token)
        replay = shopware_refresh(fake, client, refresh_token)

        assert rotated.status_code == 200
        assert rotated.json()["refresh_token"] != refresh_token
        assert replay.status_code == status
        error = replay.json()["errors"][0]
        assert (error["code"], error["status"]) == ("8", str(status))
        assert fake.stale_refresh_tokens == 1


def test_shopware_throttles_username_until_clock_passes_when_logins_keep_failing(
    client: httpx.Client,
) -> None:
    """After throttle_after failures, logins answer 429 with the seconds left, by the clock."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeShopware(throttle_after=3, throttle_seconds=30, clock=clock) as fake:
        failures = [shopware_login(fake, client, password="nope").status_code for _ in range(3)]
        throttled = shopware_login(fake, client)
        clock.now += 10.5
        later = shopware_login(fake, client)
        clock.now += 20
        released = shopware_login(fake, client)

        assert failures == [400, 400, 400]
        assert throttled.status_code == 429
        assert throttled.json() == {
            "errors": [
                {
                    "code": "FRAMEWORK__AUTH_THROTTLED",
                    "status": "429",
                    "title": "Too Many Requests",
                    "detail": "Auth throttled for 30 seconds.",
                    "meta": {"parameters": {"seconds": 30}},
                }
            ]
        }
        assert later.json()["errors"][0]["meta"]["parameters"]["seconds"] == 20
        assert released.status_code == 200
        assert fake.throttled == 2


def test_shopware_api_answers_code_9_when_token_is_expired(client: httpx.Client) -> None:
    """An expired token gets 401 code "9" with league's title and Shopware's detail."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeShopware(clock=clock) as fake:
        token = access_token_of(shopware_login(fake, client))
        clock.now += 600
        response = client.get(fake.api_url + "product", headers=bearer(token))

    assert response.status_code == 401
    error = response.json()["errors"][0]
    assert error["code"] == "9"
    assert error["title"] == "The resource owner or authorization server denied the request."
    assert error["detail"] == "Access token could not be verified."


def test_shopware_api_answers_missing_privilege_when_path_is_forbidden(
    shopware_fake: FakeShopware, client: httpx.Client
) -> None:
    """403 means a missing privilege, never an expired token."""
    token = access_token_of(shopware_login(shopware_fake, client))

    response = client.get(shopware_fake.api_url + "forbidden", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "FRAMEWORK__MISSING_PRIVILEGE_ERROR"


def test_shopware_revokes_user_tokens_when_password_changes(
    shopware_fake: FakeShopware, client: httpx.Client
) -> None:
    """change_password() kills the user's access and refresh tokens; the new password works."""
    first = shopware_login(shopware_fake, client).json()
    shopware_fake.change_password("admin", "new-password")

    api = client.get(shopware_fake.api_url + "product", headers=bearer(first["access_token"]))
    refresh = shopware_refresh(shopware_fake, client, first["refresh_token"])
    old = shopware_login(shopware_fake, client)
    new = shopware_login(shopware_fake, client, password="new-password")

    assert (api.status_code, refresh.json()["errors"][0]["code"]) == (401, "8")
    assert (old.status_code, new.status_code) == (400, 200)


# -- Vendorlink ----------------------------------------------------------------------------------


def test_vendorlink_answers_session_with_hs256_jwt_when_login_succeeds(
    client: httpx.Client,
) -> None:
    """Login answers the vendor's fields, no expires_in, and a JWT whose exp is the lifetime."""
    clock = ManualClock(now=1000.5)
    with FakeVendorlink(clock=clock) as fake:
        response = vendorlink_login(client, fake.base_url)
        host = fake.base_url.removeprefix("http://")

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"userId", "displayName", "accessToken", "renewalToken", "hostname"}
    assert (body["userId"], body["displayName"], body["hostname"]) == (
        9999999,
        "Demo User",
        host,
    )
    assert jwt_part(body["accessToken"], 0) == {"typ": "JWT", "alg": "HS256"}
    claims = jwt_part(body["accessToken"], 1)
    assert set(claims) == {"sid", "iss", "exp", "nbf"}
    assert (claims["exp"], claims["nbf"]) == (4601, 700)


@pytest.mark.parametrize(("bad_login", "status"), [("empty", 200), ("401", 401)])
def test_vendorlink_answers_empty_body_when_credentials_are_wrong(
    client: httpx.Client, bad_login: str, status: int
) -> None:
    """Bad credentials get an empty body, with 200 or 401 as configured."""
    with FakeVendorlink(bad_login="empty" if bad_login == "empty" else "401") as fake:
        response = vendorlink_login(client, fake.base_url, password="nope")

    assert (response.status_code, response.content) == (status, b"")


def test_vendorlink_extends_session_when_access_token_has_expired(client: httpx.Client) -> None:
    """ExtendToken takes an expired access token and answers a new, working pair."""
    clock = ManualClock(now=1_700_000_000.0)
    with FakeVendorlink(clock=clock) as fake:
        login = vendorlink_login(client, fake.base_url).json()
        clock.now += 3600
        expired = client.get(fake.api_url + "tenders", headers=bearer(login["accessToken"]))
        extended = vendorlink_extend(
            client, fake.base_url, login["accessToken"], {"rToken": login["renewalToken"]}
        )
        api = client.get(fake.api_url + "tenders", headers=bearer(extended.json()["accessToken"]))

        assert expired.status_code == 401
        assert extended.status_code == 200
        assert set(extended.json()) == {"userId", "displayName", "accessToken", "renewalToken"}
        assert extended.json()["renewalToken"] != login["renewalToken"]
        assert api.status_code == 200
        assert fake.token_calls_by_grant == {"login": 1, "extendtoken": 1}
        assert fake.extend_calls == 1


def test_vendorlink_refuses_renewal_token_when_it_is_reused(
    vendorlink_fake: FakeVendorlink, client: httpx.Client
) -> None:
    """Each renewal token works once; reuse is 401 with an empty body and counts as stale."""
    login = vendorlink_login(client, vendorlink_fake.base_url).json()
    body = {"rToken": login["renewalToken"]}
    vendorlink_extend(client, vendorlink_fake.base_url, login["accessToken"], body)

    replay = vendorlink_extend(client, vendorlink_fake.base_url, login["accessToken"], body)

    assert (replay.status_code, replay.content) == (401, b"")
    assert vendorlink_fake.stale_refresh_tokens == 1


def test_vendorlink_refuses_extension_when_access_token_is_unknown(
    vendorlink_fake: FakeVendorlink, client: httpx.Client
) -> None:
    """ExtendToken needs an access token this server issued."""
    login = vendorlink_login(client, vendorlink_fake.base_url).json()

    response = vendorlink_extend(
        client, vendorlink_fake.base_url, "unknown", {"rToken": login["renewalToken"]}
    )

    assert response.status_code == 401


@pytest.mark.parametrize(("field", "status"), [("rToken", 200), ("RenewalToken", 401)])
def test_vendorlink_reads_only_accepted_fields_when_renewal_field_is_configured(
    client: httpx.Client, field: str, status: int
) -> None:
    """accepted_renewal_fields decides which JSON key carries the renewal token."""
    with FakeVendorlink(accepted_renewal_fields=("rToken",)) as fake:
        login = vendorlink_login(client, fake.base_url).json()
        response = vendorlink_extend(
            client, fake.base_url, login["accessToken"], {field: login["renewalToken"]}
        )

    assert response.status_code == status


def test_vendorlink_answers_null_renewal_token_when_configured(client: httpx.Client) -> None:
    """null_renewal_token=True answers renewalToken null, as the older docs show."""
    with FakeVendorlink(null_renewal_token=True) as fake:
        login = vendorlink_login(client, fake.base_url).json()
        response = vendorlink_extend(
            client, fake.base_url, login["accessToken"], {"RenewalToken": login["renewalToken"]}
        )

    assert response.status_code == 200
    assert response.json()["renewalToken"] is None


def test_vendorlink_sends_client_to_second_server_when_reassign_is_on(
    client: httpx.Client,
) -> None:
    """Login at the base server answers only a hostname; tokens work only where issued."""
    with FakeVendorlink(reassign=True) as fake:
        assert fake.assigned_url is not None
        assigned_host = fake.assigned_url.removeprefix("http://")
        first = vendorlink_login(client, fake.base_url)
        second = vendorlink_login(client, fake.assigned_url)
        token = bearer(second.json()["accessToken"])
        on_assigned = client.get(fake.assigned_url + "/API/tenders", headers=token)
        on_base = client.get(fake.api_url + "tenders", headers=token)

        assert first.json() == {"hostname": assigned_host}
        assert second.json()["hostname"] == assigned_host
        assert (on_assigned.status_code, on_base.status_code) == (200, 401)
        base_host = fake.base_url.removeprefix("http://")
        assert fake.logins_by_host == {base_host: 1, assigned_host: 1}
        assert fake.api_ok_by_host == {assigned_host: 1}
        assert fake.tokens_issued == 1


# -- Van Marcke ----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["token", "api", "service_users"])
def test_vanmarcke_refuses_call_when_api_key_is_missing(
    vanmarcke_fake: FakeVanMarcke, client: httpx.Client, endpoint: str
) -> None:
    """Every gateway call without x-api-key is 401 InvalidApiKey and never reaches its endpoint."""
    url = {
        "token": vanmarcke_fake.token_url,
        "api": vanmarcke_fake.api_url + "products",
        "service_users": vanmarcke_fake.service_users_url,
    }[endpoint]

    response = client.post(url, data={"grant_type": "password"})

    assert response.status_code == 401
    assert response.json() == {
        "fault": {
            "faultstring": "Invalid ApiKey",
            "detail": {"errorcode": "oauth.v2.InvalidApiKey"},
        }
    }
    assert (vanmarcke_fake.missing_api_key, vanmarcke_fake.token_calls) == (1, 0)


def test_vanmarcke_issues_refreshable_token_when_service_user_logs_in(
    vanmarcke_fake: FakeVanMarcke, client: httpx.Client
) -> None:
    """The password grant with the key answers an OAuth token; its refresh token works."""
    body = vanmarcke_login(vanmarcke_fake, client).json()
    data = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}

    refreshed = client.post(
        vanmarcke_fake.token_url, data={**data, **VANMARCKE_CLIENT}, headers=API_KEY
    )

    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert refreshed.status_code == 200
    assert vanmarcke_fake.api_calls_with_key == 2


def test_vanmarcke_answers_oauth_errors_when_credentials_are_wrong(
    vanmarcke_fake: FakeVanMarcke, client: httpx.Client
) -> None:
    """A missing client secret is 401 invalid_client; a wrong password 400 invalid_grant."""
    data = {"grant_type": "password", "username": "API-APP1-P123456", "password": "x"}

    no_secret = client.post(
        vanmarcke_fake.token_url, data={**data, "client_id": "vm-client"}, headers=API_KEY
    )
    wrong_password = vanmarcke_login(vanmarcke_fake, client, password="x")

    assert (no_secret.status_code, no_secret.json()["error"]) == (401, "invalid_client")
    assert (wrong_password.status_code, wrong_password.json()["error"]) == (400, "invalid_grant")


def test_vanmarcke_counts_stale_refresh_token_when_rotated_token_is_reused(
    client: httpx.Client,
) -> None:
    """With rotation, a used refresh token is refused and counted as stale."""
    with FakeVanMarcke(rotate_refresh_tokens=True) as fake:
        refresh_token = vanmarcke_login(fake, client).json()["refresh_token"]
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **VANMARCKE_CLIENT}
        client.post(fake.token_url, data=data, headers=API_KEY)
        replay = client.post(fake.token_url, data=data, headers=API_KEY)

        assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
        assert fake.stale_refresh_tokens == 1


def test_vanmarcke_creates_service_user_once_when_end_user_posts_twice(
    vanmarcke_fake: FakeVanMarcke, client: httpx.Client
) -> None:
    """The first create answers 201 with credentials, the second 403 Conflict."""
    end_user = vanmarcke_login(vanmarcke_fake, client, "enduser", "enduser-password")
    headers = {**bearer(access_token_of(end_user)), **API_KEY}

    created = client.post(vanmarcke_fake.service_users_url, headers=headers)
    conflict = client.post(vanmarcke_fake.service_users_url, headers=headers)
    listing = client.get(vanmarcke_fake.service_users_url, headers=headers)

    assert created.status_code == 201
    username = created.json()["username"]
    assert username.startswith("API-APP1-P")
    assert conflict.status_code == 403
    assert conflict.json() == {
        "message": "Conflict: a service user already exists for this application and customer"
    }
    assert [user["username"] for user in listing.json()] == [username]
    login = vanmarcke_login(vanmarcke_fake, client, username, created.json()["password"])
    assert login.status_code == 200


def test_vanmarcke_replaces_password_when_service_user_password_is_reset(
    vanmarcke_fake: FakeVanMarcke, client: httpx.Client
) -> None:
    """resetPassword answers a new password; the old one stops working."""
    end_user = vanmarcke_login(vanmarcke_fake, client, "enduser", "enduser-password")
    headers = {**bearer(access_token_of(end_user)), **API_KEY}
    created = client.post(vanmarcke_fake.service_users_url, headers=headers).json()
    user_id = client.get(vanmarcke_fake.service_users_url, headers=headers).json()[0]["id"]

    reset = client.post(
        f"{vanmarcke_fake.service_users_url}/{user_id}/resetPassword", headers=headers
    )

    new_password = reset.json()["password"]
    assert reset.status_code == 200
    assert new_password != created["password"]
    old_login = vanmarcke_login(vanmarcke_fake, client, created["username"], created["password"])
    new_login = vanmarcke_login(vanmarcke_fake, client, created["username"], new_password)
    assert (old_login.status_code, new_login.status_code) == (400, 200)
