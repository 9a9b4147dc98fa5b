"""Discovery (OpenID Connect Discovery 1.0, RFC 8414) as a sans-IO flow, driven by hand, and
`from_issuer` against node's oidc-provider over real TLS."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from renewauth import (
    ConfigurationError,
    DiscoveryError,
    InsecureTransportError,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    TokenEndpointUnavailable,
)
from renewauth.discovery import DiscoveredGrant, metadata_urls, parse_metadata
from renewauth.flows import TokenResponse
from renewauth.oauth2 import Client, ClientCredentialsGrant
from renewauth.providers import Keycloak

from .oidc_fixture import SECRET, Oidc

ISSUER = "https://idp.example.com/tenant1"


def answer(status: int, body: object, url: str) -> TokenResponse:
    return TokenResponse(
        status=status,
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        url=url,
        sent_at=1000.0,
        received_at=1000.1,
    )


def grant(issuer: str = ISSUER, client_auth: str = "body") -> DiscoveredGrant:
    template = ClientCredentialsGrant(
        token_url=issuer,
        client=Client(client_id="app", client_secret="s3", auth=client_auth),  # type: ignore[arg-type]
    )
    return DiscoveredGrant(issuer=issuer, template=template)


def document(issuer: str = ISSUER, **more: object) -> dict[str, object]:
    return {"issuer": issuer, "token_endpoint": "https://idp.example.com/t1/token", **more}


def test_metadata_urls_follow_oidc_then_rfc8414_when_issuer_has_a_path() -> None:
    assert metadata_urls(ISSUER) == (
        "https://idp.example.com/tenant1/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/oauth-authorization-server/tenant1",
    )
    assert metadata_urls("https://idp.example.com/")[1] == (
        "https://idp.example.com/.well-known/oauth-authorization-server"
    )


def test_discovery_reads_document_once_then_sends_token_calls_when_fetched_again() -> None:
    discovered = grant()
    flow = discovered.fetch(None)
    first = next(flow)
    assert (first.method, first.url) == ("GET", metadata_urls(ISSUER)[0])
    token_request = flow.send(answer(200, document(), first.url))
    assert token_request.url == "https://idp.example.com/t1/token"
    assert parse_qs(token_request.body.decode())["grant_type"] == ["client_credentials"]
    with pytest.raises(StopIteration):
        flow.send(answer(200, {"access_token": "A", "expires_in": 60}, token_request.url))
    assert discovered.token_url == "https://idp.example.com/t1/token"
    again = next(discovered.fetch(None))  # cached: straight to the token endpoint
    assert again.url == "https://idp.example.com/t1/token"


def test_discovery_falls_back_to_rfc8414_when_oidc_document_is_missing() -> None:
    flow = grant().fetch(None)
    first = next(flow)
    second = flow.send(answer(404, b"not found", first.url))
    assert second.url == metadata_urls(ISSUER)[1]
    token_request = flow.send(answer(200, document(), second.url))
    assert token_request.url.endswith("/t1/token")


def test_discovery_names_both_urls_when_no_document_exists() -> None:
    flow = grant().fetch(None)
    first = next(flow)
    second = flow.send(answer(404, b"", first.url))
    with pytest.raises(DiscoveryError) as caught:
        flow.send(answer(404, b"", second.url))
    assert caught.value.urls == metadata_urls(ISSUER)
    assert all(url in str(caught.value) for url in metadata_urls(ISSUER))


def test_discovery_refuses_a_document_for_another_issuer() -> None:
    flow = grant().fetch(None)
    first = next(flow)
    with pytest.raises(DiscoveryError, match=r"names 'https://evil\.example\.com'") as caught:
        flow.send(answer(200, document("https://evil.example.com"), first.url))
    assert first.url in str(caught.value)


def test_discovery_refuses_a_plain_http_token_endpoint_off_loopback() -> None:
    flow = grant().fetch(None)
    first = next(flow)
    with pytest.raises(InsecureTransportError):
        flow.send(answer(200, document(token_endpoint="http://idp.example.com/token"), first.url))


def test_discovery_is_unavailable_not_missing_when_server_answers_5xx() -> None:
    flow = grant().fetch(None)
    first = next(flow)
    with pytest.raises(TokenEndpointUnavailable):
        flow.send(answer(503, b"", first.url))


def test_discovery_uses_mtls_alias_when_client_authenticates_by_tls() -> None:
    meta = document(mtls_endpoint_aliases={"token_endpoint": "https://mtls.example.com/token"})
    for client_auth, expected in (
        ("tls_client_auth", "https://mtls.example.com/token"),
        ("body", "https://idp.example.com/t1/token"),
    ):
        flow = grant(client_auth=client_auth).fetch(None)
        first = next(flow)
        assert flow.send(answer(200, meta, first.url)).url == expected


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["issuer", "token_endpoint", "mtls_endpoint_aliases", "x"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.text())),
        ).map(lambda d: json.dumps(d).encode()),
    ),
    st.integers(100, 599),
)
def test_parse_metadata_raises_only_discovery_error_when_body_is_anything(
    body: bytes, status: int
) -> None:
    response = TokenResponse(status=status, body=body, url=ISSUER + "/.well-known/x")
    try:
        metadata = parse_metadata(response, issuer=ISSUER)
    except DiscoveryError as exc:
        assert ISSUER + "/.well-known/x" in str(exc)
    else:
        assert metadata.issuer == ISSUER


def test_from_issuer_does_no_io_in_constructor_when_server_is_absent() -> None:
    auth = OAuth2ClientCredentials.from_issuer("https://127.0.0.1:9/", "app", "s3")
    assert auth.server_metadata is None
    assert auth.token is None
    with pytest.raises(ConfigurationError):
        OAuth2ClientCredentials.from_issuer("", "app", "s3")


def test_from_issuer_discovers_token_endpoint_of_real_server(oidc: Oidc) -> None:
    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer, "post", SECRET, store=MemoryStore(), verify=oidc.ca
    )
    assert requests.get(oidc.api, auth=auth, verify=oidc.ca, timeout=20).status_code == 200
    assert auth.server_metadata is not None
    assert auth.server_metadata.token_endpoint == oidc.token_url
    assert "private_key_jwt" in auth.server_metadata.auth_methods


def test_from_issuer_fails_naming_urls_when_issuer_is_wrong(oidc: Oidc) -> None:
    wrong = oidc.issuer + "/nowhere"
    auth = OAuth2ClientCredentials.from_issuer(
        wrong, "post", SECRET, store=MemoryStore(), verify=oidc.ca, retries=0
    )
    with pytest.raises(DiscoveryError) as caught:
        auth.get_token()
    assert f"{wrong}/.well-known/openid-configuration" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_from_issuer_exists_on_every_generic_class_and_keycloak() -> None:
    password = OAuth2Password.from_issuer(ISSUER, "app", "alice", "alice-password")
    refresh = OAuth2RefreshToken.from_issuer(ISSUER, "app", "r-token")
    keycloak = Keycloak.from_issuer(
        "https://kc.example.com/realms/wallis", client_id="app", client_secret="s3"
    )
    for auth in (password, refresh, keycloak):
        assert auth.server_metadata is None
        assert "alice-password" not in repr(auth)
        assert "r-token" not in repr(auth)
    assert "realm='wallis'" in repr(keycloak)
