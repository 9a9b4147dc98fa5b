"""Fixtures shared by the suite. The fake provider itself comes from renewauth.testing."""

from __future__ import annotations

import faulthandler
import logging
import os
import pathlib
import signal
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

import renewauth

from .helpers import KINDS, FlightWatch, ManualClock
from .redis_server import RedisServer

# Shared CI machines are noisy: a slow example is not a failing one.
settings.register_profile(
    "renewauth", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "renewauth"))

if TYPE_CHECKING:
    from .oidc_fixture import Oidc


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oidc]:
    """node's oidc-provider on loopback over real TLS (see tests/oidc_fixture.py)."""
    from .oidc_fixture import start_oidc

    yield from start_oidc(tmp_path_factory.mktemp("oidc"))


def pytest_configure(config: pytest.Config) -> None:
    """A run that .ci/run's outer time bound ends (SIGTERM) first prints where every thread
    stood: a hang the per-test timeout cannot reach (a teardown after a timeout, threads at
    interpreter exit) then fails CI with its stacks instead of eating CI's whole budget."""
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)


def pytest_report_header() -> str:
    """Which renewauth the suite tests: .ci/run checks that it is the installed wheel."""
    return f"renewauth: {renewauth.__version__} from {pathlib.Path(renewauth.__file__).parent}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true a skipped test fails: CI must never pass by leaving a test out."""
    report = yield
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {report.longrepr}"
    return report


@pytest.fixture(autouse=True)
def _private_state_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> pathlib.Path:
    """Every test gets renewauth's state directory (the durable default store and the spare
    copies) of its own, and no runtime directory: nothing a test does reaches the user's."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(state))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return state


# --- the secrets canary, over every test -----------------------------------------------------

# Every credential the fakes accept by default, and what every token they issue starts with
# (an unsigned JWT header); any of these in a log record is a leak.
_CANARIES = (
    "client-secret",
    "alice-password",
    "portal-secret",
    "oc-secret",
    "buyer-password",
    "integration-secret",
    "shopware-password",
    "demo-password",
    "vm-secret",
    "service-password",
    "test-api-key",
    "enduser-password",
    "oidc-client-secret",  # tests/oidc_fixture.py's client secret
    "PRIVATE KEY",  # any PEM private key
    '"d":',  # a private JWK
    "eyJ",
    "Bearer ey",
    "Basic ",
)


@pytest.fixture(autouse=True)
def _no_secret_in_any_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test does, no log record it causes (ours, httpx's, urllib3's) holds a secret."""
    caplog.set_level(logging.INFO)  # httpx logs every request at INFO
    for name in ("renewauth", "urllib3"):  # (httpcore's DEBUG traces hold no values)
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    leaks = [
        f"{record.name}: {record.getMessage()[:120]!r}"
        for record in records
        if any(canary in record.getMessage() for canary in _CANARIES)
    ]
    assert leaks == [], "a log record holds a secret"


# --- fixtures many modules share (a module may still define its own) ---------------------


def _redis(directory: pathlib.Path, *, persistent: bool) -> Iterator[RedisServer]:
    try:
        server = RedisServer(directory, persistent=persistent)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (.ci/run installs it; under CI this fails)")
    directory.mkdir()
    with server:
        yield server


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port that keeps its keys across `restart()` (an
    append-only file), as a production Redis does."""
    yield from _redis(tmp_path / "redis", persistent=True)


@pytest.fixture
def forgetful_redis(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A real redis-server without persistence: a restart empties it."""
    yield from _redis(tmp_path / "redis", persistent=False)


@pytest.fixture
def flights(monkeypatch: pytest.MonkeyPatch) -> FlightWatch:
    """Counts the callers that join a renewal in flight (tests/helpers.py)."""
    return FlightWatch(monkeypatch)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each client a test body drives: requests, httpx, httpx async (tests/helpers.py)."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()
