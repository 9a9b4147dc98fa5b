"""The sans-IO half of a first consent: PKCE, the authorization URL, the device authorization
answer, what a device-flow poll's answer means, and the grant that keeps the chain afterwards.

`ConsentGrant` is a `ChainGrant`: once a person has consented, the credential is the refresh
token of its last token, renewed and rotated like `OAuth2RefreshToken`'s. Before that, its flow
raises `LoginRequired` and sends nothing. A login hands the first token to the renewal through
the grant's `Handoff`, so that it is written to the store (and the spare copy) under the
store's lock as every renewal is. No I/O, no clock here.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from ._retry import retry_after_seconds
from ._urls import origin_of
from .answers import clean_text, parse_token_response, read_oauth_error
from .errors import (
    AccessDenied,
    ConsentExpired,
    LoginRequired,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from .flows import Flow, TokenResponse
from .oauth2 import Client
from .token import Token

__all__ = [
    "DEVICE_CODE",
    "ConsentGrant",
    "DeviceAuthorization",
    "Handoff",
    "LoginOutcome",
    "authorization_url",
    "code_challenge",
    "new_state",
    "new_verifier",
    "parse_device_authorization",
    "poll_outcome",
]

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2: seconds between polls when the server says nothing
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: what `slow_down` adds to the interval

FirstFlow = Callable[[str, Client], Flow]
"""How a login's first token is had, given the token endpoint and the client."""


def new_verifier() -> str:
    """A PKCE code verifier (RFC 7636 §4.1): 64 URL-safe characters from 48 random bytes."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of `verifier`: base64url of its SHA-256, unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """A random `state` for one authorization request."""
    return secrets.token_urlsafe(24)


def authorization_url(  # noqa: PLR0917 - the request's own parameters
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    verifier: str,
    scope: str | None,
    *,
    acr_values: Sequence[str] = (),
    max_age: int | None = None,
) -> str:
    """The URL a person's browser opens to consent (RFC 6749 §4.1.1 with RFC 7636's S256);
    `acr_values` and `max_age` ask for a stronger or more recent login (OpenID Connect Core
    §3.1.2.1, as an RFC 9470 step-up names them)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if scope:
        params["scope"] = scope
        if "offline_access" in scope.split():
            # OpenID Connect Core §11: offline_access is ignored without prompt=consent.
            params["prompt"] = "consent"
    if acr_values:
        params["acr_values"] = " ".join(acr_values)
    if max_age is not None:
        params["max_age"] = str(max_age)
    joiner = "&" if urlsplit(endpoint).query else "?"
    return f"{endpoint}{joiner}{urlencode(params)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAuthorization:
    """A device authorization answer (RFC 8628 §3.2). Only `device_code` is secret.

    Attributes:
        user_code: what the person types at `verification_uri`; meant to be shown.
        verification_uri: where the person goes.
        verification_uri_complete: the same with the user code in it, when the server gives it.
        expires_in: seconds the codes live.
        interval: seconds between polls (5 when the server says nothing).
    """

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def parse_device_authorization(response: TokenResponse) -> DeviceAuthorization:
    """The device authorization in `response`, or a typed error.

    Raises:
        TokenRequestError: an error answer, or a body that is not a usable device
            authorization (its message says which field is missing or wrong).
    """
    if not 200 <= response.status < 300:
        error, description = read_oauth_error(response)
        raise TokenRequestError(
            f"the device authorization endpoint at {response.origin} refused the request "
            f"(HTTP {response.status}{f', {error}' if error else ''}); check client_id= and "
            "that the client may use the device flow (and scope=)",
            status=response.status,
            error=error,
            error_description=description,
            origin=response.origin,
        )
    data = response.json_object()

    def fail(problem: str) -> TokenRequestError:
        return TokenRequestError(
            f"the device authorization endpoint at {response.origin} answered {problem}; "
            "check device_authorization_url= (or the issuer's metadata)",
            status=response.status,
            origin=response.origin,
        )

    if data is None:
        raise fail("something that is not a JSON object")
    texts = {}
    for name in ("device_code", "user_code", "verification_uri"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"no usable {name}")
        texts[name] = value
    if not _is_web_url(texts["verification_uri"]):
        raise fail("a verification_uri that is not an http(s) URL")
    complete = data.get("verification_uri_complete")
    if complete is not None and not (isinstance(complete, str) and _is_web_url(complete)):
        complete = None  # optional: a bad one is left out, the plain URI still works
    expires_in = _seconds(data.get("expires_in"))
    if expires_in is None or expires_in <= 0:
        raise fail("no usable expires_in")
    interval = _seconds(data.get("interval"), DEFAULT_INTERVAL)
    if interval is None or interval < 0:
        raise fail("an interval that is not a number of seconds")
    return DeviceAuthorization(
        device_code=texts["device_code"],
        user_code=clean_text(texts["user_code"]),
        verification_uri=texts["verification_uri"],
        verification_uri_complete=complete,
        expires_in=expires_in,
        interval=max(interval, 1.0),
    )


def _is_web_url(value: str) -> bool:
    """An http(s) URL fit to be printed for a person: visible ASCII only (no terminal
    escape, no line break, no space) and of a length a person can use."""
    if len(value) > _MAX_URL or not _VISIBLE.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_MAX_URL = 2048
_VISIBLE = re.compile(r"[\x21-\x7e]+")


def _seconds(value: object, default: float | None = None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if not math.isnan(number) and number < 10**9 else None


def poll_outcome(response: TokenResponse, interval: float, *, client_fix: str) -> float | Token:
    """What a device-flow poll's answer means: the token, or the interval to wait before the
    next poll (`authorization_pending`: the same; `slow_down`: 5 s more).

    Raises:
        AccessDenied: the person declined (`access_denied`).
        ConsentExpired: the device code expired (`expired_token`).
        TokenRequestError: any other refusal, typed as the token endpoint's answers are.
    """
    if response.status >= 400:
        error, description = read_oauth_error(response)
        if error == "authorization_pending":
            return interval
        if error == "slow_down":
            return interval + SLOW_DOWN_STEP
        if error == "access_denied":
            raise AccessDenied(
                f"the login was declined at {response.origin} (access_denied); run the login "
                "again and approve it",
                error=error,
                error_description=description,
                origin=response.origin,
            )
        if error == "expired_token":
            raise ConsentExpired(
                f"the device code expired at {response.origin} before anyone approved it "
                "(expired_token); run the login again and enter the new code sooner",
                error=error,
                error_description=description,
                origin=response.origin,
            )
    try:
        return parse_token_response(
            response,
            grant="device_code",
            fix="run the login again: the device code was refused",
            client_fix=client_fix,
        )
    except TokenEndpointUnavailable as exc:  # 5xx, 429: when to poll again, if it says
        if exc.retry_after is None:
            exc.retry_after = retry_after_seconds(response.headers, response.received_at)
        raise


class LoginOutcome:
    """What became of a login's flow, whichever renewal ran it."""

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None

    def recording(self, first: FirstFlow) -> FirstFlow:
        def flow(token_url: str, client: Client) -> Flow:
            try:
                token: Token = yield from first(token_url, client)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.done = True
            return token

        return flow


class Handoff:
    """Where a login leaves its first token's flow for the renewal that stores it: one slot,
    per auth object and process (never pickled, never compared).

    The renewal that takes it is the one that announced its marker first (`announce`, from
    `ConsentGrant.presents`, which the renewal reads before its token call): a renewal that
    read the old chain's refresh token before the login put its flow here sends that refresh
    token, as it said it would, and leaves the login to the next renewal.
    """

    __slots__ = ("_announced", "_first", "_lock", "_marker", "turn")

    def __init__(self) -> None:
        self.turn = threading.Lock()  # held by one login at a time, from put to put(None)
        self._lock = threading.Lock()
        self._first: FirstFlow | None = None
        self._marker = ""
        self._announced = False

    def __reduce__(self) -> tuple[object, ...]:
        return Handoff, ()  # a copy in another process has no login under way

    def __repr__(self) -> str:
        return "<Handoff>"

    def put(self, first: FirstFlow | None) -> None:
        with self._lock:
            self._first = first
            self._marker = secrets.token_hex(16) if first is not None else ""
            self._announced = False

    def pending(self) -> bool:
        """Whether a login's first token waits to be fetched."""
        with self._lock:
            return self._first is not None

    def announce(self) -> str:
        """What a renewal presents in place of a refresh token while a login waits (`""`
        when none does): new for every login, so a pause about a refused refresh token of
        the old chain (or a refused earlier login) does not stop it."""
        with self._lock:
            if self._first is None:
                return ""
            self._announced = True
            return self._marker

    def take(self) -> FirstFlow | None:
        """The login's flow, for the renewal that announced its marker; else `None`."""
        with self._lock:
            if not self._announced:
                return None
            first, self._first, self._announced = self._first, None, False
            return first


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentGrant:
    """A chain started by a person's consent: `OAuth2AuthorizationCode`'s and
    `OAuth2DeviceCode`'s grant.

    Its credential is the refresh token of its last token (a `flows.ChainGrant`); its identity
    is the flow, the token endpoint, the client and the scope, so every run of a program with
    the same configuration finds the chain a login stored.
    """

    token_url: str
    client: Client
    flow: str  # "authorization_code" or "device_code"
    scope: str | None = None
    how_to_login: str = "call .login() on this object"
    handoff: Handoff = field(default_factory=Handoff, repr=False, compare=False)
    can_renew: bool = True

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        # As `RefreshTokenGrant`: the client's secret is left out, so rotating it keeps the chain.
        return (self.flow, self.token_url, self.client.client_id, self.scope or ""), ()

    def presents(self, current: Token | None) -> str:
        """The refresh token a renewal from `current` sends (`""` before any login), or while
        a login hands its first token over, that login's own marker."""
        return self.handoff.announce() or _refresh_token(current)

    def restarting(self) -> bool:
        """Whether a login waits: its token replaces the chain, whatever the store holds."""
        return self.handoff.pending()

    def fetch(self, current: Token | None) -> Flow:
        first = self.handoff.take()
        if first is not None:
            token: Token = yield from first(self.token_url, self.client)
            return token
        refresh_token = _refresh_token(current)  # never a marker: only a taken login sends none
        if not refresh_token:
            where = f"client_id={self.client.client_id!r} at {origin_of(self.token_url)}"
            if current is None:
                raise LoginRequired(
                    f"no token yet for {where}: a person must log in once; {self.how_to_login}"
                )
            raise LoginRequired(
                f"the token of {where} has expired and the server issued no refresh token "
                "with it (ask for scope offline_access, or allow this client the "
                f"refresh_token grant); log in again: {self.how_to_login}"
            )
        # No scope: RFC 6749 §6 keeps the one granted at login (asking again for what the
        # server left out, such as offline_access, is refused with invalid_scope).
        params = {"refresh_token": refresh_token}
        response = yield self.client.request(self.token_url, "refresh_token", params)
        return parse_token_response(
            response,
            previous_refresh_token=refresh_token,
            grant="refresh_token",
            fix=f"the login has ended (its refresh token was refused): {self.how_to_login}",
            client_fix="check client_id= and client_secret=",
        )


def _refresh_token(current: Token | None) -> str:
    return current.refresh_token if current is not None and current.refresh_token else ""
