"""Client assertions (RFC 7523 §2.2, OpenID Connect Core §9) and key loading: pure, with an
injected clock and ids, checked by verifying each assertion with PyJWT."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from renewauth import (
    ConfigurationError,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2JwtBearer,
    OAuth2Password,
    TokenAuth,
    TokenEndpointUnavailable,
)
from renewauth._arguments import client_from
from renewauth._jose import ASSERTION_TYPE, AssertionMaker, load_private_key
from renewauth.flows import TokenRequest
from renewauth.oauth2 import JWT_BEARER, JwtBearerGrant
from renewauth.testing import FakeOAuth2Provider

from .oidc_fixture import pem

TOKEN_URL = "https://idp.example.com/oauth/token"
SECRET = "oidc-client-secret-for-hs256-assertions"


def form(request: TokenRequest) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.body.decode()).items()}


def clock_at(start: float) -> Any:
    ticks = itertools.count()
    return lambda: start + next(ticks)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_private_key_jwt_sends_fresh_assertion_per_call_when_requests_repeat(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ids = iter(["jti-1", "jti-2"])
    client = client_from("app", None, "private_key_jwt", "form", private_key=pem(rsa_key))
    assert client.assertion is not None
    client = type(client)(
        client_id="app",
        auth="private_key_jwt",
        assertion=AssertionMaker(
            signer=client.assertion.signer, clock=clock_at(1_700_000_000), new_id=lambda: next(ids)
        ),
    )
    first = form(client.request(TOKEN_URL, "client_credentials", {}))
    second = form(client.request(TOKEN_URL, "client_credentials", {}))
    assert first["client_assertion_type"] == ASSERTION_TYPE
    assert "client_secret" not in first
    claims = jwt.decode(
        first["client_assertion"],
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": "app",
        "sub": "app",
        "aud": TOKEN_URL,
        "iat": 1_700_000_000,
        "exp": 1_700_000_060,
        "jti": "jti-1",
    }
    later = jwt.decode(second["client_assertion"], options={"verify_signature": False})
    assert (later["jti"], later["iat"]) == ("jti-2", 1_700_000_001)


def test_private_key_jwt_puts_key_id_in_header_and_signs_es256_when_key_is_ec_jwk() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    signer = load_private_key(jwk, key_id="k-7")
    token = signer.sign({"a": 1})
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k-7", "typ": "JWT"}
    assert jwt.decode(token, key.public_key(), algorithms=["ES256"]) == {"a": 1}
    assert load_private_key(json.dumps({**jwk, "kid": "from-jwk"})).key_id == "from-jwk"


def test_client_secret_jwt_signs_hs256_with_secret_and_never_sends_it() -> None:
    client = client_from("app", SECRET, "client_secret_jwt", "form")
    body = client.request(TOKEN_URL, "client_credentials", {}).body.decode()
    assert SECRET not in body
    assertion = parse_qs(body)["client_assertion"][0]
    claims = jwt.decode(assertion, SECRET, algorithms=["HS256"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "app"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", "PEM"),
        ('{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}', "public JWK"),
        ('{"kty": "oct", "k": "c2VjcmV0", "d": "x"}', "JWK"),
        (12, "PEM text or a JWK"),
        ("{not json", "JWK JSON"),
    ],
)
def test_load_private_key_raises_configuration_error_without_key_text_when_key_is_bad(
    key: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_private_key(key)
    if isinstance(key, str):
        assert key not in str(caught.value)
    assert caught.value.__cause__ is None


def test_jwt_methods_raise_configuration_error_naming_extra_when_pyjwt_is_missing(
    monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey
) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)  # as if PyJWT were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'renewauth\[jwt\]'"):
        OAuth2ClientCredentials(
            TOKEN_URL, "app", client_auth="private_key_jwt", private_key=pem(rsa_key)
        )
    with pytest.raises(ConfigurationError, match=r"renewauth\[jwt\]"):
        OAuth2ClientCredentials(TOKEN_URL, "app", SECRET, client_auth="client_secret_jwt")


def test_client_auth_raises_configuration_error_when_its_credential_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="needs private_key="):
        OAuth2ClientCredentials(TOKEN_URL, "app", client_auth="private_key_jwt")
    with pytest.raises(ConfigurationError, match="client_secret="):
        OAuth2ClientCredentials(TOKEN_URL, "app", client_auth="client_secret_jwt")
    with pytest.raises(ConfigurationError, match="needs cert="):
        OAuth2ClientCredentials(TOKEN_URL, "app", client_auth="tls_client_auth")
    with pytest.raises(ConfigurationError, match="one of"):
        OAuth2ClientCredentials(TOKEN_URL, "app", SECRET, client_auth="digest")  # type: ignore[arg-type]


def test_repr_and_identity_hide_private_key_when_objects_differ_only_by_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    one = OAuth2ClientCredentials(
        TOKEN_URL, "app", client_auth="private_key_jwt", private_key=pem(rsa_key)
    )
    two = OAuth2ClientCredentials(
        TOKEN_URL, "app", client_auth="private_key_jwt", private_key=pem(other)
    )
    assert "PRIVATE" not in repr(one) + repr(one._manager.grant)
    assert one._manager.key != two._manager.key  # another key: another cache entry


def test_jwt_bearer_grant_sends_signed_assertion_without_client_auth_when_fetched() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    grant = JwtBearerGrant(
        token_url=TOKEN_URL,
        issuer="svc@example.com",
        subject="user-1",
        assertion=AssertionMaker(
            signer=load_private_key(pem(key), key_id="k1"),
            clock=lambda: 1_700_000_000.5,
            new_id=lambda: "jti-x",
        ),
        scope="api",
    )
    request = next(grant.fetch(None))
    fields = form(request)
    assert fields.keys() == {"grant_type", "assertion", "scope"}
    assert fields["grant_type"] == JWT_BEARER
    claims = jwt.decode(
        fields["assertion"],
        key.public_key(),
        algorithms=["ES256"],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": "svc@example.com",
        "sub": "user-1",
        "aud": TOKEN_URL,
        "iat": 1_700_000_000,
        "exp": 1_700_000_060,
        "jti": "jti-x",
    }
    auth = OAuth2JwtBearer(TOKEN_URL, issuer="svc", subject="u", private_key=pem(key))
    assert "PRIVATE" not in repr(auth)


# --- a retried token call signs again: a jti is good for one call ----------------------------


def _jti(assertion: str) -> str:
    return str(jwt.decode(assertion, options={"verify_signature": False})["jti"])


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt", "jwt_bearer", "dpop"])
@pytest.mark.parametrize("failure", [503, 429])
def test_token_call_retried_after_5xx_or_429_carries_new_assertion_and_proof(
    method: str, failure: int, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Servers keep the jti of every client assertion and DPoP proof they accepted or refused
    # (RFC 7523 §3, RFC 9449 §11.1): a retry that resends the same bytes is a replay.
    with FakeOAuth2Provider() as fake:
        options: dict[str, Any] = {"store": MemoryStore()}
        auth: TokenAuth
        if method == "jwt_bearer":
            auth = OAuth2JwtBearer(
                fake.token_url, issuer="svc", subject="svc", private_key=pem(rsa_key), **options
            )
        elif method == "dpop":
            auth = OAuth2ClientCredentials(fake.token_url, "svc", SECRET, dpop=True, **options)
        else:
            auth = OAuth2ClientCredentials(
                fake.token_url,
                "svc",
                SECRET if method == "client_secret_jwt" else None,
                client_auth=method,  # type: ignore[arg-type]
                private_key=pem(rsa_key) if method == "private_key_jwt" else None,
                **options,
            )
        fake.fail_token_requests(failure, times=3)  # every try of the one renewal

        with pytest.raises(TokenEndpointUnavailable):
            auth.get_token()

        calls = fake.recent_token_requests
        assert len(calls) == 3  # the first try and the two retries
        if method == "dpop":
            signed = [call.headers["dpop"] for call in calls]
            assert all(call.params == calls[0].params for call in calls)  # the same grant
        else:
            field = "assertion" if method == "jwt_bearer" else "client_assertion"
            signed = [call.params[field] for call in calls]
        assert len({_jti(value) for value in signed}) == 3


def test_async_token_call_retried_after_503_carries_new_assertion_and_proof(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    with FakeOAuth2Provider() as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url,
            "svc",
            client_auth="private_key_jwt",
            private_key=pem(rsa_key),
            dpop=True,
            store=MemoryStore(),
        )
        fake.fail_token_requests(503, times=3)

        with pytest.raises(TokenEndpointUnavailable):
            asyncio.run(auth.aget_token())

        calls = fake.recent_token_requests
        assert len(calls) == 3
        assert len({_jti(call.params["client_assertion"]) for call in calls}) == 3
        assert len({_jti(call.headers["dpop"]) for call in calls}) == 3


def test_dpop_nonce_retry_carries_new_client_assertion_and_the_nonce(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    with FakeOAuth2Provider(token_type="DPoP", clients={"svc": None}) as fake:
        auth = OAuth2Password(  # the fake lets a public client use the password grant only
            fake.token_url,
            "svc",
            "alice",
            "alice-password",
            client_auth="private_key_jwt",
            private_key=pem(rsa_key),
            dpop=True,
            store=MemoryStore(),
        )
        refusal = json.dumps({"error": "use_dpop_nonce", "error_description": "nonce"})
        fake.fail_token_requests(
            400,
            body=refusal.encode(),
            headers={"DPoP-Nonce": "n-1", "Content-Type": "application/json"},
        )

        assert auth.get_token().token_type == "DPoP"

        first, second = fake.recent_token_requests
        assert _jti(first.params["client_assertion"]) != _jti(second.params["client_assertion"])
        assert _jti(first.headers["dpop"]) != _jti(second.headers["dpop"])
        proof = jwt.decode(second.headers["dpop"], options={"verify_signature": False})
        assert proof["nonce"] == "n-1"
