"""Keycloak: a developer portal's technical user (client id, secret and refresh token).

Runs against the embedded fake unless KEYCLOAK_TOKEN_URL, KEYCLOAK_CLIENT_ID,
KEYCLOAK_CLIENT_SECRET, KEYCLOAK_REFRESH_TOKEN and API_URL are set:

    python examples/keycloak_technical_user.py
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import requests

from renewauth import FileStore, Token
from renewauth.providers import Keycloak
from renewauth.testing import FakeKeycloak


def remember(token: Token) -> None:
    # The refresh token is the technical user's only credential: every rotated one is kept
    # on disk for you (renewauth's durable default, or the store= you pass); this is where
    # you would also copy it elsewhere (a secrets manager).
    print("new token; refresh token rotated:", token.refresh_token is not None)


def main() -> None:
    with contextlib.ExitStack() as stack:
        if "KEYCLOAK_TOKEN_URL" in os.environ:
            # No store=: the chain is kept in renewauth's state directory (an INFO line says
            # where), so the next run continues from the refresh token this one got.
            auth = Keycloak.from_token_url(
                os.environ["KEYCLOAK_TOKEN_URL"],
                client_id=os.environ["KEYCLOAK_CLIENT_ID"],
                client_secret=os.environ["KEYCLOAK_CLIENT_SECRET"],
                refresh_token=os.environ["KEYCLOAK_REFRESH_TOKEN"],
                on_token=remember,
            )
            api_url = os.environ["API_URL"]
        else:
            fake = stack.enter_context(FakeKeycloak(rotate_refresh_tokens=True))
            # A fake's refresh token dies with the fake: keep its chain in a throw-away
            # directory rather than in your state directory.
            scratch = stack.enter_context(tempfile.TemporaryDirectory())
            auth = Keycloak(
                fake.server_url,
                "portal",
                client_id="portal-client",
                client_secret="portal-secret",
                refresh_token=fake.issue_refresh_token(),
                on_token=remember,
                store=FileStore(scratch),
            )
            api_url = fake.api_url + "apps"

        session = requests.Session()
        session.auth = auth
        print("GET", api_url, "->", session.get(api_url, timeout=10).status_code)


if __name__ == "__main__":
    main()
