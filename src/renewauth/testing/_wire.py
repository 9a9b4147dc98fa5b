"""Values and helpers the fakes use to read requests and write replies; no sockets, no state.

Lives here: the ``Request`` a handler hands to a fake, the ``Reply`` it gets back, the
``ErrorReply`` exception a dialect raises to refuse, the records a fake keeps per call and per
token (``RecordedTokenRequest``, ``AccessGrant``, ``RefreshGrant``), body and HTTP Basic
decoding, and JWT minting. Must not live here: anything that keeps state or knows a vendor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"

# RFC 6749 §5.2 error codes that an injected failure sends when the test gives no body.
_DEFAULT_FAILURE_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    403: "unauthorized_client",
    429: "slow_down",
    503: "temporarily_unavailable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request as the handler hands it to a fake."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = field(repr=False)
    host: str  # "127.0.0.1:port" of the server that received it


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """What a fake answers; the handler adds Content-Length and Date."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedTokenRequest:
    """What a fake's token endpoint received in one call, for assertions.

    Read it from ``last_token_request`` of any fake to check how a client authenticated (body
    or HTTP Basic) and which parameters it sent.

    Args:
        grant_type: The ``grant_type`` parameter, or None when the client sent none. Fakes
            without OAuth grants name the endpoint instead (Vendorlink: "login", "extendtoken").
        content_type: The request's ``Content-Type`` header, as sent ("" when absent).
        headers: Request headers with lower-case names; repeated headers joined by ", ".
        params: The decoded form or JSON body (empty when it could not be decoded).
    """

    grant_type: str | None
    content_type: str
    headers: Mapping[str, str] = field(repr=False)
    params: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessGrant:
    """What a fake knows about an access token it issued."""

    subject: str
    expires_at: float  # exact expiry; a JWT carries a rounded-up copy
    client_id: str = ""
    host: str = ""  # "127.0.0.1:port" of the server that issued it
    kind: str = ""  # a fake's own label, such as "end-user"


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshGrant:
    """What a fake knows about a refresh (or renewal) token it issued."""

    subject: str
    client_id: str = ""
    is_active: bool = True  # False once spent by rotation or revoked
    is_revoked: bool = False
    session: str = ""
    is_offline: bool = False
    host: str = ""
    scope: str | None = None
    expires_at: float | None = None  # a fixed end, whatever the uses (None: no stated end)


class ErrorReply(Exception):
    """Raised inside a fake's answer to refuse with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class OAuthError(ErrorReply):
    """An RFC 6749 §5.2 error response."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            json_reply(status, {"error": error, "error_description": description}, headers)
        )
        self.error = error


class BodyError(Exception):
    """A token request body that cannot be decoded; the message says why."""


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    merged = {"Content-Type": JSON_TYPE, **(headers or {})}
    return Reply(status=status, body=json.dumps(payload).encode(), headers=merged)


def token_reply(payload: Mapping[str, object]) -> Reply:
    """A successful token response; RFC 6749 §5.1 forbids caching it."""
    return json_reply(200, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})


def oauth_failure_reply(status: int, headers: Mapping[str, str]) -> Reply:
    """An injected failure's default body: the RFC 6749 error that matches ``status``."""
    default_error = "server_error" if status >= 500 else "invalid_request"
    error = _DEFAULT_FAILURE_ERRORS.get(status, default_error)
    return json_reply(status, {"error": error, "error_description": "injected failure"}, headers)


def redirect_reply(query: str) -> Reply:
    targets = urllib.parse.parse_qs(query).get("to")
    if not targets:
        return json_reply(
            400, {"error": "invalid_request", "error_description": "Missing parameter: to"}
        )
    return Reply(status=307, headers={"Location": targets[0]})


def step_up_reply(query: str) -> Reply:
    """An RFC 9470 step-up challenge: 401 (or ``status=403``), ``acr_values`` and ``max_age``
    taken from the query when it names them."""
    asked = dict(urllib.parse.parse_qsl(query))
    status = 403 if asked.get("status") == "403" else 401
    challenge = (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A stronger login is required"'
    )
    for name in ("acr_values", "max_age"):
        if name in asked:
            value = asked[name].replace("\\", "\\\\").replace('"', '\\"')
            challenge += f', {name}="{value}"'
    return json_reply(
        status,
        {"error": "insufficient_user_authentication"},
        {"WWW-Authenticate": challenge},
    )


def parse_params(content_type: str, body: bytes, *, strict_json: bool = True) -> dict[str, str]:
    """Decode a form or JSON body into parameters.

    With ``strict_json`` every JSON value must be a string; otherwise other values are kept as
    their JSON text, as servers that decode JSON into request parameters do.

    Raises:
        BodyError: If the body is malformed, repeats a form parameter or has another type.
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == FORM_TYPE:
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=bool(body)
            )
        except (UnicodeDecodeError, ValueError):
            raise BodyError("Malformed form body") from None
        params = dict(pairs)
        if len(params) != len(pairs):  # RFC 6749 §3.2: parameters must not repeat
            raise BodyError("Repeated parameter")
        return params
    if media_type == JSON_TYPE:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise BodyError("Malformed JSON body") from None
        if not isinstance(document, dict):
            raise BodyError("JSON body must map names to strings")
        if strict_json and not all(isinstance(value, str) for value in document.values()):
            raise BodyError("JSON body must map names to strings")
        return {
            str(name): value if isinstance(value, str) else json.dumps(value)
            for name, value in document.items()
        }
    raise BodyError(f"Content-Type must be {FORM_TYPE} or {JSON_TYPE}")


def equal_secrets(presented: str, expected: str) -> bool:
    return secrets.compare_digest(presented.encode(), expected.encode())


def decode_basic_credentials(credentials: str) -> tuple[str, str] | None:
    """Decode HTTP Basic client credentials, form-decoding each half (RFC 6749 §2.3.1)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        return None
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def basic_credentials(headers: Mapping[str, str]) -> tuple[bool, tuple[str, str] | None]:
    """Whether ``headers`` use HTTP Basic, and the decoded pair (None when malformed)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False, None
    return True, decode_basic_credentials(credentials.strip())


def base64url_json(payload: Mapping[str, object]) -> str:
    encoded = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


def unsigned_jwt(claims: Mapping[str, object]) -> str:
    """A JWT with ``alg: none`` and a random third part, so that every token is unique."""
    return ".".join(
        (
            base64url_json({"alg": "none", "typ": "JWT"}),
            base64url_json(claims),
            secrets.token_urlsafe(32),
        )
    )


def unverified_claims(token: str) -> Mapping[str, object]:
    """The claims of a compact JWT, its signature unchecked; empty when it is not a JWT."""
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return {}
    return claims if isinstance(claims, dict) else {}


def hs256_jwt(header: Mapping[str, object], claims: Mapping[str, object], key: bytes) -> str:
    """A JWT signed with HMAC-SHA256 under ``key``."""
    signing_input = f"{base64url_json(header)}.{base64url_json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def sniff_content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return "text/plain; charset=utf-8"
    return JSON_TYPE
