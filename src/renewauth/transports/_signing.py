"""What both transports decide about a signed request: pure functions, written once."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

from .._urls import origin_of

__all__ = ["routed_url", "should_renew_after"]


def routed_url(url: str, home_origin: str | None, api_origin: str | None) -> str | None:
    """Where to send a request for `url` when the server assigned another origin, or `None`.

    Only requests addressed to the configured `home_origin` move (path and query kept): the
    token goes to the origin the caller addressed or to the one the server assigned for it,
    never anywhere else.
    """
    if api_origin is None or home_origin is None or origin_of(url) != home_origin:
        return None
    parts = urlsplit(url)
    target = urlsplit(api_origin)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def should_renew_after(
    status: int,
    retry_statuses: Collection[int],
    *,
    signed_url: str,
    answered_url: str,
    carried_token: bool,
    already_resent: bool,
) -> bool:
    """Whether an API answer means "token rejected": renew and resend once.

    Only a status the user listed counts (401 by default; 403 means a missing permission,
    never an expired token), only once per request, and only when the answer came from the
    origin the token was sent to: a 401 from a redirect target elsewhere never triggers a
    renewal, and never receives a token.
    """
    if already_resent or not carried_token or status not in retry_statuses:
        return False
    return origin_of(answered_url) == origin_of(signed_url)
