"""FakeVanMarcke's authorization endpoint (RFC 6749 §4.1, PKCE S256), driven over HTTP as a
browser drives it: GET the login page, post its form, follow the redirect to a loopback
listener of the test's own, then exchange the code at the token endpoint."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from renewauth.testing import FakeVanMarcke

from .helpers import ManualClock

CLIENT_ID, CLIENT_SECRET = "vm-client", "vm-secret"
END_USER, END_USER_PASSWORD = "enduser", "enduser-password"
API_KEY = {"x-api-key": "test-api-key"}


class _Callbacks(BaseHTTPRequestHandler):
    """The app's redirect URI: records each query it receives, as a native app's listener."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, Listener)
        server.queries.append(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)))
        body = b"You may close this window."
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""


class Listener(HTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Callbacks)
        self.queries: list[dict[str, str]] = []

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/callback"


class _Form(HTMLParser):
    """The login page's form as a browser reads it: where it posts, and its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.errors: list[str] = []
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes.get("action", "")
        elif tag == "input":
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "p" and attributes.get("role") == "alert":
            self._in_error = True

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.errors.append(data)
            self._in_error = False


def form_of(page: httpx.Response) -> _Form:
    assert page.headers["content-type"].startswith("text/html")
    form = _Form()
    form.feed(page.text)
    return form


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeVanMarcke]:
    with FakeVanMarcke(rotate_refresh_tokens=True, code_lifetime=30.0, clock=clock) as provider:
        yield provider


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(fake: FakeVanMarcke, redirect_uri: str, challenge: str, **extra: str) -> str:
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": redirect_uri,
        "state": "xyz & <state>",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "scope": "openid",
        **extra,
    }
    return fake.authorize_url + "?" + urllib.parse.urlencode(query)


def log_in(browser: httpx.Client, url: str, password: str = END_USER_PASSWORD) -> httpx.Response:
    """GET the login page, fill in its form and post it where it says: the page's answer."""
    page = browser.get(url)
    assert page.status_code == 200
    form = form_of(page)
    target = urllib.parse.urljoin(url, form.action)
    fields = {**form.fields, "username": END_USER, "password": password}
    return browser.post(target, data=fields)


def authorized(browser: httpx.Client, listener: Listener, url: str) -> dict[str, str]:
    """Log in and follow the redirect to the listener; the query it received."""
    answer = log_in(browser, url)
    assert answer.status_code == 302
    assert browser.get(answer.headers["location"]).status_code == 200
    return listener.queries[-1]


def exchange(
    browser: httpx.Client, fake: FakeVanMarcke, code: str, redirect_uri: str, verifier: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code_verifier": verifier,
    }
    return browser.post(fake.token_url, data=form, headers=API_KEY)


def test_authorization_code_with_pkce_yields_an_end_user_token_with_rotating_refresh(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    verifier, challenge = pkce()
    received = authorized(browser, listener, authorize_url(fake, listener.redirect_uri, challenge))
    assert received["state"] == "xyz & <state>"
    answer = exchange(browser, fake, received["code"], listener.redirect_uri, verifier)
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert answer.headers["cache-control"] == "no-store"
    # An end user's token: it may create the service user.
    bearer = {**API_KEY, "Authorization": f"Bearer {token['access_token']}"}
    assert browser.post(fake.service_users_url, headers=bearer).status_code == 201
    refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    renewed = browser.post(fake.token_url, data={**refresh, **client}, headers=API_KEY)
    assert renewed.status_code == 200
    assert renewed.json()["refresh_token"] != token["refresh_token"]
    again = browser.post(fake.token_url, data={**refresh, **client}, headers=API_KEY)
    assert again.json()["error"] == "invalid_grant"  # the first refresh token was spent
    assert (fake.codes_issued, fake.codes_exchanged, fake.codes_refused) == (1, 1, 0)
    assert fake.token_calls_by_grant["authorization_code"] == 1


def test_code_exchange_is_refused_for_a_wrong_verifier(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    verifier, challenge = pkce()
    received = authorized(browser, listener, authorize_url(fake, listener.redirect_uri, challenge))
    wrong, _ = pkce()
    answer = exchange(browser, fake, received["code"], listener.redirect_uri, wrong)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    # The code is spent by any presentation: the right verifier comes too late.
    late = exchange(browser, fake, received["code"], listener.redirect_uri, verifier)
    assert late.json()["error"] == "invalid_grant"
    assert (fake.codes_exchanged, fake.codes_refused, fake.tokens_issued) == (0, 2, 0)


def test_code_is_single_use(fake: FakeVanMarcke, listener: Listener, browser: httpx.Client) -> None:
    verifier, challenge = pkce()
    received = authorized(browser, listener, authorize_url(fake, listener.redirect_uri, challenge))
    first = exchange(browser, fake, received["code"], listener.redirect_uri, verifier)
    reused = exchange(browser, fake, received["code"], listener.redirect_uri, verifier)
    assert first.status_code == 200
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert "already used" in reused.json()["error_description"]
    assert (fake.codes_exchanged, fake.codes_refused) == (1, 1)


def test_code_expires_by_the_fakes_clock(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client, clock: ManualClock
) -> None:
    verifier, challenge = pkce()
    received = authorized(browser, listener, authorize_url(fake, listener.redirect_uri, challenge))
    clock.advance(30.0)
    answer = exchange(browser, fake, received["code"], listener.redirect_uri, verifier)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    assert "expired" in answer.json()["error_description"]


def test_code_is_bound_to_its_redirect_uri_and_client(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    verifier, challenge = pkce()
    url = authorize_url(fake, listener.redirect_uri, challenge)
    elsewhere = exchange(
        browser,
        fake,
        authorized(browser, listener, url)["code"],
        listener.redirect_uri + "2",
        verifier,
    )
    assert elsewhere.json()["error"] == "invalid_grant"
    with FakeVanMarcke(clients={CLIENT_ID: CLIENT_SECRET, "other": None}) as two_clients:
        code = authorized(
            browser, listener, authorize_url(two_clients, listener.redirect_uri, challenge)
        )["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": listener.redirect_uri,
            "client_id": "other",
            "code_verifier": verifier,
        }
        other = browser.post(two_clients.token_url, data=form, headers=API_KEY)
        assert other.json()["error"] == "invalid_grant"
        assert two_clients.codes_refused == 1


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://example.com/callback",
        "https://127.0.0.1:8443/callback",
        "http://localhost:8080/callback",
        "http://127.0.0.1.example.com/callback",
        "http://user@127.0.0.1:8080/callback",
        "http://127.0.0.1:8080/callback#fragment",
        "http://127.0.0.1:port/callback",
        "",
    ],
)
def test_login_page_refuses_a_redirect_uri_that_is_not_loopback(
    fake: FakeVanMarcke, browser: httpx.Client, redirect_uri: str
) -> None:
    _, challenge = pkce()
    url = authorize_url(fake, redirect_uri, challenge)
    page = browser.get(url)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "redirect_uri" in page.text
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    posted = browser.post(
        fake.authorize_url, data={**fields, "username": END_USER, "password": END_USER_PASSWORD}
    )
    assert posted.status_code == 400
    assert "location" not in posted.headers
    assert fake.codes_issued == 0


def test_login_page_shows_the_form_again_for_wrong_credentials(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    _, challenge = pkce()
    answer = log_in(browser, authorize_url(fake, listener.redirect_uri, challenge), "wrong")
    assert answer.status_code == 200
    assert "location" not in answer.headers
    form = form_of(answer)
    assert form.errors == ["Invalid username or password."]
    assert form.fields["state"] == "xyz & <state>"  # escaped in the page, intact in the form
    assert "<state>" not in answer.text
    assert "wrong" not in answer.text
    assert (fake.logins_refused, fake.codes_issued, listener.queries) == (1, 0, [])


def test_login_page_redirects_an_error_without_pkce(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    url = authorize_url(fake, listener.redirect_uri, "", code_challenge_method="plain")
    page = browser.get(url)
    assert page.status_code == 302
    assert browser.get(page.headers["location"]).status_code == 200
    assert listener.queries[-1]["error"] == "invalid_request"
    assert listener.queries[-1]["state"] == "xyz & <state>"


def test_login_page_refuses_an_unknown_client(fake: FakeVanMarcke, browser: httpx.Client) -> None:
    _, challenge = pkce()
    url = authorize_url(fake, "http://127.0.0.1:9/cb", challenge, client_id="nobody")
    page = browser.get(url)
    assert (page.status_code, "location" in page.headers) == (400, False)


def test_log_in_helper_returns_the_redirect_with_code_and_state(
    fake: FakeVanMarcke, listener: Listener, browser: httpx.Client
) -> None:
    verifier, challenge = pkce()
    location = fake.log_in(
        authorize_url(fake, listener.redirect_uri, challenge), END_USER, END_USER_PASSWORD
    )
    assert location.startswith(listener.redirect_uri + "?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert query["state"] == "xyz & <state>"
    assert (
        exchange(browser, fake, query["code"], listener.redirect_uri, verifier).status_code == 200
    )
    with pytest.raises(ValueError, match="without redirecting"):
        fake.log_in(authorize_url(fake, listener.redirect_uri, challenge), END_USER, "wrong")
    with pytest.raises(ValueError, match="fake's own page"):
        fake.log_in("http://127.0.0.1:9/authorize?x=1", END_USER, END_USER_PASSWORD)
