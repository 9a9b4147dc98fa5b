"""Fixtures shared by the suite. The fake provider itself comes from renewauth.testing."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Shared CI machines are noisy: a slow example is not a failing one.
settings.register_profile(
    "renewauth", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "renewauth"))
