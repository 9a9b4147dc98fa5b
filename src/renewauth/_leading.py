"""A leader's renewal from its start to its outcome, and what a waiter takes from it.

`Leader.leading` is the generator a flight's leader runs (through `_effects.drive` or
`adrive`): it runs the renewal's steps (`_renewal.Renewal.as_leader`) and ends the flight
with their token or error. A failure in the soft window is logged and tried again later,
the still-valid token kept; a failure with nothing valid to send is raised, and starts a
pause when the endpoint asked for one or refused the credentials. `Leader.outcome` is what a
waiter takes from a finished flight. Events go to `on_event` once per renewal, after the
flight has ended, so no callback ever runs while other callers wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from . import _flight, events
from ._effects import Steps
from ._endpoint import TokenEndpoint
from ._pauses import copy_of
from ._renewal import Renewal
from ._timing import is_spent
from .errors import TokenRequestError
from .token import Token

__all__ = ["Leader"]

logger = logging.getLogger("renewauth.manager")

_SOFT_RETRY_CAP = 30.0  # seconds between failed renewals in the soft window, at most


class Leader:
    """Leads one credential's renewals and ends their flights.

    Args:
        renewal: the steps, and the state they keep.
        endpoint: the token calls (which grant the last one sent).
        on_event: called with every `renewauth.events` value.
        on_token: called with every new token once the store has it.
    """

    def __init__(
        self,
        renewal: Renewal,
        endpoint: TokenEndpoint,
        *,
        on_event: events.OnEvent | None,
        on_token: Callable[[Token], None] | None,
    ) -> None:
        self.renewal = renewal
        self.endpoint = endpoint
        self.on_event = on_event
        self.on_token = on_token

    def leading(self, flight: _flight.Flight, stale: Token | None, *, soft: bool) -> Steps[Token]:
        """Renew as the flight's leader: its new token, or the still-valid `stale` in the
        soft window; raises what the renewal raised when there is nothing valid to send."""
        renewal = self.renewal
        # Re-checked as leader: a soft renewal may have failed since this caller looked.
        if soft and renewal.clock() < renewal.soft_retry_at:
            flight.finish(abandoned=True)
            return cast(Token, stale)
        started = renewal.clock()
        renewal.pauses.called = False
        try:
            token, renewed = yield from renewal.as_leader(stale)
        except Exception as exc:
            return self._fail(flight, stale, exc, soft=soft)
        except BaseException:
            flight.finish(abandoned=True)  # interrupted or cancelled: a waiter takes over
            raise
        flight.finish(token=token)
        self._renewed(token, renewed, started)
        if renewed and self.on_token is not None:
            # After the flight ended: a failing callback is its caller's error, not every
            # waiter's, and the token is already stored and in use.
            self.on_token(token)
        return token

    def outcome(
        self, flight: _flight.Flight, stale: Token | None, cached: Token | None, *, rejected: bool
    ) -> Token | None:
        """What a waiter takes from a finished flight; `None` means "begin again"."""
        if flight.abandoned:
            return None  # its leader was cancelled or interrupted: a waiter takes over
        if flight.error is not None:
            # From the leader's own cause when it has one (a network error's low-level error),
            # so that every caller reads the same `__cause__`; else from the leader's error.
            raise copy_of(flight.error) from (flight.error.__cause__ or flight.error)
        token = cast(Token, flight.token)
        if rejected and token.is_same_grant(stale):
            # That leader adopted the very token the API just rejected (it started from an
            # older stale token): renewing is still needed.
            return None
        if (
            cached is not None
            and not cached.is_same_grant(stale)
            and not is_spent(cached, self.renewal.clock())
        ):
            # Someone has replaced the token this waiter started from: this flight's leader,
            # or a later renewal. A waiter that resumes late must not put an older token
            # back (a server that revokes the old access token on refresh would reject it).
            return cached
        return self.renewal.adopt(token)

    def _fail(
        self, flight: _flight.Flight, stale: Token | None, exc: Exception, *, soft: bool
    ) -> Token:
        """End a failed renewal: back off and keep the token in the soft window, else raise."""
        renewal = self.renewal
        pauses = renewal.pauses
        now = renewal.clock()
        attempted, paused = pauses.failed(exc, renewal.origin, now)
        learned, pauses.learned = pauses.learned, None  # a pause read from the store
        next_try_in = pauses.next_try_in(now)
        if soft and stale is not None and not stale.is_expired(now):
            left = (stale.expires_at or now) - now
            wait = max(min(_SOFT_RETRY_CAP, max(left / 2, 0.0)), pauses.until - now)
            # Set before the flight ends, so no caller can slip in and retry at once.
            renewal.soft_retry_at = now + wait
            flight.finish(error=exc)
            logger.warning(
                "renewing the token for %s failed (%s); the current token stays valid for "
                "%.1f s, next try in %.1f s",
                renewal.origin,
                type(exc).__name__,
                left,
                wait,
            )
            self._failed(exc, wait, paused, learned, attempted=attempted)
            return stale
        flight.finish(error=exc)
        self._failed(exc, next_try_in, paused, learned, attempted=attempted)
        raise exc

    def _failed(
        self,
        exc: Exception,
        next_try_in: float | None,
        paused: events.Paused | None,
        learned: events.Paused | None,
        *,
        attempted: bool,
    ) -> None:
        """Tell `on_event` and the subscribers about a failed renewal (flight ended): one
        that made a call, and the pause it starts; else the pause read from the store, once."""
        if not attempted:
            if learned is not None:
                events.emit(learned, self.on_event)  # no call here, but say it once
            return
        status = exc.status if isinstance(exc, TokenRequestError) else None
        events.emit(
            events.RenewalFailed(
                origin=self.renewal.origin,
                error=type(exc).__name__,
                status=status,
                next_try_in=next_try_in,
            ),
            self.on_event,
        )
        if paused is not None:
            events.emit(paused, self.on_event)

    def _renewed(self, token: Token, renewed: bool, started: float) -> None:
        """Tell `on_event` and the subscribers about a leader's new token (flight ended)."""
        now = self.renewal.clock()
        events.emit(
            events.Renewed(
                origin=self.renewal.origin,
                grant=self.endpoint.grant_used if renewed else None,
                source="fetched" if renewed else "store",
                duration=max(now - started, 0.0),
                expires_in=None if token.expires_at is None else token.expires_at - now,
            ),
            self.on_event,
        )
