"""Reading an API's `WWW-Authenticate` header (RFC 9110 §11.6.1): its challenges, and the
step-up one of RFC 9470. Pure functions of a string; they never raise, whatever the server
sent, since the header comes from the network.

A header holds one or more challenges separated by commas, each a scheme followed by either
a token68 or auth-params (`name=token` or `name="quoted string"`), themselves separated by
commas: `Basic realm="a, b", Bearer error="insufficient_user_authentication",
acr_values="urn:a urn:b"`. A comma therefore only ends a challenge when what follows is not
a parameter; a quoted string is consumed whole, so a comma or an `=` inside it is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["Challenge", "StepUp", "parse_challenges", "step_up_of"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# An auth-param: a token, optional whitespace, "=", optional whitespace, then a quoted string
# (backslash escapes kept for unquoting) or a token, possibly empty (lenient).
_PARAM = re.compile(
    r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*"
    r"(?:\"((?:[^\"\\]|\\.)*)\"|([!#$%&'*+.^_`|~0-9A-Za-z-]*))",
    re.DOTALL,
)
_TOKEN68 = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|$)")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_MAX_AGE = re.compile(r"[0-9]{1,18}")  # seconds; a longer number is not a time anyone means

# Schemes whose challenges carry RFC 6750's `error` codes: Bearer, and DPoP (RFC 9449 §7.1).
_TOKEN_SCHEMES: Final = frozenset({"bearer", "dpop"})
STEP_UP_ERROR: Final = "insufficient_user_authentication"  # RFC 9470 §3


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: its scheme (lower case), its
    auth-params (names lower case, quoted values unquoted; a repeated name keeps its first
    value) or its token68."""

    scheme: str
    params: MappingProxyType[str, str]
    token68: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepUp:
    """What a step-up challenge (RFC 9470 §3) asks for: the authentication context classes,
    in the API's order of preference (empty when it names none), and the most seconds since
    the user last logged in actively (`None`: no limit, or not a number)."""

    acr_values: tuple[str, ...]
    max_age: int | None


def parse_challenges(header: str | None) -> tuple[Challenge, ...]:
    """The challenges of a `WWW-Authenticate` value, in order; what cannot be read is
    skipped (a parameter before any scheme, a stray character, an unterminated quote ends
    the header)."""
    if not header:
        return ()
    found: list[tuple[str, dict[str, str], str | None]] = []
    position, end = 0, len(header)
    while position < end:
        character = header[position]
        if character in " \t,":
            position += 1
            continue
        param = _PARAM.match(header, position)
        if param is not None and found:
            name, quoted, bare = param.groups()
            value = _ESCAPE.sub(r"\1", quoted) if quoted is not None else bare
            found[-1][1].setdefault(name.lower(), value)
            position = param.end()
            continue
        scheme = _TOKEN.match(header, position)
        if scheme is None:
            if character == '"':  # a quoted string out of place: skip it whole, or stop
                closing = _QUOTED.match(header, position)
                if closing is None:
                    break
                position = closing.end()
            else:
                position += 1
            continue
        position = scheme.end()
        token68 = _TOKEN68.match(header, position)
        if token68 is not None:
            found.append((scheme.group().lower(), {}, token68.group(1)))
            position = token68.end()
        else:
            found.append((scheme.group().lower(), {}, None))
    return tuple(
        Challenge(scheme=scheme, params=MappingProxyType(params), token68=token68)
        for scheme, params, token68 in found
    )


def step_up_of(header: str | None) -> StepUp | None:
    """What the first Bearer (or DPoP) challenge of `header` asks for when its `error` is
    `insufficient_user_authentication` (RFC 9470: log in again, more strongly or more
    recently), else `None`. Never raises."""
    if not header or STEP_UP_ERROR not in header.lower():  # most answers: one scan
        return None
    for challenge in parse_challenges(header):
        if challenge.scheme not in _TOKEN_SCHEMES:
            continue
        if challenge.params.get("error", "").lower() != STEP_UP_ERROR:
            continue
        max_age = challenge.params.get("max_age", "").strip()
        return StepUp(
            acr_values=tuple(challenge.params.get("acr_values", "").split()),
            max_age=int(max_age) if _MAX_AGE.fullmatch(max_age) else None,
        )
    return None
