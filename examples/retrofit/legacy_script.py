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
    statuses = [
        requests.get(url, timeout=10).status_code,
        session.get(url, timeout=10).status_code,
        httpx.get(url).status_code,
    ]
    print("legacy script got:", statuses)
    sys.exit(0 if statuses == [200, 200, 200] else 1)


if __name__ == "__main__":
    main()
