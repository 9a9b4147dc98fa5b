"""Fakes on loopback for testing code that uses renewauth, or any OAuth2 client.

``FakeOAuth2Provider`` is an OAuth2 token endpoint and a bearer-protected API in one server on
``127.0.0.1``. It counts every call and can expire, revoke, rotate, fail or hold tokens on
command, so a test asserts what the client did instead of mocking it. Use it as a context
manager::

    from renewauth.testing import FakeOAuth2Provider


    class ManualClock:
        def __init__(self) -> None:
            self.now = 1_700_000_000.0

        def __call__(self) -> float:
            return self.now


    def test_client_renews_after_expiry() -> None:
        clock = ManualClock()
        with FakeOAuth2Provider(token_lifetime=60, clock=clock) as fake:
            client = make_my_client(token_url=fake.token_url)  # your code under test
            client.get(fake.api_url + "items")
            clock.now += 61  # the fake now rejects the first token
            client.get(fake.api_url + "items")
        assert fake.tokens_issued == 2

With renewauth installed, pytest also gets the ``oauth2_fake`` fixture: a started provider with
default settings (client ``client-id``/``client-secret``, user ``alice``/``alice-password``,
one-hour tokens), stopped after the test::

    def test_client_fetches_one_token(oauth2_fake: FakeOAuth2Provider) -> None:
        client = make_my_client(token_url=oauth2_fake.token_url)
        for _ in range(3):
            client.get(oauth2_fake.api_url)
        assert oauth2_fake.token_calls == 1

Build your own ``FakeOAuth2Provider(...)`` for other settings.

One fake per vendor API that renewauth supports speaks that vendor's dialect, with the same
lifecycle, counters and controls as ``FakeOAuth2Provider`` (fixture name in brackets):

- ``FakeKeycloak`` (``keycloak_fake``): a realm's token endpoint, ``/auth`` or not, offline tokens.
- ``FakeOrderCloud`` (``ordercloud_fake``): anonymous tokens, ``Errors[]`` bodies, lockout.
- ``FakeShopware`` (``shopware_fake``): Admin API, rotating refresh tokens, 429 throttling.
- ``FakeVendorlink`` (``vendorlink_fake``): Login, ExtendToken, reassignment to a second server.
- ``FakeVanMarcke`` (``vanmarcke_fake``): ``x-api-key`` on every call, the service-users API,
  an end user's login page (authorization code with PKCE).
"""

from renewauth.testing._keycloak import FakeKeycloak
from renewauth.testing._oauth2 import FakeOAuth2Provider
from renewauth.testing._ordercloud import FakeOrderCloud
from renewauth.testing._shopware import FakeShopware
from renewauth.testing._vanmarcke import FakeVanMarcke
from renewauth.testing._vendorlink import FakeVendorlink
from renewauth.testing._wire import RecordedTokenRequest

__all__ = [
    "FakeKeycloak",
    "FakeOAuth2Provider",
    "FakeOrderCloud",
    "FakeShopware",
    "FakeVanMarcke",
    "FakeVendorlink",
    "RecordedTokenRequest",
]
