"""DPoP proofs and the DPoP grant wrapper, pure: a fixed clock and ids, responses by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote

import jwt
import pytest

from renewauth import MemoryStore, OAuth2ClientCredentials, Token
from renewauth.dpop import DpopGrant, DpopKey, htu_of
from renewauth.flows import TokenResponse
from renewauth.oauth2 import Client, ClientCredentialsGrant
from renewauth.testing import FakeOAuth2Provider, FakeOrderCloud, RecordedTokenRequest

from .helpers import KINDS, ManualClock, send

TOKEN_URL = "https://idp.example.com/token"


def key() -> DpopKey:
    ids = iter(f"jti-{n}" for n in range(100))
    return DpopKey(clock=lambda: 1_700_000_000.9, new_id=lambda: next(ids))


def claims_of(proof: str, dpop: DpopKey) -> dict[str, object]:
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert "d" not in header["jwk"]  # the public half only
    public = jwt.PyJWK(header["jwk"]).key
    return dict(jwt.decode(proof, public, algorithms=["ES256"], options={"verify_iat": False}))


def test_proof_names_method_url_time_id_and_token_hash_when_made_for_api_request() -> None:
    dpop = key()
    proof = dpop.proof("get", "https://API.example.com/v1/items?page=2#x", access_token="tok")
    ath = base64.urlsafe_b64encode(hashlib.sha256(b"tok").digest()).rstrip(b"=").decode()
    assert claims_of(proof, dpop) == {
        "htm": "GET",
        "htu": "https://api.example.com/v1/items",
        "iat": 1_700_000_000,
        "jti": "jti-0",
        "ath": ath,
    }
    assert claims_of(dpop.proof("GET", TOKEN_URL), dpop)["jti"] == "jti-1"
    assert "PRIVATE" not in repr(dpop)


def test_proof_carries_nonce_of_its_origin_only_when_server_sent_one() -> None:
    dpop = key()
    dpop.remember_nonce("https://api.example.com/a", "n-1")
    assert claims_of(dpop.proof("GET", "https://api.example.com/b"), dpop)["nonce"] == "n-1"
    assert "nonce" not in claims_of(dpop.proof("GET", "https://other.example.com/"), dpop)


def test_proof_carries_its_own_servers_nonce_when_token_endpoint_and_api_share_an_origin() -> None:
    dpop = key()
    dpop.remember_nonce(TOKEN_URL, "as-1", server="authorization")
    dpop.remember_nonce("https://idp.example.com/api/items", "rs-1")  # an API's answer
    token_call = claims_of(dpop.proof("POST", TOKEN_URL, server="authorization"), dpop)
    api_request = claims_of(
        dpop.proof("GET", "https://idp.example.com/api/x", access_token="t"), dpop
    )
    assert (token_call["nonce"], api_request["nonce"]) == ("as-1", "rs-1")


def test_htu_drops_query_and_fragment_when_url_has_them() -> None:
    assert htu_of("HTTPS://Host:8443/p/q?x=1#f") == "https://host:8443/p/q"


def answer(status: int, body: dict[str, object], **headers: str) -> TokenResponse:
    return TokenResponse(
        status=status,
        headers={"content-type": "application/json", **headers},
        body=json.dumps(body).encode(),
        url=TOKEN_URL,
    )


def test_grant_resends_once_with_nonce_when_token_endpoint_answers_use_dpop_nonce() -> None:
    dpop = key()
    grant = DpopGrant(
        inner=ClientCredentialsGrant(
            token_url=TOKEN_URL, client=Client(client_id="app", client_secret="s3")
        ),
        key=dpop,
    )
    flow = grant.fetch(None)
    first = next(flow)
    assert "nonce" not in claims_of(first.headers["DPoP"], dpop)
    second = flow.send(answer(400, {"error": "use_dpop_nonce"}, **{"dpop-nonce": "n-7"}))
    assert claims_of(second.headers["DPoP"], dpop)["nonce"] == "n-7"
    assert second.body == first.body
    with pytest.raises(StopIteration) as done:
        flow.send(answer(200, {"access_token": "A", "token_type": "DPoP", "expires_in": 60}))
    assert done.value.value.authorization == "DPoP A"
    assert grant.identity()[0][-1] == f"dpop:{dpop.thumbprint}"


@pytest.mark.parametrize("kind", KINDS)
def test_dpop_proof_never_follows_a_redirect_to_another_origin(kind: str) -> None:
    with FakeOAuth2Provider() as home, FakeOrderCloud() as elsewhere:
        auth = OAuth2ClientCredentials(
            home.token_url, "client-id", "client-secret", dpop=True, store=MemoryStore()
        )
        token = Token(access_token="dpop-bound", token_type="DPoP", expires_at=time.time() + 600)
        auth._manager.store.set(auth._manager.key, token)  # a DPoP token, as if issued
        here = json.loads(send(kind, auth, f"{home.base_url}/echo-headers").body)
        assert {name.lower() for name in here} >= {"dpop", "authorization"}
        target = quote(f"{elsewhere.base_url}/echo-headers", safe="")
        reply = send(kind, auth, f"{home.base_url}/redirect?to={target}")
        received = {name.lower() for name in json.loads(reply.body)}
        assert reply.status == 200
        assert "dpop" not in received
        assert "authorization" not in received


def nonce_of(call: RecordedTokenRequest) -> object:
    return jwt.decode(call.headers["dpop"], options={"verify_signature": False}).get("nonce")


def test_dpop_token_calls_carry_the_token_endpoints_nonce_when_api_on_its_origin_sends_its_own(
    kind: str, clock: ManualClock
) -> None:
    """RFC 9449 §8: after the first nonce, every token call carries the latest nonce the
    token endpoint gave, although the API on the same origin sends its own on every answer;
    use_dpop_nonce comes again only when the server changed its nonce."""
    with FakeOAuth2Provider(
        token_type="DPoP", dpop_nonces=True, token_lifetime=600, clock=clock
    ) as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url,
            "client-id",
            "client-secret",
            dpop=True,
            store=MemoryStore(),
            clock=clock,
        )
        for _ in range(4):  # the first token, then three renewals
            assert send(kind, auth, fake.api_url).status == 200
            clock.advance(600)
        fake.rotate_dpop_nonces()
        for _ in range(2):
            assert send(kind, auth, fake.api_url).status == 200
            clock.advance(600)

    nonces = [nonce_of(call) for call in fake.recent_token_requests]
    first, rotated = nonces[1], nonces[-1]
    assert nonces == [None, first, first, first, first, first, rotated, rotated]
    assert fake.token_calls - fake.tokens_issued == 2  # use_dpop_nonce: first call, rotation
    assert fake.api_unauthorized == 2  # the API's too: its first request, its rotation
