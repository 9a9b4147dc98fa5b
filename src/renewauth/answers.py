"""What a token endpoint's answer means: a `Token`, or a typed error whose message names the fix.

Parsing turns any answer, however broken, into a `Token` or a typed `TokenRequestError`; it
never lets a `JSONDecodeError` or `KeyError` escape. Here too: the error body read in OAuth
terms (a provider may bring its own `ErrorReader`), the rule for "refresh token refused", and
the expiry arithmetic (`expires_in`, a JWT `exp` corrected by the `Date` header, a refresh
token's own end). The grants of `oauth2.py` send the requests; this module only reads.

No I/O, no clock (times come stamped on the `TokenResponse`), no requests, no httpx.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import math
import re
from collections.abc import Callable, Mapping

from .errors import InvalidClient, InvalidGrant, TokenEndpointUnavailable, TokenRequestError
from .flows import TokenResponse
from .token import Token

__all__ = [
    "ErrorReader",
    "RefusalRule",
    "clean_text",
    "is_client_error",
    "is_refused_grant",
    "jwt_expiry",
    "parse_token_response",
    "read_jwt_expiry",
    "read_oauth_error",
    "refresh_expiry",
    "token_error",
]

# A server's clock may differ from ours; a JWT `exp` is corrected by the `Date` header only
# beyond this many seconds, since `Date` has a one-second resolution.
_CLOCK_SKEW_TOLERANCE = 5.0
_MAX_DESCRIPTION = 200
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


ErrorReader = Callable[[TokenResponse], tuple[str | None, str | None]]
"""Reads a token endpoint's error body as `(error, description)`, the error in OAuth terms.

A provider with its own error dialect maps its codes onto `"invalid_grant"` (the grant was
refused) and `"invalid_client"` (the client was), so the typed errors and the fallback from a
refused refresh token work the same for every provider.
"""


def read_oauth_error(response: TokenResponse) -> tuple[str | None, str | None]:
    """The OAuth `error` and `error_description` of an error body (RFC 6749 §5.2), cleaned."""
    data = response.json_object()
    if data is None:
        return None, None
    error = data.get("error")
    description = data.get("error_description")
    return (
        clean_text(error) if isinstance(error, str) else None,
        clean_text(description) if isinstance(description, str) else None,
    )


def clean_text(text: str) -> str:
    """Server-sent text made fit for a one-line message: no control characters, bounded."""
    return _CONTROL_CHARACTERS.sub(" ", text)[:_MAX_DESCRIPTION]


RefusalRule = Callable[[TokenResponse], bool]
"""Decides whether a refresh answer means "refresh token refused: fall back"."""


def is_client_error(response: TokenResponse) -> bool:
    """Any 4xx but 429: the refusal rule for a provider whose error bodies are unknown."""
    return 400 <= response.status < 500 and response.status != 429


def is_refused_grant(response: TokenResponse, read_error: ErrorReader = read_oauth_error) -> bool:
    """Whether the answer refuses the grant itself (`invalid_grant`), not the client."""
    return response.status >= 400 and read_error(response)[0] == "invalid_grant"


def token_error(
    response: TokenResponse,
    *,
    grant: str,
    fix: str,
    read_error: ErrorReader = read_oauth_error,
    client_fix: str | None = None,
) -> TokenRequestError:
    """The typed error for a failed token request, its message naming `fix` (or
    `client_fix` when the client itself was refused)."""
    error, description = read_error(response)
    origin = response.origin
    detail = f"{error}: {description}" if error and description else (error or description)
    where = f"{grant} grant refused by {origin} (HTTP {response.status}"
    where += f", {detail})" if detail else ")"
    message = f"{where}; {fix}"
    kind: type[TokenRequestError] = TokenRequestError
    if response.status == 429 or response.status >= 500:
        kind = TokenEndpointUnavailable
        message = (
            f"token endpoint {origin} is unavailable (HTTP {response.status}); "
            "it may be overloaded or down: try again later, or raise retries="
        )
    elif error == "invalid_grant":
        kind = InvalidGrant
    elif error in ("invalid_client", "unauthorized_client"):
        kind = InvalidClient
        message = f"{where}; {client_fix or fix}"
    elif error is None and response.json_object() is None:
        media = response.content_type or "untyped"
        message = (
            f"token endpoint {origin} answered HTTP {response.status} with a {media} body "
            "that is not an OAuth 2 JSON answer; check that token_url= is the token endpoint "
            "itself (it usually ends in /token)"
        )
    return kind(
        message, status=response.status, error=error, error_description=description, origin=origin
    )


def _seconds(value: object) -> float | None:
    """A positive, finite number of seconds from a JSON number or numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an integer past float's range (10**400) raises
    except OverflowError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def read_jwt_expiry(access_token: str) -> float | None:
    """The `exp` claim of a JWT access token, read and *not* verified; `None` if absent.

    The signature is not checked: the API does that. The claim only tells when to renew.
    """
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(decoded)
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        number = float(exp)  # an integer past float's range (10**400) raises
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _server_clock_offset(response: TokenResponse) -> float:
    """How far the server's clock is ahead of ours, from its `Date` header (0 if close)."""
    date = response.headers.get("date")
    if not date:
        return 0.0
    try:
        server_time = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    offset = server_time - response.received_at
    return offset if abs(offset) > _CLOCK_SKEW_TOLERANCE else 0.0


def jwt_expiry(access_token: str, response: TokenResponse) -> float | None:
    """When a JWT access token expires by our clock: its `exp` claim, corrected by the
    server's `Date` header when the clocks differ by more than 5 s; `None` without `exp`.

    Never earlier than the moment the request was sent (an already expired token renews at
    once rather than producing a negative lifetime).
    """
    exp = read_jwt_expiry(access_token)
    if exp is None:
        return None
    return max(exp - _server_clock_offset(response), response.sent_at)


def refresh_expiry(
    refresh_token: str, data: Mapping[str, object], response: TokenResponse
) -> float | None:
    """When a newly issued refresh token expires by our clock, or `None` if nobody said.

    From `refresh_expires_in` (Keycloak; `0` means "no stated expiry", not "expired"), else
    `refresh_token_expires_in` (Microsoft, GitHub apps), else the `exp` claim of a refresh
    token that is a JWT (read, never verified), counted as `jwt_expiry` counts.
    """
    stated = _stated_refresh_end(data, response)
    return stated if stated is not None else jwt_expiry(refresh_token, response)


def _stated_refresh_end(data: Mapping[str, object], response: TokenResponse) -> float | None:
    """The refresh token's end the answer states in seconds from now, if it does."""
    for name in ("refresh_expires_in", "refresh_token_expires_in"):
        lifetime = _seconds(data.get(name))
        if lifetime is not None:
            return response.sent_at + lifetime
    return None


def parse_token_response(
    response: TokenResponse,
    *,
    previous: Token | None = None,
    previous_refresh_token: str | None = None,
    grant: str = "token",
    fix: str = "check the credentials",
    read_error: ErrorReader = read_oauth_error,
    client_fix: str | None = None,
) -> Token:
    """Turn a token endpoint's answer into a `Token`, or raise the matching typed error.

    Expiry: `expires_in` (a number or numeric string) from the moment the request was sent;
    else the JWT `exp` claim, corrected for the server's clock by its `Date` header; else
    unknown, and the token is used until the API rejects it. A reply without a refresh
    token keeps the previous one (RFC 6749 §6 lets the server omit it).

    Raises:
        InvalidGrant: the grant was refused (`invalid_grant`).
        InvalidClient: the client was refused (`invalid_client`, `unauthorized_client`).
        TokenEndpointUnavailable: a 5xx or 429 answer.
        TokenRequestError: any other error, or a body that is not a token.
    """
    if response.status >= 400 or response.status < 200:
        raise token_error(
            response, grant=grant, fix=fix, read_error=read_error, client_fix=client_fix
        )
    data = response.json_object()
    access_token = data.get("access_token") if data is not None else None
    if data is None or not isinstance(access_token, str) or not access_token:
        kind = response.content_type or "untyped"
        what = "a JSON object without access_token" if data is not None else f"a {kind} body"
        raise TokenRequestError(
            f"token endpoint {response.origin} answered HTTP {response.status} with {what}; "
            "check that token_url= is the token endpoint itself (it usually ends in /token)",
            status=response.status,
            origin=response.origin,
        )
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or not token_type.strip():
        token_type = "Bearer"

    lifetime = _seconds(data.get("expires_in"))
    if lifetime is not None:
        expires_at: float | None = response.sent_at + lifetime
    else:
        expires_at = jwt_expiry(access_token, response)

    refresh_token = data.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = previous_refresh_token or (previous.refresh_token if previous else None)
        # A server that keeps the refresh token may still say how long it has left (a fixed
        # end, counted down in `refresh_expires_in`): that is its end, not the old reading.
        refresh_expires_at = _stated_refresh_end(data, response)
        if refresh_expires_at is None and previous is not None:
            refresh_expires_at = previous.refresh_expires_at
        # The kept refresh token was used by this very request when it was a refresh.
        refresh_used_at = (
            response.sent_at
            if grant == "refresh_token" and refresh_token
            else (previous.refresh_used_at if previous else None)
        )
    else:
        refresh_expires_at = refresh_expiry(refresh_token, data, response)
        refresh_used_at = response.sent_at
    scope = data.get("scope")
    return Token(
        access_token=access_token,
        token_type=token_type.strip(),
        expires_at=expires_at,
        issued_at=response.sent_at,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
        refresh_used_at=refresh_used_at if refresh_token else None,
        scope=scope if isinstance(scope, str) else None,
        raw=data,
    )
