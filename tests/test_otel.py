"""renewauth.otel: metrics from a renewal, a failure and the gauge, read by the SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from renewauth import MemoryStore, OAuth2ClientCredentials
from renewauth.errors import InvalidClient
from renewauth.otel import instrument
from renewauth.testing import FakeOAuth2Provider


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    undo = instrument(MeterProvider(metric_readers=[reader]))
    try:
        yield reader
    finally:
        undo()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], object]]]:
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, object], object]]] = {}
    if data is None:  # nothing recorded at all
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", None)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def test_otel_counts_renewals_by_outcome_and_times_token_calls(
    reader: InMemoryMetricReader,
) -> None:
    with FakeOAuth2Provider(token_lifetime=300.0) as fake:
        good = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=MemoryStore()
        )
        good.get_token()
        bad = OAuth2ClientCredentials(fake.token_url, "client-id", "wrong", store=MemoryStore())
        with pytest.raises(InvalidClient):
            bad.get_token()
        origin = fake.base_url
    found = points(reader)
    renewals = {attributes["outcome"]: value for attributes, value in found["renewauth.renewals"]}
    assert renewals == {"fetched": 1, "failed": 1}
    assert found["renewauth.token_call.duration"] == [({"origin": origin}, 1)]
    ((attributes, left),) = found["renewauth.token.time_left"]
    assert attributes == {"origin": origin}
    assert isinstance(left, float)
    assert 250 < left <= 300


def test_otel_undo_stops_recording() -> None:
    reader = InMemoryMetricReader()
    instrument(MeterProvider(metric_readers=[reader]))()
    # The same instrumentation, left on for one renewal and undone before a second: it saw
    # the first, so the scenario does record, and not the second.
    control = InMemoryMetricReader()
    undo_control = instrument(MeterProvider(metric_readers=[control]))
    try:
        with FakeOAuth2Provider() as fake:
            OAuth2ClientCredentials(
                fake.token_url, "client-id", "client-secret", store=MemoryStore()
            ).get_token()
            recorded = points(control)
            assert _outcomes(recorded) == {"fetched": 1}
            assert len(recorded["renewauth.token.time_left"]) == 1
            undo_control()
            OAuth2ClientCredentials(
                fake.token_url, "client-id", "client-secret", store=MemoryStore()
            ).get_token()
            assert fake.tokens_issued == 2
    finally:
        undo_control()  # harmless when already undone
    assert "renewauth.renewals" not in points(reader)
    assert points(reader) == {}
    after = points(control)
    assert _outcomes(after) == {"fetched": 1}  # the counter is cumulative: still the first
    assert len(after["renewauth.token_call.duration"]) == 1
    assert after["renewauth.token_call.duration"][0][1] == 1
    assert "renewauth.token.time_left" not in after  # the gauge reports nothing once undone


def _outcomes(found: dict[str, list[tuple[dict[str, object], object]]]) -> dict[object, object]:
    return {attributes["outcome"]: value for attributes, value in found["renewauth.renewals"]}
