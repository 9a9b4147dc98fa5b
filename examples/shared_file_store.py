"""Two processes, one FileStore: one renewal for both, rotated refresh tokens never lost.

Each process keeps its own copy of the token and touches the files only when that copy needs
renewal; under the store's lock it reads the file again and adopts the token the other
process has just written instead of renewing a second time.

    python examples/shared_file_store.py
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time

import requests

from renewauth import FileStore, OAuth2Password
from renewauth.testing import FakeOAuth2Provider


def worker(name: str, token_url: str, api_url: str, directory: str, until: float) -> None:
    auth = OAuth2Password(
        token_url,
        "client-id",
        "alice",
        "alice-password",
        client_secret="client-secret",
        store=FileStore(directory),
        leeway=0.5,
    )
    session = requests.Session()
    session.auth = auth
    statuses = []
    while time.time() < until:
        statuses.append(session.get(api_url, timeout=10).status_code)
        time.sleep(0.05)
    print(f"{name}: {len(statuses)} requests, {statuses.count(200)} answered 200")


def main() -> None:
    with (
        FakeOAuth2Provider(token_lifetime=2.0, rotate_refresh_tokens=True) as fake,
        tempfile.TemporaryDirectory() as directory,
    ):
        until = time.time() + 5
        processes = [
            multiprocessing.Process(
                target=worker, args=(name, fake.token_url, fake.api_url, directory, until)
            )
            for name in ("first", "second")
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        print(
            f"token calls: {fake.token_calls} for ~{5 / 2.0:.1f} token lifetimes "
            f"({fake.token_calls_by_grant}); stale refresh tokens: {fake.stale_refresh_tokens}"
        )


if __name__ == "__main__":
    main()
