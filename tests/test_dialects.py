"""Every provider's parser under arbitrary answers: a token or a typed error, nothing else."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from renewauth import AuthError, MemoryStore, Token
from renewauth.flows import Grant, TokenResponse
from renewauth.providers import Keycloak, OrderCloud, Shopware, VanMarcke, Vendorlink
from renewauth.providers._dialects import (
    read_ordercloud_error,
    read_shopware_error,
    shopware_throttle_seconds,
)

URL = "https://api.example.com/oauth/token"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=10,
)
vendor_keys = st.sampled_from(
    [
        "access_token",
        "accessToken",
        "renewalToken",
        "hostname",
        "expires_in",
        "refresh_token",
        "error",
        "error_description",
        "Errors",
        "errors",
        "ErrorCode",
        "Message",
        "code",
        "detail",
        "meta",
        "parameters",
        "seconds",
        "token_type",
        "userId",
    ]
)
vendor_objects = st.dictionaries(vendor_keys, json_values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=120),
    vendor_objects.map(lambda data: json.dumps(data).encode()),
    st.lists(vendor_objects, max_size=2).map(lambda items: json.dumps({"errors": items}).encode()),
    st.lists(vendor_objects, max_size=2).map(lambda items: json.dumps({"Errors": items}).encode()),
)
statuses = st.sampled_from([200, 201, 400, 401, 403, 404, 429, 500])


def answer(status: int, body: bytes) -> TokenResponse:
    return TokenResponse(
        status=status,
        headers={"content-type": "application/json"},
        body=body,
        url=URL,
        sent_at=1_800_000_000.0,
        received_at=1_800_000_000.0,
    )


@given(status=statuses, body=bodies)
def test_vendor_error_readers_never_raise(status: int, body: bytes) -> None:
    response = answer(status, body)
    for reader in (read_ordercloud_error, read_shopware_error):
        error, description = reader(response)
        assert error is None or isinstance(error, str)
        assert description is None or isinstance(description, str)
    seconds = shopware_throttle_seconds(response)
    assert seconds is None or seconds >= 0


def grants() -> list[Grant]:
    options = {"store": MemoryStore()}
    auths = [
        Keycloak("https://idp.example.com", "r", client_id="c", refresh_token="R", **options),  # type: ignore[arg-type]
        OrderCloud("c", client_secret="s", username="u", password="p", **options),  # type: ignore[arg-type]
        OrderCloud("c", client_secret="s", **options),  # type: ignore[arg-type]
        Shopware("https://shop.example.com", username="u", password="p", **options),  # type: ignore[arg-type]
        Shopware("https://shop.example.com", client_id="k", client_secret="s", **options),  # type: ignore[arg-type]
        Vendorlink("u", "p", base_url="https://app.vendorlink.nl", **options),  # type: ignore[arg-type]
        VanMarcke("u", "p", client_id="c", api_key="k", **options),  # type: ignore[arg-type]
    ]
    return [auth._manager.grant for auth in auths]


GRANTS = grants()
CURRENT = Token(access_token="old", refresh_token="R1", issued_at=0.0, expires_at=1.0)


@given(
    index=st.integers(0, len(GRANTS) - 1),
    renewing=st.booleans(),
    answers=st.lists(st.tuples(statuses, bodies), min_size=3, max_size=3),
)
def test_provider_flows_give_a_token_or_a_typed_error_for_any_answers(
    index: int, renewing: bool, answers: list[tuple[int, bytes]]
) -> None:
    flow = GRANTS[index].fetch(CURRENT if renewing else None)
    try:
        request = next(flow)
        for status, body in answers:
            assert request.url.startswith("https://")
            request = flow.send(answer(status, body))
    except StopIteration as done:
        token = done.value
        assert isinstance(token, Token)
        assert token.access_token
    except AuthError as exc:
        assert "R1" not in str(exc)
        assert str(exc)
    else:
        raise AssertionError("a flow asked for a fourth request")  # at most three per renewal
