"""Bad input becomes a token or a typed error, never an untyped one or a leak; auth objects
cross process boundaries by their configuration."""

from __future__ import annotations

import base64
import json
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from renewauth import (
    AuthError,
    ConfigurationError,
    FileStore,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    RedisStore,
    StoreError,
    Token,
    TokenRequestError,
)
from renewauth.answers import parse_token_response
from renewauth.flows import TokenResponse
from renewauth.providers import Keycloak
from renewauth.stores import default_store
from renewauth.testing import FakeOAuth2Provider

from .helpers import SyncOnlyStore
from .redis_server import free_port

SENT_AT = 1_700_000_000.0
IDP = "https://idp.example.com/oauth/token"
HUGE = 10**400  # past float's range: float(HUGE) raises OverflowError


def _jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def _answer(fields: dict[str, object]) -> TokenResponse:
    return TokenResponse(
        status=200,
        headers={"content-type": "application/json"},
        body=json.dumps(fields).encode(),
        url="https://idp.example.com/token",
        sent_at=SENT_AT,
        received_at=SENT_AT,
    )


# --- numbers past float's range ------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"access_token": "a", "expires_in": HUGE},
        {"access_token": "a", "expires_in": -HUGE},
        {"access_token": _jwt({"exp": HUGE})},
        {"access_token": "a", "refresh_token": "r", "refresh_expires_in": HUGE},
        {"access_token": "a", "expires_in": "1e400"},
    ],
    ids=["expires_in", "negative", "jwt-exp", "refresh_expires_in", "string"],
)
def test_parser_turns_numbers_past_float_range_into_a_token(fields: dict[str, object]) -> None:
    token = parse_token_response(_answer(fields))
    assert token.access_token
    assert token.expires_at is None or token.expires_at >= SENT_AT
    assert token.refresh_expires_at is None


@given(
    expires_in=st.integers(min_value=-(10**500), max_value=10**500),
    exp=st.integers(min_value=-(10**500), max_value=10**500),
    refresh=st.integers(min_value=-(10**500), max_value=10**500),
)
def test_parser_gives_token_or_typed_error_for_any_integer(
    expires_in: int, exp: int, refresh: int
) -> None:
    fields = {
        "access_token": _jwt({"exp": exp}),
        "expires_in": expires_in,
        "refresh_token": "r",
        "refresh_expires_in": refresh,
    }
    try:
        token = parse_token_response(_answer(fields))
    except AuthError:
        return
    assert token.access_token
    Token.from_dict(token.to_dict())  # and it survives a store round trip


def test_stored_token_with_a_number_past_float_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        Token.from_dict({"access_token": "a", "expires_at": HUGE})


def test_token_endpoint_answering_a_huge_expires_in_still_gives_a_token() -> None:
    from renewauth.testing._wire import json_reply

    with FakeOAuth2Provider() as fake:
        fake.fail_token_requests(
            200,
            body=json.dumps({"access_token": "a", "expires_in": HUGE}).encode(),
            headers={"Content-Type": "application/json"},
        )
        auth = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=MemoryStore()
        )
        assert auth.get_token().access_token == "a"
        assert json_reply  # the fake's own helpers stay importable


# --- Redis URLs whose password ends the host part ------------------------------------------


@pytest.mark.parametrize("password", ["pa/ss-hunter2", "pa#ss-hunter2", "pa?ss-hunter2"])
def test_redis_url_with_a_raw_special_character_is_refused_without_the_password(
    password: str,
) -> None:
    url = f"redis://user:{password}@127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError, match="percent-encode") as caught:
        RedisStore(url)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or "hunter2" not in str(caught.value.__context__)


def test_redis_url_with_an_encoded_password_never_shows_it() -> None:
    store = RedisStore(f"redis://user:pa%2Fss%23hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in repr(store)
    assert "%2F" not in repr(store)
    with pytest.raises(StoreError) as caught:
        store.get("abc123")
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


# --- pickling by configuration ---------------------------------------------------------------


def test_auth_object_pickles_by_configuration_and_shares_the_file_store(tmp_path: Path) -> None:
    with FakeOAuth2Provider() as fake:
        auth = OAuth2Password(
            fake.token_url,
            "client-id",
            "alice",
            "alice-password",
            client_secret="client-secret",
            store=FileStore(tmp_path / "tokens"),
        )
        token = auth.get_token()
        copy = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own bytes
        assert copy is not auth
        assert copy.token is None  # no token travels in the pickle
        assert repr(copy) == repr(auth)
        assert copy.get_token() == token  # read from the shared store
        assert fake.token_calls == 1


def test_auth_with_the_default_store_pickles_to_the_default_store_there() -> None:
    auth = Keycloak(
        "https://idp.example.com", "demo", client_id="portal", client_secret="portal-secret"
    )
    copy = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own bytes
    assert copy._manager.store is default_store()
    assert copy._manager.key == auth._manager.key


def test_redis_store_built_from_a_client_refuses_pickling_naming_the_fix() -> None:
    import redis

    store = RedisStore(redis.Redis(host="127.0.0.1", port=free_port()))
    with pytest.raises(TypeError, match="from a URL"):
        pickle.dumps(store)


def _fetch_in_worker(session: requests.Session, url: str) -> int:
    return session.get(url, timeout=20).status_code


def test_session_with_auth_travels_to_a_spawn_worker_and_shares_the_store(
    tmp_path: Path,
) -> None:
    with FakeOAuth2Provider() as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url,
            "client-id",
            "client-secret",
            store=FileStore(tmp_path / "tokens"),
        )
        auth.get_token()
        session = requests.Session()
        session.auth = auth
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            status = pool.submit(_fetch_in_worker, session, fake.api_url).result(timeout=120)
        assert status == 200
        assert fake.token_calls == 1  # the worker found the token in the shared store
        assert fake.api_ok == 1


def test_unpicklable_option_raises_a_pickling_error_not_a_leak() -> None:
    secret = "client-secret"
    auth = OAuth2ClientCredentials(
        "https://idp.example.com/token",
        "client-id",
        secret,
        store=MemoryStore(),
        on_token=lambda token: None,
    )
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as caught:
        pickle.dumps(auth)
    assert secret not in str(caught.value)
    assert not isinstance(caught.value, TokenRequestError)


# --- a store of the user's own that is not one -----------------------------------------------


def test_store_missing_methods_is_refused_naming_each_missing_method() -> None:
    with pytest.raises(ConfigurationError) as caught:
        OAuth2ClientCredentials(IDP, "app", "s3", store=SyncOnlyStore())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "got SyncOnlyStore, whose class lacks aget, aset, adelete, alock" in message
    assert "define each method on the class" in message
    # Something that is no store at all gets the short message.
    with pytest.raises(ConfigurationError, match=r"got int$"):
        OAuth2ClientCredentials(IDP, "app", "s3", store=42)  # type: ignore[arg-type]


def test_store_method_list_in_the_message_is_the_protocols_eight_methods() -> None:
    from renewauth import _arguments

    # Read off TokenStore itself: nothing of typing's protocol machinery, nothing missing.
    assert _arguments._STORE_METHODS == (
        "get", "set", "delete", "lock", "aget", "aset", "adelete", "alock",
    )  # fmt: skip
