"""Against node's oidc-provider (npm) on loopback over real TLS: discovery, every client
authentication method, the JWT bearer grant, mutual TLS and DPoP, in real time.

The server (tests/oidc_server.mjs, started by tests/oidc_fixture.py) issues 3 s access
tokens and judges every API request itself (`/api/hello` looks the token up in its own
store), so a request that carried an expired or unknown token fails the test.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpx
import pytest
import requests

from renewauth import (
    InvalidClient,
    InvalidGrant,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2JwtBearer,
    Token,
    TokenAuth,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from renewauth.providers import Keycloak
from renewauth.testing import FakeOAuth2Provider

from .helpers import KINDS, send
from .oidc_fixture import LIFETIME, SECRET, Oidc, pem

THREADS = 8


def hammer(auth: TokenAuth, url: str, seconds: float, *, verify: str) -> list[int]:
    """8 threads, half on requests and half on one httpx.Client, for `seconds`."""
    statuses: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    client = httpx.Client(auth=auth, timeout=20, verify=ssl.create_default_context(cafile=verify))
    deadline: list[float] = []

    def work(index: int) -> None:
        session = requests.Session()
        session.auth = auth
        if start.wait() == 0:
            deadline.append(time.monotonic() + seconds)
        start.wait()
        while time.monotonic() < deadline[0]:
            try:
                if index % 2:
                    status = session.get(url, timeout=20, verify=verify).status_code
                else:
                    status = client.get(url).status_code
            except Exception as exc:  # kept for the failure message
                status = 0
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == [], errors[:3]
    return statuses


def options(oidc: Oidc, **more: Any) -> dict[str, Any]:
    return {"store": MemoryStore(), "leeway": 1.0, "verify": oidc.ca, **more}


def assert_no_failures(statuses: list[int]) -> None:
    assert len(statuses) > 2 * THREADS  # every thread made requests over several lifetimes
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"


def renewal_count() -> tuple[list[Token], Any]:
    tokens: list[Token] = []
    return tokens, tokens.append


@pytest.mark.parametrize(
    ("client_id", "client_auth"),
    [("basic", "basic"), ("post", "body"), ("secret-jwt", "client_secret_jwt")],
)
def test_secret_methods_serve_8_threads_over_several_lifetimes_with_0_failures(
    oidc: Oidc, client_id: str, client_auth: str
) -> None:
    tokens, on_token = renewal_count()
    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer,
        client_id,
        SECRET,
        client_auth=client_auth,
        on_token=on_token,
        **options(oidc),
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3  # renewed across lifetimes, not one token reused
    assert SECRET not in repr(auth)


@pytest.mark.parametrize("key", ["rsa_pem", "ec_jwk"])
def test_private_key_jwt_serves_8_threads_over_several_lifetimes_with_0_failures(
    oidc: Oidc, key: str
) -> None:
    tokens, on_token = renewal_count()
    private_key = getattr(oidc, key)
    client_id = "rsa-jwt" if key == "rsa_pem" else "ec-jwt"
    auth = OAuth2ClientCredentials(
        oidc.token_url,
        client_id,
        client_auth="private_key_jwt",
        private_key=private_key,
        key_id="ec-1" if key == "ec_jwk" else None,
        on_token=on_token,
        **options(oidc),
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3
    assert "PRIVATE" not in repr(auth)
    assert "'d'" not in repr(auth)


def test_private_key_jwt_is_refused_as_invalid_client_when_key_is_not_registered(
    oidc: Oidc,
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = ec.generate_private_key(ec.SECP256R1())

    auth = OAuth2ClientCredentials(
        oidc.token_url,
        "rsa-jwt",
        client_auth="private_key_jwt",
        private_key=pem(stranger),
        **options(oidc, retries=0),
    )
    with pytest.raises(InvalidClient) as caught:
        auth.get_token()
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.parametrize("client_auth", ["private_key_jwt", "client_secret_jwt", "tls_client_auth"])
def test_keycloak_client_without_its_secret_serves_8_threads_over_several_lifetimes(
    oidc: Oidc, client_auth: str
) -> None:
    # Keycloak's "Signed JWT", "Signed JWT with client secret" and "X509 certificate" client
    # authenticators, against an issuer laid out as a realm: the discovery document comes
    # from `{server}/realms/renewauth`, an assertion's audience is the realm's token endpoint.
    tokens, on_token = renewal_count()
    credentials: dict[str, Any] = {
        "private_key_jwt": {"client_id": "kc-rsa-jwt", "private_key": oidc.rsa_pem},
        "client_secret_jwt": {"client_id": "kc-secret-jwt", "client_secret": SECRET},
        "tls_client_auth": {"client_id": "kc-tls", "cert": oidc.tls_cert},
    }[client_auth]
    auth = Keycloak.from_issuer(
        oidc.realm, client_auth=client_auth, on_token=on_token, **credentials, **options(oidc)
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3
    assert auth.server_metadata is not None
    assert auth.server_metadata.token_endpoint == (f"{oidc.realm}/protocol/openid-connect/token")
    assert "PRIVATE" not in repr(auth)
    assert SECRET not in repr(auth)
    # The same client from the token URL a Keycloak admin console shows.
    direct = Keycloak.from_token_url(
        auth.server_metadata.token_endpoint, client_auth=client_auth, **credentials, **options(oidc)
    )
    assert direct.get_token().access_token


def test_keycloak_signed_jwt_client_is_refused_when_its_key_is_another(oidc: Oidc) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = Keycloak.from_issuer(
        oidc.realm,
        client_id="kc-rsa-jwt",
        client_auth="private_key_jwt",
        private_key=pem(stranger),
        **options(oidc, retries=0),
    )
    with pytest.raises(InvalidClient) as caught:
        auth.get_token()
    assert "PRIVATE KEY" not in str(caught.value)
    assert "the server holds the public half of private_key=" in str(caught.value)


def test_jwt_bearer_grant_serves_8_threads_over_several_lifetimes_with_0_failures(
    oidc: Oidc,
) -> None:
    tokens, on_token = renewal_count()
    auth = OAuth2JwtBearer(
        oidc.token_url,
        issuer="service-account",
        subject="report-runner",
        private_key=oidc.bearer_pem,
        scope="api",
        on_token=on_token,
        **options(oidc),
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3
    assert tokens[-1].scope == "api"


def test_jwt_bearer_grant_raises_invalid_grant_when_audience_is_wrong(oidc: Oidc) -> None:
    auth = OAuth2JwtBearer(
        oidc.token_url,
        issuer="service-account",
        subject="report-runner",
        private_key=oidc.bearer_pem,
        audience="https://elsewhere.example.com",
        **options(oidc, retries=0),
    )
    with pytest.raises(InvalidGrant, match="check issuer=, subject=, audience="):
        auth.get_token()


def test_tls_client_auth_uses_mtls_alias_and_serves_8_threads_with_0_failures(
    oidc: Oidc,
) -> None:
    tokens, on_token = renewal_count()
    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer,
        "tls",
        client_auth="tls_client_auth",
        cert=oidc.tls_cert,
        on_token=on_token,
        **options(oidc),
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3
    # The discovery document's mtls_endpoint_aliases was followed: the port that refuses a
    # connection without a client certificate.
    assert auth._manager.grant.token_url == f"https://127.0.0.1:{oidc.mtls_port}/token"


def test_self_signed_tls_client_auth_serves_8_threads_with_0_failures(oidc: Oidc) -> None:
    tokens, on_token = renewal_count()
    auth = OAuth2ClientCredentials(
        oidc.token_url,
        "self-signed",
        client_auth="self_signed_tls_client_auth",
        cert=oidc.self_signed_cert,
        on_token=on_token,
        **options(oidc),
    )
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    assert len(tokens) >= 3


def test_tls_client_auth_raises_invalid_client_when_certificate_is_not_the_registered_one(
    oidc: Oidc,
) -> None:
    auth = OAuth2ClientCredentials(
        oidc.token_url,
        "tls",
        client_auth="tls_client_auth",
        cert=oidc.self_signed_cert,
        **options(oidc, retries=0),
    )
    with pytest.raises(InvalidClient):
        auth.get_token()


def test_mtls_port_is_unreachable_when_no_client_certificate_is_sent(oidc: Oidc) -> None:
    auth = OAuth2ClientCredentials(
        f"https://127.0.0.1:{oidc.mtls_port}/token", "post", SECRET, **options(oidc, retries=0)
    )
    with pytest.raises(TokenEndpointUnavailable):
        auth.get_token()  # the mTLS listener really does demand a certificate


def test_dpop_binds_tokens_and_serves_8_threads_over_several_lifetimes_with_0_failures(
    oidc: Oidc,
) -> None:
    tokens, on_token = renewal_count()
    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer,
        "dpop",
        SECRET,
        client_auth="basic",
        dpop=True,
        on_token=on_token,
        **options(oidc),
    )
    before = requests.get(f"{oidc.issuer}/api/counts", verify=oidc.ca, timeout=20).json()
    assert_no_failures(hammer(auth, oidc.api, 2.5 * LIFETIME, verify=oidc.ca))
    after = requests.get(f"{oidc.issuer}/api/counts", verify=oidc.ca, timeout=20).json()
    assert len(tokens) >= 3
    assert {token.token_type for token in tokens} == {"DPoP"}
    # The API's nonce changed while the threads ran: its use_dpop_nonce challenges were met.
    assert after["nonceChallenges"] > before["nonceChallenges"]
    assert "PRIVATE" not in repr(auth)


def oidc_counts(oidc: Oidc) -> dict[str, int]:
    counts: dict[str, int] = requests.get(
        f"{oidc.issuer}/api/counts", verify=oidc.ca, timeout=20
    ).json()
    return counts


@pytest.mark.parametrize("kind", KINDS)
def test_dpop_token_calls_reuse_the_servers_nonce_when_the_api_on_its_origin_sends_its_own(
    oidc: Oidc, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """oidc-provider's token endpoint and the API share an origin but not a nonce: after the
    first, every token call carries the token endpoint's nonce and is not refused."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", oidc.ca)  # the API calls trust the test CA too
    monkeypatch.setenv("SSL_CERT_FILE", oidc.ca)
    auth = OAuth2ClientCredentials(
        oidc.token_url, "dpop", SECRET, client_auth="basic", dpop=True, **options(oidc)
    )
    renewals = 6
    before = oidc_counts(oidc)
    for _ in range(renewals):
        assert send(kind, auth, oidc.api).status == 200  # the API's answer sends its nonce
        auth.invalidate()
    after = oidc_counts(oidc)
    # One use_dpop_nonce for the first call (it had no nonce yet), then one call per renewal.
    assert after["tokenNonceChallenges"] - before["tokenNonceChallenges"] == 1
    assert after["tokenCalls"] - before["tokenCalls"] == renewals + 1


def test_dpop_raises_token_request_error_when_server_issues_bearer_token(
    oauth2_fake: FakeOAuth2Provider,
) -> None:
    # renewauth's own fake, unless told to demand nonces, ignores the proof and issues Bearer.
    auth = OAuth2ClientCredentials(
        oauth2_fake.token_url, "client-id", "client-secret", dpop=True, store=MemoryStore()
    )
    with pytest.raises(TokenRequestError, match="Bearer token although dpop=True"):
        auth.get_token()
    assert oauth2_fake.token_calls == 1
    recorded = oauth2_fake.last_token_request
    assert recorded is not None
    assert "dpop" in recorded.headers


def test_dpop_proofs_survive_async_client_when_api_rotates_nonces(oidc: Oidc) -> None:
    import asyncio

    auth = OAuth2ClientCredentials(
        oidc.token_url, "dpop", SECRET, client_auth="basic", dpop=True, **options(oidc)
    )

    async def main() -> list[int]:
        context = ssl.create_default_context(cafile=oidc.ca)
        async with httpx.AsyncClient(auth=auth, verify=context) as client:
            statuses = []
            deadline = time.monotonic() + 1.5 * LIFETIME
            while time.monotonic() < deadline:
                answers = await asyncio.gather(*(client.get(oidc.api) for _ in range(8)))
                statuses += [answer.status_code for answer in answers]
            return statuses

    statuses = asyncio.run(main())
    assert statuses
    assert set(statuses) == {200}
