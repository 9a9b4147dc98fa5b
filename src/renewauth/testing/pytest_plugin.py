"""The pytest plugin renewauth registers (entry point ``pytest11``): one fixture per fake.

Only fixtures live here; the fakes live in ``renewauth.testing``. Each fixture is
function-scoped: a started fake with default settings, stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from renewauth.testing import (
    FakeKeycloak,
    FakeOAuth2Provider,
    FakeOrderCloud,
    FakeShopware,
    FakeVanMarcke,
    FakeVendorlink,
)

__all__ = [
    "keycloak_fake",
    "oauth2_fake",
    "ordercloud_fake",
    "shopware_fake",
    "vanmarcke_fake",
    "vendorlink_fake",
]


@pytest.fixture
def oauth2_fake() -> Iterator[FakeOAuth2Provider]:
    """A started ``FakeOAuth2Provider`` with default settings, stopped after the test.

    Yields:
        The running provider; read ``token_url`` and ``api_url`` from it.
    """
    with FakeOAuth2Provider() as fake:
        yield fake


@pytest.fixture
def keycloak_fake() -> Iterator[FakeKeycloak]:
    """A started ``FakeKeycloak`` (realm "portal", no ``/auth`` prefix), stopped after the test.

    Yields:
        The running fake; read ``server_url``, ``token_url`` and ``api_url`` from it.
    """
    with FakeKeycloak() as fake:
        yield fake


@pytest.fixture
def ordercloud_fake() -> Iterator[FakeOrderCloud]:
    """A started ``FakeOrderCloud`` with default settings, stopped after the test.

    Yields:
        The running fake; read ``auth_url``, ``token_url`` and ``api_url`` from it.
    """
    with FakeOrderCloud() as fake:
        yield fake


@pytest.fixture
def shopware_fake() -> Iterator[FakeShopware]:
    """A started ``FakeShopware`` with default settings, stopped after the test.

    Yields:
        The running fake; read ``base_url``, ``token_url`` and ``api_url`` from it.
    """
    with FakeShopware() as fake:
        yield fake


@pytest.fixture
def vendorlink_fake() -> Iterator[FakeVendorlink]:
    """A started ``FakeVendorlink`` (one server, no reassignment), stopped after the test.

    Yields:
        The running fake; read ``base_url``, ``login_url`` and ``api_url`` from it.
    """
    with FakeVendorlink() as fake:
        yield fake


@pytest.fixture
def vanmarcke_fake() -> Iterator[FakeVanMarcke]:
    """A started ``FakeVanMarcke`` with default settings, stopped after the test.

    Yields:
        The running fake; read ``token_url``, ``api_url`` and ``service_users_url`` from it.
    """
    with FakeVanMarcke() as fake:
        yield fake
