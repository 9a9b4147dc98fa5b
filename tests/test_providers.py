"""Every provider and mode against its vendor's fake: threads, tasks, lifetimes, revocation."""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import pytest
import requests

from renewauth import (
    AuthError,
    ConfigurationError,
    FileStore,
    InvalidClient,
    InvalidGrant,
    MemoryStore,
    Token,
    TokenAuth,
    TokenEndpointUnavailable,
)
from renewauth.providers import Keycloak, OrderCloud, Shopware, VanMarcke, Vendorlink
from renewauth.testing import (
    FakeKeycloak,
    FakeOrderCloud,
    FakeShopware,
    FakeVanMarcke,
    FakeVendorlink,
)

from .helpers import ManualClock, send, send_concurrently

LIFETIME = 100.0  # seconds on the manual clock
LEEWAY = 5.0
STEP = 20.0  # the clock moves this far between rounds: five rounds per lifetime

Fake = FakeKeycloak | FakeOrderCloud | FakeShopware | FakeVanMarcke | FakeVendorlink


@dataclass(frozen=True)
class Case:
    name: str
    fake: Callable[[ManualClock], Fake]
    auth: Callable[[Fake, ManualClock], TokenAuth]
    rotates: bool = False


def _options(clock: ManualClock) -> dict[str, object]:
    return {"store": MemoryStore(), "clock": clock, "leeway": LEEWAY}


CASES = [
    Case(
        "keycloak-technical-user-rotating",
        lambda clock: FakeKeycloak(
            token_lifetime=LIFETIME, rotate_refresh_tokens=True, clock=clock
        ),
        lambda fake, clock: Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="portal-secret",
            refresh_token=fake.issue_refresh_token(),
            **_options(clock),  # type: ignore[union-attr, arg-type]
        ),
        rotates=True,
    ),
    Case(
        "keycloak-technical-user",
        lambda clock: FakeKeycloak(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="portal-secret",
            refresh_token=fake.issue_refresh_token(),
            **_options(clock),  # type: ignore[union-attr, arg-type]
        ),
    ),
    Case(
        "keycloak-client-credentials",
        lambda clock: FakeKeycloak(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="portal-secret",
            **_options(clock),  # type: ignore[union-attr, arg-type]
        ),
    ),
    Case(
        "keycloak-legacy-auth-prefix-password",
        lambda clock: FakeKeycloak(
            token_lifetime=LIFETIME,
            legacy_auth_prefix=True,
            rotate_refresh_tokens=True,
            clock=clock,
        ),
        lambda fake, clock: Keycloak.from_token_url(
            fake.token_url,
            client_id="portal-client",
            client_secret="portal-secret",
            username="alice",
            password="alice-password",
            **_options(clock),  # type: ignore[arg-type]
        ),
        rotates=True,
    ),
    Case(
        "ordercloud-password",
        lambda clock: FakeOrderCloud(token_lifetime=LIFETIME, refresh_tokens=True, clock=clock),
        lambda fake, clock: OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            username="buyer01",
            password="buyer-password",
            auth_url=fake.auth_url,
            **_options(clock),  # type: ignore[union-attr, arg-type]
        ),
    ),
    Case(
        "ordercloud-client-credentials",
        lambda clock: FakeOrderCloud(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            auth_url=fake.auth_url,  # type: ignore[union-attr]
            **_options(clock),  # type: ignore[arg-type]
        ),
    ),
    Case(
        "shopware-integration",
        lambda clock: FakeShopware(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: Shopware(
            fake.base_url,
            client_id="SWIAKEY01",
            client_secret="integration-secret",
            **_options(clock),  # type: ignore[arg-type]
        ),
    ),
    Case(
        "shopware-admin-user",
        lambda clock: FakeShopware(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: Shopware(
            fake.base_url,
            username="admin",
            password="shopware-password",
            **_options(clock),  # type: ignore[arg-type]
        ),
        rotates=True,
    ),
    Case(
        "vendorlink-reassigned",
        lambda clock: FakeVendorlink(token_lifetime=LIFETIME, reassign=True, clock=clock),
        lambda fake, clock: Vendorlink(
            "demo",
            "demo-password",
            base_url=fake.base_url,
            **_options(clock),  # type: ignore[arg-type]
        ),
        rotates=True,
    ),
    Case(
        "vanmarcke",
        lambda clock: FakeVanMarcke(token_lifetime=LIFETIME, clock=clock),
        lambda fake, clock: VanMarcke(
            "API-APP1-P123456",
            "service-password",
            client_id="vm-client",
            client_secret="vm-secret",
            api_key="test-api-key",
            token_url=fake.token_url,
            **_options(clock),  # type: ignore[arg-type]
        ),
    ),
]
ASYNC_CASES = {"keycloak-technical-user-rotating", "shopware-admin-user"}
RUNS = [
    pytest.param(case, kind, id=f"{case.name}-{kind}")
    for case in CASES
    for kind in ("requests", "httpx", "httpx-async")
    if kind != "httpx-async" or case.name in ASYNC_CASES
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def started(case: Case, clock: ManualClock) -> AbstractContextManager[Fake]:
    return case.fake(clock)


@pytest.mark.parametrize(("case", "kind"), RUNS)
def test_provider_serves_concurrent_callers_over_several_lifetimes(
    case: Case, kind: str, clock: ManualClock
) -> None:
    workers = 50 if kind == "httpx-async" else 8
    rounds = 25  # five token lifetimes
    with started(case, clock) as fake:
        auth = case.auth(fake, clock)
        for _ in range(rounds):
            assert send_concurrently(kind, auth, fake.api_url + "items", workers) == [200] * workers
            clock.advance(STEP)
        lifetimes = rounds * STEP / LIFETIME
        assert fake.token_calls <= 1.3 * lifetimes
        assert fake.stale_refresh_tokens == 0
        assert fake.api_unauthorized == 0  # renewed before expiry: the API never saw one
        fake.revoke_access_tokens()
        assert send(kind, auth, fake.api_url + "items").status == 200


@pytest.mark.parametrize("case", [c for c in CASES if c.rotates], ids=lambda c: c.name)
def test_rotating_provider_stores_every_refresh_token_before_use(
    case: Case, clock: ManualClock
) -> None:
    with started(case, clock) as fake:
        seen: list[str | None] = []
        stored: list[str | None] = []  # what the store held when each token was announced
        auth = case.auth(fake, clock)
        manager = auth._manager

        def on_token(token: Token) -> None:
            seen.append(token.refresh_token)
            held = manager.store.get(manager.key)
            stored.append(None if held is None else held.refresh_token)

        manager.on_token = on_token
        for _ in range(4):
            auth.get_token()
            clock.advance(LIFETIME + 1)
        assert fake.stale_refresh_tokens == 0
        assert len(set(seen)) == len(seen) == 4
        # on_token runs before get_token returns, so before the token is used: the store
        # already held each rotated refresh token, and the next renewal presented it.
        assert stored == seen
        presented = {
            request.params.get("refresh_token") or request.params.get("rToken")
            for request in fake.recent_token_requests
        }
        assert set(seen[:-1]) <= presented


# --- provider specifics ---------------------------------------------------------------------


def test_ordercloud_403_reaches_the_caller_without_renewal(clock: ManualClock) -> None:
    with FakeOrderCloud(clock=clock) as fake:
        auth = OrderCloud("oc-client", client_secret="oc-secret", auth_url=fake.auth_url)
        assert requests.get(fake.api_url + "forbidden", auth=auth, timeout=10).status_code == 403
        assert fake.token_calls == 1


def test_shopware_403_reaches_the_caller_without_renewal(clock: ManualClock) -> None:
    with FakeShopware(clock=clock) as fake:
        auth = Shopware(fake.base_url, username="admin", password="shopware-password")
        assert httpx.get(fake.api_url + "forbidden", auth=auth).status_code == 403
        assert fake.token_calls == 1


def test_ordercloud_anonymous_sends_the_client_id_only(clock: ManualClock) -> None:
    with FakeOrderCloud(clients={"oc-client": None}, clock=clock) as fake:
        auth = OrderCloud("oc-client", anonymous=True, auth_url=fake.auth_url, store=MemoryStore())
        assert requests.get(fake.api_url + "me", auth=auth, timeout=10).status_code == 200
        assert fake.anonymous_tokens == 1
        recorded = fake.last_token_request
        assert recorded is not None
        assert "client_secret" not in recorded.params


def test_ordercloud_sends_the_secret_on_the_refresh_grant(clock: ManualClock) -> None:
    with FakeOrderCloud(refresh_tokens=True, clock=clock) as fake:
        auth = OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            username="buyer01",
            password="buyer-password",
            auth_url=fake.auth_url,
            store=MemoryStore(),
            clock=clock,
        )
        auth.get_token()
        clock.advance(700.0)
        auth.get_token()
        recorded = fake.last_token_request
        assert recorded is not None
        assert recorded.grant_type == "refresh_token"
        assert recorded.params["client_secret"] == "oc-secret"


def test_ordercloud_wrong_password_is_not_retried(clock: ManualClock) -> None:
    with FakeOrderCloud(clock=clock) as fake:
        auth = OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            username="buyer01",
            password="wrong",
            auth_url=fake.auth_url,
            store=MemoryStore(),
        )
        with pytest.raises(InvalidGrant, match="password=") as caught:
            auth.get_token()
        assert fake.token_calls == 1
        assert "wrong" not in str(caught.value)


@pytest.mark.parametrize("league_version", [8, 9])
def test_shopware_falls_back_to_password_when_the_refresh_token_is_dead(
    league_version: int, clock: ManualClock
) -> None:
    with FakeShopware(league_version=league_version, clock=clock) as fake:
        auth = Shopware(
            fake.base_url,
            username="admin",
            password="shopware-password",
            store=MemoryStore(),
            clock=clock,
        )
        auth.get_token()
        fake.revoke_refresh_tokens()
        clock.advance(700.0)
        assert httpx.get(fake.api_url + "items", auth=auth).status_code == 200
        assert fake.token_calls_by_grant == {"password": 2, "refresh_token": 1}


def test_shopware_throttled_login_is_waited_out_not_hammered(clock: ManualClock) -> None:
    with FakeShopware(throttle_after=1, throttle_seconds=30.0, clock=clock) as fake:
        wrong = Shopware(fake.base_url, username="admin", password="wrong", store=MemoryStore())
        with pytest.raises(InvalidGrant):
            wrong.get_token()
        auth = Shopware(
            fake.base_url,
            username="admin",
            password="shopware-password",
            store=MemoryStore(),
            clock=clock,
        )
        for _ in range(3):
            with pytest.raises(TokenEndpointUnavailable) as caught:
                auth.get_token()
            assert caught.value.retry_after == pytest.approx(30.0, abs=1.0)
        assert fake.token_calls == 2  # the wrong login, then one throttled try
        clock.advance(31.0)
        assert auth.get_token().access_token


def test_vendorlink_sends_api_calls_to_the_assigned_server(clock: ManualClock) -> None:
    with FakeVendorlink(reassign=True, clock=clock) as fake:
        auth = Vendorlink("demo", "demo-password", base_url=fake.base_url, store=MemoryStore())
        with requests.Session() as session:
            session.auth = auth
            assert session.get(fake.api_url + "tenders", timeout=10).status_code == 200
        with httpx.Client(auth=auth) as client:
            assert client.get(fake.api_url + "tenders").status_code == 200
        assigned = (fake.assigned_url or "").removeprefix("http://")
        assert fake.api_ok_by_host == {assigned: 2}
        assert fake.logins_by_host == {fake.base_url.removeprefix("http://"): 1, assigned: 1}


def test_vendorlink_extends_with_the_expired_token_then_logs_in_when_spent(
    clock: ManualClock,
) -> None:
    with FakeVendorlink(null_renewal_token=True, clock=clock) as fake:
        auth = Vendorlink(
            "demo", "demo-password", base_url=fake.base_url, store=MemoryStore(), clock=clock
        )
        auth.get_token()
        clock.advance(4000.0)  # expired: ExtendToken is sent with the expired access token
        auth.get_token()
        clock.advance(4000.0)  # the reply's renewal token was null: straight to Login
        auth.get_token()
        assert fake.token_calls_by_grant == {"login": 2, "extendtoken": 1}
        assert fake.stale_refresh_tokens == 0


def test_vendorlink_older_servers_take_the_renewal_field_option(clock: ManualClock) -> None:
    with FakeVendorlink(accepted_renewal_fields=("RenewalToken",), clock=clock) as fake:
        auth = Vendorlink(
            "demo",
            "demo-password",
            base_url=fake.base_url,
            renewal_field="RenewalToken",
            store=MemoryStore(),
            clock=clock,
        )
        auth.get_token()
        clock.advance(4000.0)
        auth.get_token()
        assert fake.token_calls_by_grant == {"login": 1, "extendtoken": 1}


def test_vendorlink_refused_login_names_the_fix(clock: ManualClock) -> None:
    with FakeVendorlink(clock=clock) as fake:
        auth = Vendorlink("demo", "wrong", base_url=fake.base_url, store=MemoryStore())
        with pytest.raises(InvalidGrant, match="Allow API usage"):
            auth.get_token()


def test_vendorlink_refuses_a_server_outside_its_domain() -> None:
    from renewauth.flows import TokenResponse
    from renewauth.providers.vendorlink import VendorlinkGrant

    grant = VendorlinkGrant(base_url="https://app.vendorlink.nl", username="u", password="p")
    flow = grant.fetch(None)
    next(flow)
    answer = TokenResponse(
        status=200,
        headers={},
        body=b'{"hostname": "evil.example.com"}',
        url="https://app.vendorlink.nl/API/auth/login",
    )
    with pytest.raises(AuthError, match="outside its domain"):
        flow.send(answer)
    sibling = grant.fetch(None)
    next(sibling)
    request = sibling.send(
        TokenResponse(
            status=200,
            headers={},
            body=b'{"hostname": "app2.vendorlink.nl"}',
            url="https://app.vendorlink.nl/API/auth/login",
        )
    )
    assert request.url == "https://app2.vendorlink.nl/API/auth/login"


def test_vanmarcke_api_calls_all_carry_the_api_key(clock: ManualClock) -> None:
    with FakeVanMarcke(clock=clock) as fake:
        auth = VanMarcke(
            "API-APP1-P123456",
            "service-password",
            client_id="vm-client",
            client_secret="vm-secret",
            api_key="test-api-key",
            token_url=fake.token_url,
            store=MemoryStore(),
            clock=clock,
        )
        for kind in ("requests", "httpx", "httpx-async"):
            assert send(kind, auth, fake.api_url + "products").status == 200
        assert fake.missing_api_key == 0
        assert fake.api_calls_with_key >= 4  # the token call and three API calls


def test_vanmarcke_service_user_set_up(clock: ManualClock) -> None:
    with FakeVanMarcke(clock=clock) as fake:
        end_user = VanMarcke(
            "enduser",
            "enduser-password",
            client_id="vm-client",
            client_secret="vm-secret",
            api_key="test-api-key",
            token_url=fake.token_url,
            store=MemoryStore(),
        )
        access_token = end_user.get_token().access_token
        created = VanMarcke.create_service_user(
            access_token, api_key="test-api-key", url=fake.service_users_url
        )
        assert "password" not in repr(created)
        with pytest.raises(AuthError, match="reset-password"):
            VanMarcke.create_service_user(
                access_token, api_key="test-api-key", url=fake.service_users_url
            )
        new_password = VanMarcke.reset_service_user_password(
            access_token,
            api_key="test-api-key",
            username=created.username,
            url=fake.service_users_url,
        )
        service = VanMarcke(
            created.username,
            new_password,
            client_id="vm-client",
            client_secret="vm-secret",
            api_key="test-api-key",
            token_url=fake.token_url,
            store=MemoryStore(),
        )
        assert service.get_token().access_token


def test_keycloak_technical_user_refused_says_to_reissue_it(clock: ManualClock) -> None:
    with FakeKeycloak(clock=clock) as fake:
        auth = Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="portal-secret",
            refresh_token=fake.issue_refresh_token(),
            store=MemoryStore(),
        )
        fake.end_session()
        with pytest.raises(InvalidGrant, match="re-issue the technical user"):
            auth.get_token()


def test_keycloak_reissued_technical_user_works_in_the_store_of_the_refused_one(
    clock: ManualClock, tmp_path: pathlib.Path
) -> None:
    """A re-issued refresh token needs no clean-up of the store the refused chain is in."""
    with FakeKeycloak(clock=clock) as fake:

        def technical_user(refresh_token: str) -> Keycloak:
            return Keycloak(
                fake.server_url,
                "portal",
                client_id="portal-client",
                client_secret="portal-secret",
                refresh_token=refresh_token,
                store=FileStore(tmp_path),
                clock=clock,
            )

        refused = technical_user(fake.issue_refresh_token())
        refused.get_token()
        fake.end_session()
        clock.advance(301)  # past the fake's 300 s access token
        with pytest.raises(InvalidGrant):
            refused.get_token()  # the refusal and its pause are now in the store
        fake.reset_counters()

        reissued = technical_user(fake.issue_refresh_token())
        assert reissued.get_token().access_token
        assert fake.token_calls_by_grant == {"refresh_token": 1}


def test_keycloak_wrong_secret_is_invalid_client(clock: ManualClock) -> None:
    with FakeKeycloak(clock=clock) as fake:
        auth = Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="wrong",
            store=MemoryStore(),
        )
        with pytest.raises(InvalidClient, match="client_secret="):
            auth.get_token()


def test_keycloak_offline_refresh_expiry_zero_means_unknown(clock: ManualClock) -> None:
    with FakeKeycloak(clock=clock) as fake:
        auth = Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="portal-secret",
            refresh_token=fake.issue_refresh_token(offline=True),
            store=MemoryStore(),
        )
        token = auth.get_token()
        assert token.refresh_expires_at is None


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Keycloak("https://idp.example.com", "r", client_id="c"), "credentials"),
        (
            lambda: Keycloak(
                "https://idp.example.com", "r", client_id="c", refresh_token="x", username="u"
            ),
            "not both",
        ),
        (lambda: OrderCloud("c"), "anonymous=True"),
        (lambda: OrderCloud("c", anonymous=True, client_secret="s"), "client_secret="),
        (lambda: Shopware("https://shop.example.com"), "integration"),
        (lambda: Keycloak.from_token_url("https://idp.example.com/x", client_id="c"), "token_url="),
    ],
)
def test_providers_refuse_unusable_credentials_naming_the_fix(
    build: Callable[[], TokenAuth], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_provider_logs_and_reprs_hold_no_secret(
    case: Case, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = {
        "portal-secret",
        "alice-password",
        "oc-secret",
        "buyer-password",
        "integration-secret",
        "shopware-password",
        "demo-password",
        "vm-secret",
        "service-password",
        "test-api-key",
    }
    with started(case, clock) as fake:
        auth = case.auth(fake, clock)
        token = auth.get_token()
        secrets |= {token.access_token} | ({token.refresh_token} if token.refresh_token else set())
        fake.revoke_access_tokens()
        send("requests", auth, fake.api_url + "items")
        texts = [caplog.text, repr(auth), repr(auth.token), repr(auth._manager.grant)]
    leaks = [secret for secret in secrets for text in texts if secret in text]
    assert leaks == []


# --- found in review --------------------------------------------------------------------------


def test_vendorlink_extendtoken_server_error_falls_back_to_login(clock: ManualClock) -> None:
    with FakeVendorlink(clock=clock) as fake:
        auth = Vendorlink(
            "demo", "demo-password", base_url=fake.base_url, store=MemoryStore(), clock=clock
        )
        auth.get_token()
        clock.advance(4000.0)
        fake.fail_token_requests(500)  # the ExtendToken call: not retried, Login instead
        assert requests.get(fake.api_url + "tenders", auth=auth, timeout=10).status_code == 200
        assert fake.token_calls_by_grant == {"login": 2, "extendtoken": 1}


def test_vendorlink_later_logins_go_to_the_assigned_server(clock: ManualClock) -> None:
    with FakeVendorlink(reassign=True, null_renewal_token=True, clock=clock) as fake:
        auth = Vendorlink(
            "demo", "demo-password", base_url=fake.base_url, store=MemoryStore(), clock=clock
        )
        for _ in range(4):
            auth.get_token()
            clock.advance(4000.0)
        home = fake.base_url.removeprefix("http://")
        assigned = (fake.assigned_url or "").removeprefix("http://")
        # Logins and ExtendTokens alternate (each ExtendToken answers a null renewal token);
        # after the first hop every Login goes straight to the assigned server.
        assert fake.logins_by_host == {home: 1, assigned: 2}
        assert fake.token_calls_by_grant == {"login": 3, "extendtoken": 2}


@pytest.mark.parametrize(
    ("host", "base", "allowed"),
    [
        ("app2.vendorlink.nl", "app.vendorlink.nl", True),
        ("app.vendorlink.nl", "app.vendorlink.nl", True),
        ("evil.example.com", "app.vendorlink.nl", False),
        ("vendorlink.nl.evil.com", "app.vendorlink.nl", False),
        ("other.co.uk", "vl.co.uk", False),
        ("1.0.0.5", "10.0.0.5", False),
        ("127.0.0.1", "localhost", True),
    ],
)
def test_vendorlink_follows_a_reassignment_only_to_a_sibling(
    host: str, base: str, allowed: bool
) -> None:
    from renewauth.providers.vendorlink import _is_sibling

    assert _is_sibling(host, base) is allowed


def test_vanmarcke_api_key_never_follows_a_redirect_to_another_origin(
    clock: ManualClock,
) -> None:
    from urllib.parse import quote

    with FakeVanMarcke(clock=clock) as fake, FakeOrderCloud() as elsewhere:
        auth = VanMarcke(
            "API-APP1-P123456",
            "service-password",
            client_id="vm-client",
            client_secret="vm-secret",
            api_key="test-api-key",
            token_url=fake.token_url,
            store=MemoryStore(),
        )
        target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
        reply = requests.get(f"{fake.base_url}/redirect?to={target}", auth=auth, timeout=10)
        assert reply.status_code == 200
        assert "test-api-key" not in reply.text
        assert "authorization" not in reply.text.lower()


def test_vanmarcke_set_up_refuses_plain_http_off_loopback() -> None:
    from renewauth import InsecureTransportError

    with pytest.raises(InsecureTransportError):
        VanMarcke.create_service_user(
            "token", api_key="k", url="http://api.vanmarcke.example/v1/serviceusers"
        )


def test_ordercloud_refresh_refused_in_its_own_dialect_falls_back(clock: ManualClock) -> None:
    with FakeOrderCloud(refresh_tokens=True, clock=clock) as fake:
        auth = OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            username="buyer01",
            password="buyer-password",
            auth_url=fake.auth_url,
            store=MemoryStore(),
            clock=clock,
        )
        auth.get_token()
        clock.advance(700.0)
        fake.fail_token_requests(401, body=b'{"Errors":[{"ErrorCode":"InvalidToken"}]}')
        assert auth.get_token().access_token
        assert fake.token_calls_by_grant == {"password": 2, "refresh_token": 1}


@pytest.mark.parametrize(
    "code", ["Auth.UserNotFound", "Auth.CompanyNotActive", "PasswordReset.LockedOut"]
)
def test_ordercloud_auth_codes_are_invalid_grant(code: str) -> None:
    from renewauth.flows import TokenResponse
    from renewauth.providers._dialects import read_ordercloud_error

    body = json.dumps({"Errors": [{"ErrorCode": code, "Message": "no"}]}).encode()
    response = TokenResponse(status=400, body=body, url="https://auth.ordercloud.io/oauth/token")
    assert read_ordercloud_error(response)[0] == "invalid_grant"


def test_refused_password_is_not_sent_again_for_a_minute(clock: ManualClock) -> None:
    with FakeOrderCloud(clock=clock) as fake:
        auth = OrderCloud(
            "oc-client",
            client_secret="oc-secret",
            username="buyer01",
            password="wrong",
            auth_url=fake.auth_url,
            store=MemoryStore(),
            clock=clock,
        )
        for _ in range(5):
            with pytest.raises(InvalidGrant):
                auth.get_token()
        assert fake.token_calls == 1  # four more requests, no more attempts at the password
        clock.advance(61.0)
        with pytest.raises(InvalidGrant):
            auth.get_token()
        assert fake.token_calls == 2


def test_keycloak_technical_user_with_a_wrong_secret_names_the_client_fix(
    clock: ManualClock,
) -> None:
    with FakeKeycloak(clock=clock) as fake:
        auth = Keycloak(
            fake.server_url,
            "portal",
            client_id="portal-client",
            client_secret="wrong",
            refresh_token=fake.issue_refresh_token(),
            store=MemoryStore(),
        )
        with pytest.raises(InvalidClient, match="client_secret=") as caught:
            auth.get_token()
        assert "re-issue" not in str(caught.value)
