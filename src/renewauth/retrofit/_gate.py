"""The one sequence every HTTP library's adapter runs for a request it is about to send.

route → what the adapter sees → what the route knows (a token request? our own token? one the
API rejected?) → `plan` (again once the caller's own callable has run, when it asked to) →
explain → warn about the program's own Bearer token. The adapter then carries out the
`Verdict` in its library's terms, and reports the answer through `answered`. An adapter is the
`Outgoing` of its library's request and the wrapper of the method its library sends through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._routing import TABLE, Route
from .._urls import origin_of
from ..transports._challenges import step_up_of
from ._diagnostics import (
    explain,
    explain_unmatched,
    warn_about_existing_bearer,
    warn_about_rejection,
    warn_if_rejected,
    warn_not_resent,
    warn_own_step_up,
)
from ._plan import Action, Decision, Facts, Seen, is_signature, plan, token_request_reason

__all__ = ["Outgoing", "Verdict", "answered", "judge", "resend_after_rejection"]


class Outgoing(Protocol):
    """A request about to be sent, as an adapter shows it to `judge`."""

    @property
    def url(self) -> str:
        """The URL the caller addressed."""
        ...

    def seen(self, route: Route) -> Seen:
        """What the request carries, under `route`."""
        ...

    def run_own_auth(self) -> Seen:
        """Run the caller's own callable auth (asked only when `seen` said it is pending) and
        say what the request carries after it."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a request under `route`, addressed to `origin`."""

    route: Route
    origin: str
    decision: Decision

    @property
    def action(self) -> Action:
        """The decision's action."""
        return self.decision.action


def _facts(route: Route, seen: Seen, token_request: str | None) -> Facts:
    authorization = seen.authorization
    ours = rejected = False
    if authorization is not None:
        current = route.auth.token
        ours = is_signature(authorization) or (
            current is not None and authorization == current.authorization
        )
        rejected = route.state.was_rejected(authorization)
    return Facts(seen, route.label, route.existing_bearer, token_request, ours, rejected)


def judge(outgoing: Outgoing) -> Verdict | None:
    """Decide, explain and warn for one request; None when no route covers it (send it as
    the caller asked)."""
    url = outgoing.url
    route = TABLE.route_for(url)
    if route is None:
        explain_unmatched(url)
        return None
    origin = origin_of(url)
    seen = outgoing.seen(route)
    decision = plan(_facts(route, seen, token_request_reason(TABLE.routes, url, seen)))
    if decision.action is Action.RUN_OWN_AUTH:
        # The token-request check is done: the request was none before the callable ran.
        decision = plan(_facts(route, outgoing.run_own_auth(), None))
    if decision.reason is not None:
        explain(origin, decision.reason)
    if decision.existing:
        warn_about_existing_bearer(route, origin)
    return Verdict(route, origin, decision)


def answered(verdict: Verdict, status: int) -> None:
    """After the answer to a request left alone: a 401 is warned about, once."""
    decision = verdict.decision
    if decision.warn_on_401 and decision.reason is not None:
        warn_if_rejected(verdict.route, verdict.origin, decision.reason, status)


def resend_after_rejection(
    route: Route,
    origin: str,
    authorization: str,
    status: int,
    *,
    replayable: bool,
    challenge: str | None = None,
) -> bool:
    """The API rejected the program's own Bearer token (`keep-until-401`): remember it as
    rejected and say so; whether to resend once with the route's token (not when the body
    cannot be replayed). An answer whose `challenge` asks for a stronger login (RFC 9470)
    rejects nothing: the program's user must log in again, so it goes back as it is."""
    if step_up_of(challenge) is not None:
        warn_own_step_up(route, origin, status)
        return False
    route.state.reject(authorization)
    warn_about_rejection(route, origin)
    if not replayable:
        warn_not_resent(route, origin, status)
    return replayable
