"""Van Marcke: a service user's token, with x-api-key on every request.

Runs against the embedded fake unless VANMARCKE_USER, VANMARCKE_PASSWORD,
VANMARCKE_CLIENT_ID and VANMARCKE_API_KEY are set:

    python examples/vanmarcke.py
"""

from __future__ import annotations

import contextlib
import os

import requests

from renewauth.providers import VanMarcke
from renewauth.testing import FakeVanMarcke


def main() -> None:
    with contextlib.ExitStack() as stack:
        if "VANMARCKE_USER" in os.environ:
            auth = VanMarcke(
                os.environ["VANMARCKE_USER"],
                os.environ["VANMARCKE_PASSWORD"],
                client_id=os.environ["VANMARCKE_CLIENT_ID"],
                api_key=os.environ["VANMARCKE_API_KEY"],
            )
            api_url = "https://api.vanmarcke.com/v2/products"
        else:
            fake = stack.enter_context(FakeVanMarcke())
            auth = VanMarcke(
                "API-APP1-P123456",
                "service-password",
                client_id="vm-client",
                client_secret="vm-secret",
                api_key="test-api-key",
                token_url=fake.token_url,
            )
            api_url = fake.api_url + "products"

        session = requests.Session()
        session.auth = auth
        print("GET", api_url, "->", session.get(api_url, timeout=10).status_code)


if __name__ == "__main__":
    main()
