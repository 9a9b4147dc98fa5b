"""An end user's browser for FakeVanMarcke's login page, run as `BROWSER` with a URL.

It does over HTTP what a browser and a person do: opens the login page, posts the form with
the name and password of `VANMARCKE_BROWSER_USER` / `VANMARCKE_BROWSER_PASSWORD`, and follows
the page's redirect to the loopback callback renewauth serves. Exits 0 when the callback
answered 200; prints what went wrong on stderr and exits 1 otherwise. It prints no code.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def main(url: str) -> int:
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=10) as page:  # the login form
        if page.status != 200 or b"<form" not in page.read():
            print(f"the login page answered {page.status} without a form", file=sys.stderr)
            return 1
    form = {
        **dict(parse_qsl(urlsplit(url).query)),
        "username": os.environ["VANMARCKE_BROWSER_USER"],
        "password": os.environ["VANMARCKE_BROWSER_PASSWORD"],
    }
    action = url.split("?", 1)[0]  # the form posts back to the page (the fake's loopback http)
    posted = urllib.request.Request(action, data=urlencode(form).encode())  # noqa: S310
    try:
        with opener.open(posted, timeout=10) as page:
            print(f"the login was not accepted ({page.status})", file=sys.stderr)
            return 1
    except urllib.error.HTTPError as answer:
        location = answer.headers.get("Location")
        answer.close()
        if answer.code != 302 or not location:
            print(f"the login page answered {answer.code}", file=sys.stderr)
            return 1
    with urllib.request.urlopen(location, timeout=10) as callback:  # noqa: S310 - the loopback
        return 0 if callback.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
