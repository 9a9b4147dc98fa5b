"""A legacy script that knows nothing about tokens: it calls the API with no auth at all.

Under `renewauth run --config renewauth.toml -- python legacy_script.py URL`, every call below
carries a renewing token, though not a line here mentions one.
"""

import sys

import httpx
import requests


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "https://api.example.com/v1/orders"
    session = requests.Session()
    sdk_session = requests.Session()
    sdk_session.auth = lambda request: request  # as SDKs do, only to keep off ~/.netrc
    pasted = {"Authorization": "Bearer pasted-in-last-month"}  # long expired
    statuses = [
        requests.get(url, timeout=10).status_code,
        session.get(url, timeout=10).status_code,
        httpx.get(url).status_code,
        sdk_session.get(url, timeout=10).status_code,
        requests.get(url, headers=pasted, timeout=10).status_code,
    ]
    print("legacy script got:", statuses)
    sys.exit(0 if statuses == [200] * 5 else 1)


if __name__ == "__main__":
    main()
