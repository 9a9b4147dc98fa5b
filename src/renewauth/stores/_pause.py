"""`Pause`: a stop on token calls that every process sharing a store keeps.

When a token endpoint refuses the credentials or asks for a long wait (`Retry-After`), the
process that asked writes a `Pause` next to the token, under the renewal lock; every other
process reads it under the same lock before it would call, and raises the same typed error
without calling. A success anywhere deletes it. A store without these methods keeps each
process's pause to itself, as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from ..errors import InvalidClient, InvalidGrant, TokenEndpointUnavailable, TokenRequestError
from ..events import PauseReason

__all__ = ["Pause", "PauseStore"]

_ERRORS: dict[str, type[TokenRequestError]] = {
    "InvalidGrant": InvalidGrant,
    "InvalidClient": InvalidClient,
    "TokenEndpointUnavailable": TokenEndpointUnavailable,
}
_REASONS = ("retry-after", "refused")
_TEXT_LIMIT = 2000  # characters kept of a message or description: a record stays small


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """No token call for one credential set before `until`, and the error to raise meanwhile.

    Attributes:
        until: seconds since the epoch (the managers' clock) when calls may resume.
        reason: `"retry-after"` (the endpoint asked to wait) or `"refused"`.
        error: the error's type: `"InvalidGrant"`, `"InvalidClient"` or
            `"TokenEndpointUnavailable"`.
        message: the error's message. None of these fields is a secret (see
            `renewauth.errors`).
        status: the token endpoint's HTTP status, if it answered.
        code: the OAuth `error` code of the answer (`invalid_grant`, …).
        description: the answer's `error_description`.
        retry_after: the seconds the endpoint asked to wait.
        refresh: for a refused refresh token of a chain (`flows.ChainGrant`), a fingerprint
            of that refresh token (a hash, never the token): the pause stops only a renewal
            that would present it again, not one from a newer token of the same chain.
    """

    until: float
    reason: PauseReason
    error: str
    message: str
    status: int | None = None
    code: str | None = None
    description: str | None = None
    retry_after: float | None = None
    refresh: str | None = None

    @classmethod
    def of(
        cls,
        exc: TokenRequestError,
        until: float,
        reason: PauseReason,
        *,
        refresh: str | None = None,
    ) -> Pause:
        """The pause that `exc` starts, lasting until `until` (for the refresh token whose
        fingerprint is `refresh`, if it is about one)."""
        return cls(
            until=until,
            reason=reason,
            error=type(exc).__name__ if type(exc).__name__ in _ERRORS else "TokenRequestError",
            message=str(exc)[:_TEXT_LIMIT],
            status=exc.status,
            code=exc.error,
            description=None
            if exc.error_description is None
            else exc.error_description[:_TEXT_LIMIT],
            retry_after=getattr(exc, "retry_after", None),
            refresh=refresh,
        )

    def to_error(self, origin: str) -> TokenRequestError:
        """The error this pause raises in a process that did not make the refused call."""
        kind = _ERRORS.get(self.error, TokenRequestError)
        message = (
            f"{self.message} (a process sharing this token store was told so; no token "
            "call is made before the pause ends)"
        )
        fields: dict[str, Any] = {
            "status": self.status,
            "error": self.code,
            "error_description": self.description,
            "origin": origin,
        }
        if kind is TokenEndpointUnavailable:
            return TokenEndpointUnavailable(message, retry_after=self.retry_after, **fields)
        return kind(message, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The pause as a JSON-ready dict (what `FileStore` and `RedisStore` write)."""
        return {
            "until": self.until,
            "reason": self.reason,
            "error": self.error,
            "message": self.message,
            "status": self.status,
            "code": self.code,
            "description": self.description,
            "retry_after": self.retry_after,
            "refresh": self.refresh,
        }

    @classmethod
    def from_dict(cls, data: object) -> Pause | None:
        """The pause `data` describes, or `None` if it is not one (a corrupt record pauses
        nothing: the worst it costs is one token call)."""
        if not isinstance(data, Mapping):
            return None
        until, reason, error, message = (
            data.get(name) for name in ("until", "reason", "error", "message")
        )
        if not _is_number(until) or not isinstance(reason, str) or reason not in _REASONS:
            return None
        if not isinstance(error, str) or error not in _ERRORS or not isinstance(message, str):
            return None
        status, code, description, retry_after = (
            data.get(name) for name in ("status", "code", "description", "retry_after")
        )
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            status = None
        if retry_after is not None and not _is_number(retry_after):
            retry_after = None
        refresh = data.get("refresh")
        return cls(
            until=float(cast(float, until)),
            reason=cast(PauseReason, reason),
            error=error,
            message=message[:_TEXT_LIMIT],
            status=status,
            code=code if isinstance(code, str) else None,
            description=description[:_TEXT_LIMIT] if isinstance(description, str) else None,
            retry_after=None if retry_after is None else float(retry_after),
            refresh=refresh[:64] if isinstance(refresh, str) else None,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@runtime_checkable
class PauseStore(Protocol):
    """The optional part of a store that shares pauses between the processes using it.

    `FileStore`, `RedisStore` and `MemoryStore` have it. The manager calls these under
    `lock(key)`; a `StoreError` from them leaves the pause to the process that has it.
    """

    def get_pause(self, key: str) -> Pause | None:
        """The pause recorded for `key`, or `None` (an ended one may still be returned)."""
        ...

    def set_pause(self, key: str, pause: Pause) -> None:
        """Record `pause` for `key`, replacing any other."""
        ...

    def delete_pause(self, key: str) -> None:
        """Forget the pause of `key` (no error if there is none)."""
        ...

    async def aget_pause(self, key: str) -> Pause | None:
        """`get_pause` without blocking the event loop."""
        ...

    async def aset_pause(self, key: str, pause: Pause) -> None:
        """`set_pause` without blocking the event loop."""
        ...

    async def adelete_pause(self, key: str) -> None:
        """`delete_pause` without blocking the event loop."""
        ...
