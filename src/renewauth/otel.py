"""OpenTelemetry metrics from renewauth's events (`pip install renewauth[otel]`).

`instrument()` subscribes process-wide (`renewauth.events.subscribe`) and records:

- `renewauth.renewals` (counter): one per renewal, attribute `outcome` = `"fetched"`,
  `"store"` (adopted from another caller's renewal) or `"failed"`, and `origin`.
- `renewauth.token_call.duration` (histogram, seconds): how long a fetched renewal took.
- `renewauth.token.time_left` (gauge, seconds): the access token's time left per origin.

Attributes are token-endpoint origins and outcomes only: never a secret.

.. versionadded:: 0.2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from . import events
from .errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["instrument"]


def instrument(meter_provider: MeterProvider | None = None) -> Callable[[], None]:
    """Turn renewauth's events into OpenTelemetry metrics.

    Args:
        meter_provider: where the metrics go; the global meter provider by default.

    Returns:
        A callable that undoes it: events are no longer recorded, the gauge reports nothing.

    Raises:
        ConfigurationError: OpenTelemetry is not installed (`pip install renewauth[otel]`).
    """
    try:
        from opentelemetry import metrics
    except ImportError:
        raise ConfigurationError(
            "renewauth.otel needs OpenTelemetry: pip install 'renewauth[otel]'"
        ) from None
    from . import __version__

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("renewauth", __version__)
    renewals = meter.create_counter(
        "renewauth.renewals", unit="{renewal}", description="token renewals by outcome"
    )
    duration = meter.create_histogram(
        "renewauth.token_call.duration", unit="s", description="seconds a fetched renewal took"
    )
    expiries: dict[str, float] = {}  # origin -> access-token expiry (time.time)
    lock = threading.Lock()

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        with lock:
            current = dict(expiries)
        return [
            metrics.Observation(expires_at - now, {"origin": origin})
            for origin, expires_at in current.items()
        ]

    meter.create_observable_gauge(
        "renewauth.token.time_left",
        callbacks=[observe],
        unit="s",
        description="seconds the current access token has left",
    )

    def record(event: events.Event) -> None:
        if isinstance(event, events.Renewed):
            renewals.add(1, {"outcome": event.source, "origin": event.origin})
            if event.source == "fetched":
                duration.record(event.duration, {"origin": event.origin})
            if event.expires_in is not None:
                with lock:
                    expiries[event.origin] = time.time() + event.expires_in
        elif isinstance(event, events.RenewalFailed):
            renewals.add(1, {"outcome": "failed", "origin": event.origin})

    unsubscribe = events.subscribe(record)

    def undo() -> None:
        unsubscribe()
        with lock:
            expiries.clear()

    return undo
