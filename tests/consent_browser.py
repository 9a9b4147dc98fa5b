"""A person's browser for the first-consent tests, run as `BROWSER` (or by a test) with a URL.

It does over HTTP what a browser and a person do: follows redirects with cookies, logs in as
`alice` and consents on the interaction pages of tests/oidc_consent_server.mjs, submits the
device flow's user-code forms, and ends at the loopback callback renewauth serves. What it
saw goes, one JSON object per line, to the file `CONSENT_BROWSER_LOG` names.

`CONSENT_BROWSER_MODE`: `allow` (the default), `deny` (declines at the first page: the
interaction's deny, or the device confirmation's abort) or `wrong-state-first` (first sends
the loopback a callback with a code of its own and a wrong `state`, then allows).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

STOLEN_CODE = "code-an-attacker-injected"


class _Forms(HTMLParser):
    """The first form of a page: its action and hidden inputs; and the page's first h1."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.heading = ""
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {key: value or "" for key, value in attrs}
        if tag == "form" and self.action is None:
            self.action = named.get("action", "")
        elif tag == "input" and named.get("type") == "hidden" and "name" in named:
            self.fields.setdefault(named["name"], named.get("value", ""))
        elif tag == "h1":
            self._in_h1 = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_h1 and not self.heading:
            self.heading = data.strip()


class Browser:
    def __init__(self, log: str | None) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.log = log

    def note(self, **event: object) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as file:
                file.write(json.dumps(event) + "\n")

    def open(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = None if form is None else urlencode(form).encode()
        try:
            with self.opener.open(url, data=data, timeout=30) as response:
                return response.status, response.url, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.url, error.read().decode(errors="replace")

    def interact(self, status: int, url: str, page: str, deny: bool) -> tuple[int, str, str]:
        """Answer interaction pages until the server sends the browser elsewhere."""
        for _ in range(6):
            if "/interaction/" not in urlsplit(url).path:
                break
            forms = _Forms()
            forms.feed(page)
            if deny:
                answer = {"deny": "yes"}
            elif forms.heading == "login":
                answer = {"login": "alice"}
            else:
                answer = {"consent": "yes"}
            self.note(step="interaction", prompt=forms.heading, answer=sorted(answer))
            status, url, page = self.open(url, answer)
        return status, url, page

    def authorize(self, url: str, mode: str) -> None:
        query = parse_qs(urlsplit(url).query)
        redirect_uri = query["redirect_uri"][0]
        if mode == "wrong-state-first":
            wrong = f"{redirect_uri}?{urlencode({'code': STOLEN_CODE, 'state': 'not-it'})}"
            status, _, _ = self.open(wrong)
            self.note(step="wrong-state", status=status)
        status, at, page = self.open(url)
        status, at, page = self.interact(status, at, page, deny=mode == "deny")
        self.note(step="callback", status=status, loopback=at.startswith(redirect_uri))

    def device(self, url: str, mode: str) -> None:
        status, at, page = self.open(url)  # a form that posts the user code (with its xsrf)
        for step in ("code", "confirm"):
            forms = _Forms()
            forms.feed(page)
            fields = dict(forms.fields)
            if step == "confirm" and mode == "deny":
                fields["abort"] = "yes"
            status, at, page = self.open(urljoin(at, forms.action or ""), fields)
            self.note(step=step, status=status)
        status, at, page = self.interact(status, at, page, deny=False)
        self.note(step="done", status=status, at=urlsplit(at).path)


def main() -> None:
    url = sys.argv[1]
    mode = os.environ.get("CONSENT_BROWSER_MODE", "allow")
    browser = Browser(os.environ.get("CONSENT_BROWSER_LOG"))
    if "/device" in urlsplit(url).path:
        browser.device(url, mode)
    else:
        browser.authorize(url, mode)


if __name__ == "__main__":
    main()
