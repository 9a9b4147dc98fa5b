"""Shopware 6 Admin API: an integration or an admin user; refresh tokens rotate.

Runs against the embedded fake unless SHOPWARE_URL, SHOPWARE_ACCESS_KEY and
SHOPWARE_SECRET (an integration) are set:

    python examples/shopware_admin.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx

from renewauth.providers import Shopware
from renewauth.testing import FakeShopware


async def main() -> None:
    with contextlib.ExitStack() as stack:
        if "SHOPWARE_URL" in os.environ:
            base_url = os.environ["SHOPWARE_URL"]
            auth = Shopware(
                base_url,
                client_id=os.environ["SHOPWARE_ACCESS_KEY"],
                client_secret=os.environ["SHOPWARE_SECRET"],
            )
        else:
            fake = stack.enter_context(FakeShopware())
            base_url = fake.base_url
            auth = Shopware(base_url, username="admin", password="shopware-password")

        async with httpx.AsyncClient(auth=auth) as client:
            reply = await client.get(f"{base_url}/api/_info/version")
            print("GET /api/_info/version ->", reply.status_code)


if __name__ == "__main__":
    asyncio.run(main())
