"""What retrofit does with one request under a route: the decision, and nothing else.

An adapter (`_requests`, `_httpx`) says what it sees on a request as `Seen`; the gate (`_gate`)
adds what the route table knows and calls `plan(facts)`, which weighs the facts in one order
and returns a `Decision`. Nothing here logs, sends, patches or reads a clock, so the order in
which things are weighed is written once, for every HTTP library:

1. the caller's auth answers challenges itself (Digest, a renewauth object): left alone;
2. a token request (to a route's token endpoint, or a body naming a `grant_type`): left alone;
3. the caller's own auth cannot be looked into before sending: left alone;
4. signed by this very route already (a request sent again): sent as it is;
5. the caller's own plain callable has not run yet: run it, then plan again;
6. no `Authorization`: signed; one of another scheme: left alone; the program's own `Bearer`
   token: what the route's `existing_bearer` says, unless the API rejected that token before.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._routing import ExistingBearer, Route
from .._urls import origin_of
from ..token import Token

__all__ = [
    "KNOWN_SCHEMES",
    "Action",
    "Decision",
    "Facts",
    "Seen",
    "is_signature",
    "name_of",
    "names_a_grant",
    "plan",
    "scheme_of",
    "token_request_reason",
]

# The IANA HTTP authentication scheme registry, and schemes APIs commonly use.
KNOWN_SCHEMES = {
    name.lower(): name
    for name in (
        "Basic", "Bearer", "Concealed", "Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate",
        "OAuth", "PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid", "NTLM", "Token",
        "ApiKey", "Api-Key", "SSWS", "GenieKey", "Splunk", "Hawk", "MAC", "JWT", "AWS4-HMAC-SHA256",
        "SharedKey", "SharedAccessSignature", "Key", "Session",
    )
}  # fmt: skip
_TOKEN_BODY_LIMIT = 8192  # bytes: a token request is small; a larger body is never one


class Action(enum.Enum):
    """What the adapter does with the request."""

    SIGN = "sign"  # with the route's token, its own Authorization dropped
    LEAVE = "leave"  # as the caller built it
    KEEP_UNTIL_REJECTED = "keep-until-401"  # as built; after a rejection, once more with ours
    AS_IS = "as is"  # signed by this route already: nothing to add, nothing to say
    RUN_OWN_AUTH = "run own auth"  # run the caller's callable, then plan again


@dataclass(frozen=True, slots=True)
class Decision:
    """What `plan` decided, and the words for it."""

    action: Action
    reason: str | None = None  # explained once per origin (`--explain`); None: nothing to say
    existing: bool = False  # the program's own Bearer token is what `existing_bearer` decided
    warn_on_401: bool = False  # left alone: a 401 to it is worth a warning with the reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """A request under a route as its adapter sees it; what an adapter cannot know is left
    at its default."""

    method: str = ""
    content_type: str = ""
    body: object = None  # bytes or str when known; only a POST's is looked at
    answering_auth: str | None = None  # the name of a caller's auth that answers challenges
    opaque_auth: str | None = None  # the name of a caller's auth not to be looked into
    signed_here: bool = False  # signed by this route already, its 401 handling in place
    own_auth_pending: bool = False  # the caller's plain callable has not run yet
    authorization: str | None = None  # the header as it stands once the caller's auth ran
    own_auth: str | None = None  # the name of the caller's auth (None: none, or a no-op)
    header_given: bool | None = None  # an Authorization among the caller's headers (None: unknown)
    userinfo: bool = False  # the URL carries user:password
    basic_from_url: bool = False  # the library adds Basic from that user:password when sending


@dataclass(frozen=True, slots=True)
class Facts:
    """What `plan` weighs: what the adapter saw, and what the route knows of it."""

    seen: Seen
    label: str  # the route's, as log lines name it
    existing_bearer: ExistingBearer
    token_request: str | None  # why the request is a token request, or None
    ours: bool  # the Authorization is a token of this route (a redirect, a reuse)
    rejected: bool  # the API rejected this very Authorization before


def plan(facts: Facts) -> Decision:
    """What to do with a request, from the facts, weighed in the order the module names."""
    seen = facts.seen
    if seen.answering_auth is not None:
        return Decision(Action.LEAVE, f"left alone: brings its own auth ({seen.answering_auth})")
    if facts.token_request is not None:
        return Decision(Action.LEAVE, facts.token_request, warn_on_401=True)
    if seen.opaque_auth is not None:
        reason = f"left alone: brings its own auth ({seen.opaque_auth})"
        return Decision(Action.LEAVE, reason, warn_on_401=True)
    if seen.signed_here:
        return Decision(Action.AS_IS)
    if seen.own_auth_pending:
        return Decision(Action.RUN_OWN_AUTH)
    if seen.authorization is None:
        return _unsigned(facts)
    scheme = scheme_of(seen.authorization)
    if scheme.lower() != "bearer":
        return Decision(Action.LEAVE, _why_not_bearer(seen, scheme), warn_on_401=True)
    return _bearer(facts)


def _unsigned(facts: Facts) -> Decision:
    seen = facts.seen
    if seen.basic_from_url:
        reason = "left alone: carries an Authorization (Basic) from the URL's user:password"
        return Decision(Action.LEAVE, reason, warn_on_401=True)
    if seen.own_auth is None:
        return Decision(Action.SIGN, f"signed by {facts.label}")
    return Decision(
        Action.SIGN,
        f"signed by {facts.label}: its own auth ({seen.own_auth}) added no Authorization header",
    )


def _why_not_bearer(seen: Seen, scheme: str) -> str:
    if seen.own_auth is not None and not seen.header_given:
        return (
            f"left alone: brings its own auth ({seen.own_auth}), which set a non-Bearer "
            f"Authorization (scheme: {scheme})"
        )
    if seen.userinfo:
        return f"left alone: carries an Authorization ({scheme}) from the URL's user:password"
    if seen.header_given is False:
        return (
            f"left alone: carries an Authorization ({scheme}) that requests took from ~/.netrc "
            "(set trust_env = False on the session, or drop the host from ~/.netrc, to have "
            "it signed)"
        )
    return f"left alone: carries a non-Bearer Authorization (scheme: {scheme})"


def _bearer(facts: Facts) -> Decision:
    label = facts.label
    if facts.ours:
        return Decision(Action.SIGN, f"signed by {label}")  # our own: a redirect or a reuse
    if facts.rejected:
        return Decision(
            Action.SIGN, f"signed by {label}, replacing a Bearer token the API rejected"
        )
    if facts.existing_bearer == "replace":
        reason = f"its own Bearer token replaced by {label}'s (existing_bearer='replace')"
        return Decision(Action.SIGN, reason, existing=True)
    if facts.existing_bearer == "keep":
        reason = "left alone: its own Bearer token kept (existing_bearer='keep')"
        return Decision(Action.LEAVE, reason, existing=True)
    reason = "its own Bearer token kept until the API rejects it (existing_bearer='keep-until-401')"
    return Decision(Action.KEEP_UNTIL_REJECTED, reason, existing=True)


def scheme_of(authorization: str) -> str:
    """The scheme of an Authorization header, safe to log: only a registered or well-known
    scheme is named, since the first word of a header without one may be a secret."""
    scheme, space, _ = authorization.strip().partition(" ")
    if not space:
        return "a value without a scheme"
    return KNOWN_SCHEMES.get(scheme.lower(), "a scheme of its own")


def is_signature(authorization: str | None) -> bool:
    """Whether a header value was set by a renewauth object: the requests transport sets a
    `str` that also carries its `Token` (and writes the current one when the header leaves)."""
    return isinstance(getattr(authorization, "token", None), Token)


def name_of(auth: object) -> str:
    """A name for the caller's auth in a log line: its function's or its class's name."""
    if isinstance(auth, tuple):
        return "a (user, password) tuple"
    name = getattr(auth, "__qualname__", None)  # a function; an instance has none of its own
    return name if isinstance(name, str) else type(auth).__qualname__


@functools.lru_cache(maxsize=64)
def _endpoint(url: str) -> str:
    """Origin and path of `url`: what two URLs of one endpoint share."""
    return origin_of(url) + urlsplit(url).path


def names_a_grant(content_type: str, body: object) -> bool:
    """Whether a small form or JSON body has a top-level `grant_type` (RFC 6749 §4)."""
    if isinstance(body, str):
        body = body[: _TOKEN_BODY_LIMIT + 1].encode("utf-8", "replace")
    if not isinstance(body, bytes) or not body or len(body) > _TOKEN_BODY_LIMIT:
        return False
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return any(field.partition(b"=")[0] == b"grant_type" for field in body.split(b"&"))
    if media == "application/json" or media.endswith("+json"):
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return False
        return isinstance(fields, dict) and isinstance(fields.get("grant_type"), str)
    return False


def _token_url_of(route: Route) -> str | None:
    try:
        return str(route.auth.token_url)
    except Exception:  # a grant of the user's own that cannot say: it matches nothing
        return None


def token_request_reason(routes: Iterable[Route], url: str, seen: Seen) -> str | None:
    """Why a request is a token request, not an API call, or None: a POST to the token
    endpoint of a route's auth, or a POST whose small form or JSON body has a top-level
    `grant_type`. A program's own token request must never carry a renewauth token."""
    if seen.method.upper() != "POST":
        return None
    target = _endpoint(url)
    for route in routes:
        token_url = _token_url_of(route)
        if token_url is not None and _endpoint(token_url) == target:
            return f"left alone: a request to the token endpoint of {route.label}"
    if names_a_grant(seen.content_type, seen.body):
        return "left alone: a token request of the program's own (its body names a grant_type)"
    return None
