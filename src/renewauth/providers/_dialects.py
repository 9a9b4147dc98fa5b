"""Error bodies of the vendors' token endpoints, read into OAuth terms. Pure functions."""

from __future__ import annotations

import math
import re

from ..flows import TokenResponse
from ..oauth2 import clean_text, read_oauth_error

__all__ = ["read_ordercloud_error", "read_shopware_error", "shopware_throttle_seconds"]

# OrderCloud's `Errors[].ErrorCode` values that refuse the client; every other `Auth.*` code
# but a missing role refuses the user's grant (PROVIDERS.md §2, the .NET SDK's ErrorCodes).
_ORDERCLOUD_CLIENT_CODES = frozenset(
    {"Auth.InvalidClientSecret", "Auth.InvalidClientID", "Auth.InvalidClient"}
)
_ORDERCLOUD_NOT_A_GRANT = frozenset({"Auth.InsufficientRoles"})
# league/oauth2-server codes, as Shopware renders them (PROVIDERS.md §3).
_SHOPWARE_CODES = {"4": "invalid_client", "6": "invalid_grant", "8": "invalid_grant"}
_THROTTLED = re.compile(r"(\d+(?:\.\d+)?)\s*seconds?", re.IGNORECASE)


def _first(response: TokenResponse, key: str) -> dict[str, object] | None:
    data = response.json_object()
    items = data.get(key) if data is not None else None
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0]
    return None


def _text(item: dict[str, object] | None, key: str) -> str | None:
    value = item.get(key) if item is not None else None
    return clean_text(value) if isinstance(value, str) else None


def read_ordercloud_error(response: TokenResponse) -> tuple[str | None, str | None]:
    """OrderCloud: the OAuth pair when present, else `Errors[0]`, its code mapped to OAuth's."""
    error, description = read_oauth_error(response)
    first = _first(response, "Errors")
    code = _text(first, "ErrorCode")
    message = _text(first, "Message")
    if code in _ORDERCLOUD_CLIENT_CODES:
        error = "invalid_client"
    elif code is not None and (
        (code.startswith("Auth.") and code not in _ORDERCLOUD_NOT_A_GRANT)
        or code == "PasswordReset.LockedOut"
    ):
        error = "invalid_grant"
    elif error is None:
        error = code
    detail = " ".join(part for part in (code, description or message) if part)
    return error, detail or None


def read_shopware_error(response: TokenResponse) -> tuple[str | None, str | None]:
    """Shopware: `errors[0].code` mapped to OAuth's ("4" client, "6"/"8" grant, whatever the
    status, since league 8 answers a dead refresh token with 401 and league 9 with 400)."""
    first = _first(response, "errors")
    if first is None:
        return read_oauth_error(response)
    code = _text(first, "code")
    detail = _text(first, "detail") or _text(first, "title")
    return _SHOPWARE_CODES.get(code or "", code), detail


def shopware_throttle_seconds(response: TokenResponse) -> float | None:
    """The wait a throttled Shopware login asks for: `meta.parameters.seconds`, else the
    number in "Auth throttled for N seconds."."""
    first = _first(response, "errors")
    if first is None:
        return None
    meta = first.get("meta")
    parameters = meta.get("parameters") if isinstance(meta, dict) else None
    seconds = parameters.get("seconds") if isinstance(parameters, dict) else None
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        return _finite(seconds)
    match = _THROTTLED.search(_text(first, "detail") or "")
    return _finite(match.group(1)) if match else None


def _finite(value: float | str) -> float | None:
    """`value` as finite seconds, or `None` (an integer such as 10**400 overflows a float)."""
    try:
        seconds = float(value)
    except (OverflowError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None
