"""When token calls pause, and what a pause is about: the state of one manager's pauses.

After the token endpoint asks for a pause (a 429 or 503 whose wait is longer than the
retries cover) or refuses the credentials, no call is made before the pause ends: a throttled
login is never hammered, and a wrong password is not sent until the account locks. A pause is
shared through a `PauseStore`, so that N processes make one call per pause between them.

Sans-IO: the instants come from the caller, and the store's pause record is read, written and
deleted through effects (`_effects`) that the renewal's driver carries out.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
from collections.abc import Callable
from typing import cast

from . import events
from ._effects import DeletePause, ReadPause, Steps, WritePause
from .errors import (
    InvalidClient,
    InvalidGrant,
    StoreError,
    TokenEndpointUnavailable,
    TokenRequestError,
)
from .stores import Pause

__all__ = ["CREDENTIAL_PAUSE", "PauseState", "copy_of", "fingerprint", "pause_for"]

logger = logging.getLogger("renewauth.manager")

CREDENTIAL_PAUSE = 60.0  # seconds refused credentials are not sent again


def pause_for(exc: Exception, now: float) -> tuple[float, events.PauseReason] | None:
    """When token calls may resume after `exc`, and why; `None` if `exc` starts no pause."""
    if isinstance(exc, TokenEndpointUnavailable) and exc.retry_after:
        return now + exc.retry_after, "retry-after"
    if isinstance(exc, InvalidGrant | InvalidClient):
        # Refused credentials will be refused again: asking again on every request is how
        # accounts get locked (OrderCloud: 30 minutes after a few failures).
        return now + CREDENTIAL_PAUSE, "refused"
    return None


def fingerprint(refresh_token: str) -> str:
    """What a shared pause records of a refused refresh token: a hash, never the token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


def copy_of(error: Exception) -> Exception:
    """A copy of an error for one caller: sharing one object across threads would pile
    every caller's traceback onto it."""
    try:
        return copy.copy(error)
    except Exception:  # an exception type that cannot be copied: share it after all
        return error


class PauseState:
    """One manager's pause: until when, the error it raises again, and what it is about.

    Args:
        shared: whether the store records pauses (a `PauseStore`).

    Attributes:
        until: no token call before this instant.
        error: the "try later" raised again, without a call, while the pause lasts.
        refresh: the fingerprint of the refused refresh token the pause is about (a chain's),
            so that it never stops a renewal from a newer one.
        shared_until: the `until` of this pause when the store has it too (written or read).
        learned: a pause read from the store and not reported yet.
        recorded: whether the last read under the lock found a record (a success deletes it).
        presenting: the fingerprint of the refresh token the running renewal sends.
        called: whether the running renewal reached the token endpoint.
        reraised: the last pause error raised again without a call.
    """

    __slots__ = (
        "called",
        "error",
        "learned",
        "presenting",
        "recorded",
        "refresh",
        "reraised",
        "shared",
        "shared_until",
        "until",
    )

    def __init__(self, *, shared: bool) -> None:
        self.shared = shared
        self.until = -math.inf
        self.error: TokenRequestError | None = None
        self.refresh: str | None = None
        self.shared_until: float | None = None
        self.learned: events.Paused | None = None
        self.recorded = False
        self.presenting: str | None = None
        self.called = False
        self.reraised: Exception | None = None

    def clear(self) -> None:
        """A token call succeeded: no pause."""
        self.until = -math.inf
        self.error = None
        self.refresh = None
        self.shared_until = None
        self.learned = None

    def take(self, pause: Pause | None, origin: str, now: float, *, chain: bool) -> None:
        """Take up the pause another process recorded in the store (read under the lock)."""
        self.recorded = pause is not None
        if pause is not None and pause.until > now:
            if pause.until != self.shared_until:  # not the one this process knows
                self.error = pause.to_error(origin)
                self.until = self.shared_until = pause.until
                self.refresh = pause.refresh if chain else None
                self.learned = events.Paused(origin=origin, until=pause.until, reason=pause.reason)
        elif self.shared_until is not None:
            # The store's record of this process's pause is gone or over: a success
            # elsewhere ended it (a process whose clock runs ahead, say).
            self.clear()

    def load(self, origin: str, clock: Callable[[], float], *, chain: bool) -> Steps[None]:
        """Take up the pause another process recorded in the store (under the lock)."""
        if self.shared:
            try:
                pause = yield ReadPause()
            except StoreError:
                return  # keep what this process knows; the token call decides
            self.take(pause, origin, clock(), chain=chain)

    def share(self, exc: TokenRequestError, origin: str, clock: Callable[[], float]) -> Steps[None]:
        """Record the pause `exc` starts in the store, for every process sharing it."""
        self.shared_until = None
        found = pause_for(exc, clock()) if self.shared else None
        if found is None:
            return
        pause = Pause.of(exc, *found, refresh=self.refused_refresh(exc))
        try:
            yield WritePause(pause)
        except StoreError as error:
            logger.warning(
                "the pause of token calls for %s could not be written to the store (%s): this "
                "process keeps it, others sharing the store may still call once",
                origin,
                error,
            )
        else:
            self.shared_until, self.recorded = pause.until, True

    def end(self) -> Steps[None]:
        """A token call succeeded: delete the store's pause record, if the last read saw one."""
        if self.shared and self.recorded:
            with contextlib.suppress(StoreError):  # it expires on its own
                yield DeletePause()
            self.recorded = False

    def refused_refresh(self, exc: Exception) -> str | None:
        """The fingerprint of the refresh token `exc` refused, when it is a chain's."""
        return self.presenting if isinstance(exc, InvalidGrant) else None

    def check(self, presented: str | None, clock: Callable[[], float]) -> None:
        """Raise the last "try later" again, without a call, while its pause lasts; a pause
        about one refused refresh token does not stop a renewal from a newer one. The clock
        is read only while a pause error is held."""
        error = self.error
        if error is None or clock() >= self.until:
            return
        if self.refresh is not None and self.refresh != presented:
            return
        self.reraised = copy_of(error)
        raise self.reraised from error

    def failed(self, exc: Exception, origin: str, now: float) -> tuple[bool, events.Paused | None]:
        """A renewal failed with `exc`: whether it made a call (else it raised a running
        pause again), and the pause it starts, if any."""
        # Not the re-raised error of a running pause (a call past a pause about an older
        # refresh token of the chain was made, though).
        attempted = (now >= self.until or self.called) and exc is not self.reraised
        if not attempted:
            return False, None
        found = pause_for(exc, now)
        if found is None:
            return True, None
        until, reason = found
        if self.shared_until is not None and self.shared_until > now:
            until = self.shared_until  # the very `until` the other processes read
        self.error, self.until = cast(TokenRequestError, exc), until
        self.refresh = self.refused_refresh(exc)
        return True, events.Paused(origin=origin, until=until, reason=reason)

    def next_try_in(self, now: float) -> float | None:
        """Seconds until token calls resume, or `None` when no pause runs."""
        return self.until - now if self.until > now else None
