"""Generic OAuth 2: the same auth object on requests, httpx and httpx async, and on httpx2 and
aiohttp when they are installed (`pip install 'renewauth[httpx2,aiohttp]'`).

Runs against the embedded fake provider unless TOKEN_URL, CLIENT_ID, CLIENT_SECRET and
API_URL are set in the environment:

    python examples/oauth2_generic.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx
import requests

from renewauth import OAuth2ClientCredentials
from renewauth.testing import FakeOAuth2Provider


def main() -> None:
    with contextlib.ExitStack() as stack:
        if "TOKEN_URL" in os.environ:
            token_url, api_url = os.environ["TOKEN_URL"], os.environ["API_URL"]
            client_id, client_secret = os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]
        else:
            fake = stack.enter_context(FakeOAuth2Provider(token_lifetime=60))
            token_url, api_url = fake.token_url, fake.api_url
            client_id, client_secret = "client-id", "client-secret"

        auth = OAuth2ClientCredentials(token_url, client_id, client_secret, scope="read")

        session = requests.Session()
        session.auth = auth
        print("requests:", session.get(api_url + "orders", timeout=10).status_code)

        with httpx.Client(auth=auth) as client:
            print("httpx:", client.get(api_url + "orders").status_code)

        async def fetch() -> int:
            async with httpx.AsyncClient(auth=auth) as client:
                return (await client.get(api_url + "orders")).status_code

        print("httpx async:", asyncio.run(fetch()))
        optional_clients(auth, api_url + "orders")


def optional_clients(auth: OAuth2ClientCredentials, url: str) -> None:
    """httpx2 and aiohttp take the very same object, when the program has them."""
    try:
        import httpx2
    except ImportError:
        print("httpx2: not installed")
    else:
        with httpx2.Client(auth=auth) as client:
            print("httpx2:", client.get(url).status_code)
    try:
        import aiohttp
    except ImportError:
        print("aiohttp: not installed")
        return

    async def fetch() -> int:
        async with (
            aiohttp.ClientSession(middlewares=(auth,)) as session,
            session.get(url) as response,
        ):
            return response.status

    print("aiohttp:", asyncio.run(fetch()))


if __name__ == "__main__":
    main()
