"""What both transports decide about a signed request, written once: functions of what they
are given, which send nothing. Three act besides deciding: `needs_dpop_nonce` keeps the nonce
an API sent in the DPoP key, `should_resend` warns (in the caller's logger) when only the
request body stands in the way of a resend, and `report_step_up` (which `should_resend`
calls) warns and emits `events.StepUpRequired` when an API asks for a stronger login."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .. import events
from .._urls import origin_of
from ..answers import clean_text
from ..dpop import DpopKey
from ._challenges import step_up_of

if TYPE_CHECKING:
    from ..manager import TokenManager
    from ..token import Token

__all__ = [
    "QUEUED_AT_MOST",
    "STEP_UP_STATUSES",
    "challenge_error",
    "is_https_upgrade",
    "is_nonce_challenge",
    "may_age_in_queue",
    "needs_dpop_nonce",
    "report_step_up",
    "routed_url",
    "should_renew_after",
    "should_resend",
]

# One auth-param (RFC 9110 §11.2): a token, "=", then a token or a quoted string. Scanning
# them in order consumes each quoted string whole, so text inside one is never a parameter.
_AUTH_PARAM = re.compile(r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)')


# Seconds a request may wait for a connection and still have its token checked when it leaves,
# where watching every request costs more than the rest of the signing (httpx2's trace
# listeners, aiohttp's `send` swapped on the request): a request signed with a token due for
# renewal within this is watched; one that waits longer and meets its expiry takes the 401
# path (renewed, resent once).
QUEUED_AT_MOST = 30.0

# The statuses an RFC 9470 step-up challenge comes with: a transport looks at the challenge
# of such an answer whether or not the status is in `retry_statuses`.
STEP_UP_STATUSES = frozenset({401, 403})


def may_age_in_queue(manager: TokenManager, token: Token) -> bool:
    """Whether a request signed now with `token` may meet its renewal while it waits for a
    connection: `token` is no longer `manager`'s fresh one, or is due within
    `QUEUED_AT_MOST` (the manager's own renewal time decides, as it does at departure)."""
    return manager.token_fresh_for(QUEUED_AT_MOST) is not token


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


def is_https_upgrade(
    scheme: bytes | str, port: int | None, new_scheme: bytes | str, new_port: int | None
) -> bool:
    """Whether going from (`scheme`, `port`) to (`new_scheme`, `new_port`) on the same host
    is the http -> https upgrade that requests and httpx treat as the same site: both ports
    the default, or not given."""
    as_text = [part.decode() if isinstance(part, bytes) else part for part in (scheme, new_scheme)]
    return as_text == ["http", "https"] and port in (None, 80) and new_port in (None, 443)


def challenge_error(www_authenticate: str | None) -> str | None:
    """The `error` an API's `WWW-Authenticate` challenge names, or `None` when it names none.

    `Bearer realm="api", error="insufficient_scope"` gives `"insufficient_scope"`. Only the
    parameter is read; the scheme and the other parameters do not matter here.
    """
    if not www_authenticate:
        return None
    for match in _AUTH_PARAM.finditer(www_authenticate):
        name, value = match.groups()
        if name.lower() == "error":
            if value.startswith('"'):
                return re.sub(r"\\(.)", r"\1", value[1:-1])
            return value or None
    return None


def should_renew_after(
    status: int,
    retry_statuses: Collection[int],
    *,
    signed_url: str,
    answered_url: str,
    carried_token: bool,
    already_resent: bool,
    challenge: str | None = None,
) -> bool:
    """Whether an API answer means "token rejected": renew and resend once.

    Only a status the user listed counts (401 by default; 403 means a missing permission,
    never an expired token), only once per request, and only when the answer came from the
    origin the token was sent to: a 401 from a redirect target elsewhere never triggers a
    renewal, and never receives a token. A 401 whose `WWW-Authenticate` `challenge` names
    an error other than `invalid_token` (RFC 6750 §3.1: `insufficient_scope`,
    `invalid_request`) says the token is not the problem: a new one would be refused alike.
    Another status the user listed (say 403) renews whatever its challenge says, but for a
    step-up challenge (RFC 9470 `insufficient_user_authentication`): only a new login helps.
    """
    if already_resent or not carried_token or status not in retry_statuses:
        return False
    if status == 401:
        error = challenge_error(challenge)
        if error is not None and error.lower() != "invalid_token":
            return False
    elif step_up_of(challenge) is not None:
        return False
    return origin_of(answered_url) == origin_of(signed_url)


def report_step_up(
    status: int,
    challenge: str | None,
    *,
    signed_url: str,
    answered_url: str,
    carried_token: bool,
    on_event: events.OnEvent | None,
    log: logging.Logger,
) -> bool:
    """Whether an API answer asks for a stronger login (RFC 9470): a 401 or 403 to a request
    that carried the token, from the origin it went to, whose Bearer (or DPoP) `challenge`
    names `error="insufficient_user_authentication"`. If so, says so on `log` (WARNING: the
    origin, the `acr_values` and `max_age` asked for) and emits one
    `events.StepUpRequired` through `on_event` and the subscribers; the answer then goes
    back to the caller as it is. A transport calls it for every such status it receives,
    whether or not it is in `retry_statuses` (`should_resend` does for those that are)."""
    if status not in STEP_UP_STATUSES or not carried_token:
        return False
    step_up = step_up_of(challenge)
    if step_up is None:
        return False
    origin = origin_of(signed_url)
    if origin_of(answered_url) != origin:
        return False  # a redirect target's challenge is not about this token
    log.warning(
        "%s answered %d asking for a stronger login (RFC 9470 step-up; acr_values %s, "
        "max_age %s): returned as it is, without renewing the token; the user must log in "
        "again as asked",
        origin,
        status,
        clean_text(" ".join(step_up.acr_values)) or "not named",
        "not set" if step_up.max_age is None else f"{step_up.max_age} s",
    )
    event = events.StepUpRequired(
        origin=origin, status=status, acr_values=step_up.acr_values, max_age=step_up.max_age
    )
    events.emit(event, on_event)
    return True


def is_nonce_challenge(status: int, challenge: str | None) -> bool:
    """Whether an API answer asks for a DPoP nonce (RFC 9449 §9): 401 with
    `WWW-Authenticate: DPoP error="use_dpop_nonce"`. The token is fine; only the proof
    must be made again with the nonce the answer carries."""
    return status == 401 and challenge_error(challenge) == "use_dpop_nonce"


def should_resend(
    status: int,
    retry_statuses: Collection[int],
    *,
    can_renew: bool,
    signed_url: str,
    answered_url: str,
    carried_token: bool,
    already_resent: bool,
    challenge: str | None,
    replayable: bool,
    log: logging.Logger,
    on_event: events.OnEvent | None = None,
) -> bool:
    """Whether to renew the token and resend the request after an API answer.

    Yes when the answer means "token rejected" (`should_renew_after`), the grant can renew
    (`can_renew`) and the request body can be sent again (`replayable`); a body that cannot
    is the one reason given in a warning on `log`, the transport's logger, since the caller
    can fix it (pass bytes). An answer asking for a stronger login is reported
    (`report_step_up`, with `on_event`, the auth object's callback) and never resent. The
    other arguments are `should_renew_after`'s.
    """
    if report_step_up(
        status,
        challenge,
        signed_url=signed_url,
        answered_url=answered_url,
        carried_token=carried_token,
        on_event=on_event,
        log=log,
    ):
        return False
    if not can_renew or not should_renew_after(
        status,
        retry_statuses,
        signed_url=signed_url,
        answered_url=answered_url,
        carried_token=carried_token,
        already_resent=already_resent,
        challenge=challenge,
    ):
        return False
    if not replayable:
        log.warning(
            "%s answered %d; not resending: the request body is a stream that cannot be "
            "replayed (pass bytes to send it again after a renewal)",
            origin_of(signed_url),
            status,
        )
        return False
    return True


def needs_dpop_nonce(
    dpop: DpopKey | None, url: object, status: int, headers: Mapping[str, str]
) -> bool:
    """DPoP: keep the nonce an API's answer (`status`, `headers`) to a request for `url`
    sent, in `dpop`; True when the answer asks for the proof again with it (the token
    itself is fine). False without a key or a nonce. `url` is the request's URL as its
    library holds it (an `httpx.URL` or a str): made a str only when a nonce came, since
    that costs as much as the rest of a cached-token request's DPoP checks."""
    nonce = headers.get("DPoP-Nonce")
    if dpop is None or not nonce:
        return False
    dpop.remember_nonce(str(url), nonce)
    return is_nonce_challenge(status, headers.get("WWW-Authenticate"))
