"""What both transports decide about a signed request: pure functions, written once."""

from __future__ import annotations

from collections.abc import Collection

from .._urls import origin_of

__all__ = ["should_renew_after"]


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
