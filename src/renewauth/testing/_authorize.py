"""An authorization endpoint for fakes with end users: a login page that issues codes (RFC 6749
§4.1) bound to PKCE (RFC 7636, S256 only), and their one-time exchange at the token endpoint.

Lives here: ``Authorizations``, the pending codes and their counters, the HTML login form and
the checks of RFC 8252 §7.3 (a native app's redirect URI is a loopback address: any port, no
host name). A fake keeps one, calls it with its own lock held, and decides who may log in (its
end users) and what token a redeemed code yields. Must not live here: sockets, a vendor's
token answer, anything of renewauth's own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
import secrets
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from renewauth.testing._wire import (
    FORM_TYPE,
    BodyError,
    OAuthError,
    Reply,
    Request,
    equal_secrets,
    parse_params,
)

# RFC 7636 §4.1: 43 to 128 characters of the unreserved set.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, no padding
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
_HTML_TYPE = "text/html; charset=utf-8"
# What the login form carries over from the query, so that its POST repeats the request.
_CARRIED = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Code:
    subject: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str | None
    expires_at: float


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_loopback_redirect(uri: str) -> bool:
    """Whether ``uri`` is an ``http`` loopback IP literal redirect (RFC 8252 §7.3): any port
    and path, no user info, no fragment (RFC 6749 §3.1.2), and not ``localhost``."""
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in _LOOPBACK_HOSTS
        and "@" not in parts.netloc
        and not parts.fragment
        and "#" not in uri
    )


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    """``uri`` with ``params`` added to its query (RFC 6749 §3.1.2: keep the query it has)."""
    separator = "&" if urllib.parse.urlsplit(uri).query else "?"
    return uri + separator + urllib.parse.urlencode(params)


class Authorizations:
    """The codes a fake's authorization endpoint issued, and its counters.

    Every method is called with the fake's lock held.

    Args:
        path: The authorization endpoint's path, where the form posts back.
        clock: The fake's clock (seconds since the epoch).
        code_lifetime: Seconds a code can be exchanged after it is issued.
    """

    def __init__(self, *, path: str, clock: Callable[[], float], code_lifetime: float) -> None:
        if not math.isfinite(code_lifetime) or code_lifetime <= 0:
            raise ValueError(f"code_lifetime must be > 0 seconds, got {code_lifetime!r}")
        self._path = path
        self._clock = clock
        self._code_lifetime = float(code_lifetime)
        self._codes: dict[str, _Code] = {}
        self._spent: set[str] = set()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.issued = 0
        self.exchanged = 0
        self.refused = 0
        self.logins_refused = 0

    # -- the authorization endpoint ----------------------------------------------------------

    def answer(
        self,
        request: Request,
        *,
        clients: Collection[str],
        users: Mapping[str, str],
    ) -> Reply:
        """GET shows the login form; POST checks the login and redirects with a code.

        A request whose ``client_id`` or ``redirect_uri`` cannot be trusted is refused with
        a page of its own, never redirected (RFC 6749 §4.1.2.1); other errors go back to the
        redirect URI with ``error`` and ``state``.
        """
        if request.method == "GET":
            params = dict(urllib.parse.parse_qsl(request.query, keep_blank_values=True))
        elif request.method == "POST":
            try:
                params = parse_params(request.headers.get("content-type", ""), request.body)
            except BodyError as exc:
                return _page(400, "Bad request", str(exc))
        else:
            return Reply(status=405, headers={"Allow": "GET, POST"})
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if client_id not in clients:
            return _page(400, "Unknown client", "The client_id is not registered.")
        if not is_loopback_redirect(redirect_uri):
            return _page(
                400,
                "Invalid redirect_uri",
                "A native app's redirect_uri must be http://127.0.0.1:<port>/... (RFC 8252).",
            )
        refusal = self._refusal(params)
        if refusal is not None:
            error, description = refusal
            return _redirect(
                redirect_uri,
                {"error": error, "error_description": description, "state": params.get("state")},
            )
        if request.method == "GET":
            return _login_form(self._path, params, error=None)
        username, password = params.get("username", ""), params.get("password")
        expected = users.get(username)
        if expected is None or password is None or not equal_secrets(password, expected):
            self.logins_refused += 1
            return _login_form(self._path, params, error="Invalid username or password.")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            subject=username,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=params["code_challenge"],
            scope=params.get("scope"),
            expires_at=self._clock() + self._code_lifetime,
        )
        self.issued += 1
        return _redirect(redirect_uri, {"code": code, "state": params.get("state")})

    @staticmethod
    def _refusal(params: Mapping[str, str]) -> tuple[str, str] | None:
        if params.get("response_type") != "code":
            return "unsupported_response_type", "Only response_type=code is supported"
        if params.get("code_challenge_method") != "S256":
            return "invalid_request", "PKCE is required, with code_challenge_method=S256"
        if not _CHALLENGE.fullmatch(params.get("code_challenge", "")):
            return "invalid_request", "code_challenge must be the base64url of a SHA-256"
        return None

    # -- the token endpoint ------------------------------------------------------------------

    def redeem(self, client_id: str, params: Mapping[str, str]) -> _Code:
        """The code ``params`` present, spent; raises ``OAuthError`` ``invalid_grant`` for a
        code unknown, spent, expired, issued to another client or redirect URI, or whose
        ``code_verifier`` does not match its challenge. Any presentation spends a code, so a
        verifier cannot be guessed by trying again."""
        code = params.get("code", "")
        pending = self._codes.pop(code, None)
        reason: str | None
        if pending is None:
            spent = code in self._spent
            reason = "Authorization code already used" if spent else "Invalid authorization code"
        else:
            self._spent.add(code)
            reason = self._mismatch(pending, client_id, params)
        if pending is None or reason is not None:
            self.refused += 1
            raise OAuthError(400, "invalid_grant", reason or "Invalid authorization code")
        self.exchanged += 1
        return pending

    def _mismatch(self, pending: _Code, client_id: str, params: Mapping[str, str]) -> str | None:
        """Why the exchange of ``pending`` with ``params`` is refused, or None."""
        verifier = params.get("code_verifier", "")
        if self._clock() >= pending.expires_at:
            return "Authorization code expired"
        if pending.client_id != client_id:
            return "Authorization code was issued to another client"
        if params.get("redirect_uri") != pending.redirect_uri:
            return "redirect_uri does not match the authorization request"
        if not _VERIFIER.fullmatch(verifier) or not equal_secrets(
            s256(verifier), pending.code_challenge
        ):
            return "code_verifier does not match the code_challenge"
        return None


def _redirect(uri: str, params: Mapping[str, str | None]) -> Reply:
    present = {name: value for name, value in params.items() if value is not None}
    return Reply(status=302, headers={"Location": _with_query(uri, present)})


def _page(status: int, title: str, message: str) -> Reply:
    body = (
        f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return Reply(status=status, body=body.encode(), headers={"Content-Type": _HTML_TYPE})


def _login_form(action: str, params: Mapping[str, str], *, error: str | None) -> Reply:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
        for name in _CARRIED
        if name in params
    )
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        "<!doctype html><html><head><title>Log in</title></head><body><h1>Log in</h1>"
        f'{alert}<form method="post" action="{html.escape(action)}" enctype="{FORM_TYPE}">'
        f'{hidden}<label>Username <input name="username" autocomplete="username"></label>'
        '<label>Password <input name="password" type="password"></label>'
        '<button type="submit">Log in</button></form></body></html>'
    )
    return Reply(status=200, body=body.encode(), headers={"Content-Type": _HTML_TYPE})
