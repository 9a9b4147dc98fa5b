"""OrderCloud: a buyer user's token (password grant), renewed for you.

Runs against the embedded fake unless ORDERCLOUD_AUTH_URL, ORDERCLOUD_CLIENT_ID,
ORDERCLOUD_USERNAME, ORDERCLOUD_PASSWORD and API_URL are set:

    python examples/ordercloud.py
"""

from __future__ import annotations

import contextlib
import os

import httpx

from renewauth.providers import OrderCloud
from renewauth.testing import FakeOrderCloud


def main() -> None:
    with contextlib.ExitStack() as stack:
        if "ORDERCLOUD_CLIENT_ID" in os.environ:
            auth = OrderCloud(
                os.environ["ORDERCLOUD_CLIENT_ID"],
                username=os.environ["ORDERCLOUD_USERNAME"],
                password=os.environ["ORDERCLOUD_PASSWORD"],
                scope=("Shopper", "MeAdmin"),
                auth_url=os.environ.get("ORDERCLOUD_AUTH_URL", "https://sandboxapi.ordercloud.io"),
            )
            api_url = os.environ["API_URL"]
        else:
            fake = stack.enter_context(FakeOrderCloud())
            auth = OrderCloud(
                "oc-client",
                client_secret="oc-secret",
                username="buyer01",
                password="buyer-password",
                auth_url=fake.auth_url,
            )
            api_url = fake.api_url + "me"

        with httpx.Client(auth=auth) as client:
            print("GET", api_url, "->", client.get(api_url).status_code)


if __name__ == "__main__":
    main()
