"""Vendorlink (VL_API): Login, a possible server reassignment, ExtendToken.

API calls addressed to base_url go to the server Vendorlink assigned at login. Runs against
the embedded fake (which reassigns) unless VENDORLINK_URL, VENDORLINK_USER and
VENDORLINK_PASSWORD are set:

    python examples/vendorlink.py
"""

from __future__ import annotations

import contextlib
import os

import requests

from renewauth.providers import Vendorlink
from renewauth.testing import FakeVendorlink


def main() -> None:
    with contextlib.ExitStack() as stack:
        if "VENDORLINK_URL" in os.environ:
            base_url = os.environ["VENDORLINK_URL"]
            auth = Vendorlink(
                os.environ["VENDORLINK_USER"], os.environ["VENDORLINK_PASSWORD"], base_url=base_url
            )
        else:
            fake = stack.enter_context(FakeVendorlink(reassign=True))
            base_url = fake.base_url
            auth = Vendorlink("demo", "demo-password", base_url=base_url)

        session = requests.Session()
        session.auth = auth
        reply = session.get(f"{base_url}/API/tenders", timeout=10)
        print("GET /API/tenders ->", reply.status_code, "answered by", reply.url.split("/")[2])


if __name__ == "__main__":
    main()
