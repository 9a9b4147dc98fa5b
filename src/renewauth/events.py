"""Typed, immutable events about renewals: see them happen without reading logs.

Pass `on_event=` to an auth object, or register process-wide with `subscribe`. Events are
emitted only off the hot path: when a token is renewed (or adopted from the store), when a
renewal fails, when a request is resent after a status, when token calls pause, when a
refresh token nears its end, and when an API asks for a stronger login. No event carries a
secret: only origins, grant names, error type names, statuses, times, durations and what an
API asked for.

Example::

    from renewauth import events

    unsubscribe = events.subscribe(lambda event: print(event))
    ...
    unsubscribe()

A callback runs in the thread (or event-loop task) that renewed, after the renewal's flight
ended, so waiters never wait for it; `RefreshTokenExpiring` alone may come while the
renewing caller still holds the store's lock. Keep callbacks short. An exception a callback
raises is logged at WARNING and dropped.

.. versionadded:: 0.2
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Event",
    "OnEvent",
    "PauseReason",
    "Paused",
    "RefreshTokenExpiring",
    "RenewalFailed",
    "Renewed",
    "Resent",
    "StepUpRequired",
    "emit",
    "subscribe",
]

logger = logging.getLogger(__name__)


PauseReason = Literal["retry-after", "refused"]
"""Why token calls paused: the endpoint asked to wait, or it refused the credentials."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Renewed:
    """A leader has a new token: fetched from the token endpoint, or adopted from the store.

    Attributes:
        origin: the token endpoint's origin.
        grant: the grant of the last token call (`"refresh_token"`, `"password"`, …), or
            `None` when the token was adopted from the store.
        source: `"fetched"` (token calls were made) or `"store"` (another caller renewed).
        duration: seconds the renewal took, token calls, retries and store included.
        expires_in: seconds the new access token has left, or `None` when unknown.
    """

    origin: str
    grant: str | None
    source: Literal["fetched", "store"]
    duration: float
    expires_in: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalFailed:
    """A renewal failed after its retries.

    Attributes:
        origin: the token endpoint's origin.
        error: the exception's type name (`"InvalidGrant"`, `"TokenEndpointUnavailable"`, …).
        status: the token endpoint's HTTP status, or `None` (a network error, a store error).
        next_try_in: seconds before the next token call can be made (a soft-window backoff
            or a pause), or `None` when the next request tries again.
    """

    origin: str
    error: str
    status: int | None
    next_try_in: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resent:
    """A request was resent once after the API answered a status in `retry_statuses`.

    Attributes:
        origin: the API's origin (the request's, never the token endpoint's).
        status: the status that caused the resend (401 unless configured otherwise).
    """

    origin: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Paused:
    """Token calls for a credential set are paused: none is made before `until`.

    Attributes:
        origin: the token endpoint's origin.
        until: when calls may resume (seconds, the manager's clock).
        reason: `"retry-after"` (the endpoint asked to wait) or `"refused"` (the credentials
            were refused: asking again is how accounts get locked).
    """

    origin: str
    until: float
    reason: PauseReason


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTokenExpiring:
    """A refresh token is inside its warning window (emitted once per refresh token).

    Attributes:
        origin: the token endpoint's origin.
        ends_at: when it stops working (seconds, the manager's clock).
        ends_in: seconds left then.
        idle: True when the end is its idle timeout, False when its stated expiry.
    """

    origin: str
    ends_at: float
    ends_in: float
    idle: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StepUpRequired:
    """An API asked for a stronger or more recent login (RFC 9470 step-up): its answer (401
    or 403) carried `WWW-Authenticate: Bearer error="insufficient_user_authentication"`.

    No new token of the same grant can satisfy it, so the answer was returned as it is,
    without a renewal or a resend; the user must consent again (log in with the
    authentication context the API names, or within `max_age`), then the request can be
    made again. Emitted once per such answer, in the thread or task that received it.

    Attributes:
        origin: the API's origin (the request's, never the token endpoint's).
        status: the answer's status, 401 or 403.
        acr_values: the authentication context class references the API asks for, in its
            order of preference (the challenge's `acr_values`); empty when it names none.
        max_age: the most seconds since the user last logged in actively that the API
            accepts (the challenge's `max_age`), or `None` when it sets no limit.
    """

    origin: str
    status: int
    acr_values: tuple[str, ...]
    max_age: int | None


Event = Renewed | RenewalFailed | Resent | Paused | RefreshTokenExpiring | StepUpRequired
OnEvent = Callable[[Event], None]
"""A callback receiving every event of one auth object (`on_event=`) or of all of them."""


class _Subscribers:
    """The process-wide callbacks: a tuple replaced whole under `lock`, read without it."""

    def __init__(self) -> None:
        self.callbacks: tuple[OnEvent, ...] = ()
        self.lock = threading.Lock()


_SUBSCRIBERS = _Subscribers()


def subscribe(callback: OnEvent) -> Callable[[], None]:
    """Receive every event of every auth object in this process.

    Args:
        callback: called with each event, after the auth object's own `on_event`.

    Returns:
        A callable that unsubscribes `callback` (calling it twice is harmless).

    Raises:
        TypeError: `callback` is not callable.
    """
    if not callable(callback):
        raise TypeError("subscribe() takes a callable receiving renewauth.events values")
    with _SUBSCRIBERS.lock:
        _SUBSCRIBERS.callbacks = (*_SUBSCRIBERS.callbacks, callback)
    subscribed = [True]

    def unsubscribe() -> None:
        with _SUBSCRIBERS.lock:
            if not subscribed[0]:
                return
            subscribed[0] = False
            remaining = list(_SUBSCRIBERS.callbacks)
            remaining.remove(callback)
            _SUBSCRIBERS.callbacks = tuple(remaining)

    return unsubscribe


def emit(event: Event, on_event: OnEvent | None = None) -> None:
    """Hand `event` to `on_event`, then to every subscriber; a failing callback is logged."""
    subscribers = _SUBSCRIBERS.callbacks
    callbacks = subscribers if on_event is None else (on_event, *subscribers)
    for callback in callbacks:
        try:
            callback(event)
        except Exception as exc:  # a callback's bug must not break a renewal
            logger.warning(
                "an event callback raised %s on %s; the event is dropped for it",
                type(exc).__name__,
                type(event).__name__,
            )
