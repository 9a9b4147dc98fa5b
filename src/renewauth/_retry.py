"""When to try a token request again: pure decisions, no sleeping, no clock of its own.

Network errors, 5xx and 429 are worth another try; everything else is an answer. Waits grow
exponentially with full jitter (each wait is uniform between 0 and the cap), so many clients
that failed together do not come back together; a server's `Retry-After` is honoured.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Mapping

__all__ = [
    "BACKOFF_BASE",
    "MAX_RETRY_AFTER",
    "backoff_delay",
    "is_retryable_status",
    "retry_after_seconds",
]

BACKOFF_BASE = 0.25  # seconds: the first wait is up to this, then doubles
_BACKOFF_CAP = 8.0  # seconds: no single jittered wait exceeds this
MAX_RETRY_AFTER = 10.0  # seconds: a longer Retry-After pauses token calls instead of blocking
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    """Whether a token endpoint's status says "try again later" (429, 500, 502–504)."""
    return status in _RETRYABLE


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from `Retry-After` (delta seconds or an HTTP date), or `None`."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int, retry_after: float | None, uniform: Callable[[float, float], float]
) -> float | None:
    """Seconds to wait before try `attempt + 1` (attempt 0 was the first), or `None` to stop.

    Args:
        attempt: how many tries have failed before this wait, minus one.
        retry_after: what the server asked for, if it did.
        uniform: `random.uniform` or a deterministic stand-in.
    """
    if retry_after is not None:
        return None if retry_after > MAX_RETRY_AFTER else retry_after
    return uniform(0.0, min(_BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
