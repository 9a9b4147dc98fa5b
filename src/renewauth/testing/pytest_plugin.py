"""The pytest plugin renewauth registers (entry point ``pytest11``): the ``oauth2_fake`` fixture.

Only fixtures live here; the fake itself lives in ``renewauth.testing._oauth2``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from renewauth.testing._oauth2 import FakeOAuth2Provider


@pytest.fixture
def oauth2_fake() -> Iterator[FakeOAuth2Provider]:
    """A started ``FakeOAuth2Provider`` with default settings, stopped after the test.

    Yields:
        The running provider; read ``token_url`` and ``api_url`` from it.
    """
    with FakeOAuth2Provider() as fake:
        yield fake
