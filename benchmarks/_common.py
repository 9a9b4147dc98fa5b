"""What the benchmarks share: the fake host, a redis-server, canned transports, output.

It imports neither Authlib nor httpx-auth, so that `bench_stores.py` runs without them (and a
callgrind worker starts without paying for them), and redis-py only when it starts a
redis-server. The scripts import it as ``_common``: Python puts
a script's own folder on ``sys.path``, and spawned child processes inherit that path, so they
can import it too (`_host_fakes`, the fake host's process target, lives here for that reason).
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import requests
import requests.adapters

import renewauth

if TYPE_CHECKING:
    import redis

CLIENT_ID = "client-id"
CLIENT_SECRET = "client-secret"
CANNED_URL = "http://api.invalid/items"  # answered in memory by the canned transports
LONG_LIFETIME_SECONDS = 3600.0  # a token that stays fresh for the whole run
HANG_LIMIT_SECONDS = 60.0
STATIC = "static"  # the baseline column: a fixed header, nothing to renew
# Authlib fetches no first token by itself (a request without one raises MissingTokenError);
# it starts from an expired token, so that its own renewal path fetches the first one.
EXPIRED_AUTHLIB_TOKEN: Mapping[str, object] = {
    "access_token": "expired",
    "token_type": "Bearer",
    "expires_at": 1,
}


def package_version(name: str) -> str:
    """The installed version of a distribution, for the header line."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def describe(exc: BaseException) -> str:
    """A cell for a run that raised."""
    return f"error: {type(exc).__name__}"


# --- what a contender is built from ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """What a contender needs to build its client for one run."""

    token_url: str
    leeway: float
    static_token: str = "unused"
    authlib_token: Mapping[str, object] = field(default_factory=lambda: EXPIRED_AUTHLIB_TOKEN)
    canned: bool = False  # answer API requests in memory (no socket)


def renewauth_credentials(setup: Setup) -> renewauth.OAuth2ClientCredentials:
    """renewauth's contender, the same object for every HTTP client."""
    return renewauth.OAuth2ClientCredentials(
        setup.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        leeway=setup.leeway,
        store=renewauth.MemoryStore(),
    )


def authlib_options(setup: Setup) -> dict[str, Any]:
    """The keyword arguments of Authlib's OAuth2 clients (requests, httpx2) for `setup`."""
    return {
        "token_endpoint": setup.token_url,
        "grant_type": "client_credentials",
        "token": dict(setup.authlib_token),
        "leeway": setup.leeway,
    }


# --- the fake token server, in a child process -------------------------------------------------


def _host_fakes(connection: Connection) -> None:
    """Child process: start, count and stop `FakeOAuth2Provider`s on the parent's command."""
    from renewauth.testing import FakeKeycloak, FakeOAuth2Provider, FakeVanMarcke

    kinds = {"oauth2": FakeOAuth2Provider, "keycloak": FakeKeycloak, "vanmarcke": FakeVanMarcke}
    providers: dict[int, Any] = {}
    while True:
        command, argument = connection.recv()
        reply: object = None
        try:
            if command == "start":
                settings = dict(argument)
                provider = kinds[settings.pop("kind", "oauth2")](**settings)
                provider.start()
                providers[id(provider)] = provider
                reply = (id(provider), provider.token_url, provider.api_url)
            elif command == "counters":
                provider = providers[argument]
                reply = (
                    provider.token_calls,
                    provider.api_ok,
                    provider.api_unauthorized,
                    provider.stale_refresh_tokens,
                )
            elif command == "reset":
                providers[argument].reset_counters()
            elif command == "stop":
                providers.pop(argument).stop()
            elif command == "exit":
                for provider in providers.values():
                    provider.stop()
                connection.send(None)
                return
        except Exception as exc:
            reply = exc
        connection.send(reply)


@dataclass(frozen=True, slots=True)
class Counters:
    """What the fake saw: token-endpoint calls, API answers 200 and 401, stale refresh tokens."""

    token_calls: int
    api_ok: int
    api_unauthorized: int
    stale_refresh_tokens: int


class FakeHost:
    """Runs fake providers in one spawned child process; use it as a context manager.

    `settings` go to every fake it starts (`kind="keycloak"` or `"vanmarcke"` picks a vendor
    fake instead of `FakeOAuth2Provider`) (with the `token_lifetime` of each
    `provider()` call); `api_path` is appended to each provider's API URL.
    """

    def __init__(self, *, api_path: str = "", **settings: object) -> None:
        self._api_path = api_path
        self._settings = settings

    def __enter__(self) -> FakeHost:
        context = get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_host_fakes, args=(child,), name="bench fakes", daemon=True
        )
        self._process.start()
        child.close()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with suppress(OSError, EOFError, TimeoutError):
            self.call("exit", None)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()

    def call(self, command: str, argument: object) -> Any:
        self._connection.send((command, argument))
        if not self._connection.poll(HANG_LIMIT_SECONDS):
            raise TimeoutError(f"the fake host did not answer {command!r}")
        reply = self._connection.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @contextmanager
    def provider(self, *, token_lifetime: float) -> Iterator[RemoteFake]:
        """A started fake with `token_lifetime`-second tokens, stopped on exit."""
        settings = {"token_lifetime": token_lifetime, **self._settings}
        number, token_url, api_url = self.call("start", settings)
        try:
            yield RemoteFake(self, number, token_url, api_url + self._api_path)
        finally:
            self.call("stop", number)


@dataclass(frozen=True, slots=True)
class RemoteFake:
    """A handle on one fake provider in the child process."""

    host: FakeHost
    number: int
    token_url: str
    api_url: str

    def counters(self) -> Counters:
        return Counters(*self.host.call("counters", self.number))

    def reset_counters(self) -> None:
        self.host.call("reset", self.number)

    def fetch_access_token(self) -> str:
        """One access token, fetched by hand: the static baseline sends it as it is."""
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
        form["client_secret"] = CLIENT_SECRET
        response = httpx.post(self.token_url, data=form)
        response.raise_for_status()
        return str(response.json()["access_token"])


# --- transports that answer in memory ----------------------------------------------------------


class CannedAdapter(requests.adapters.BaseAdapter):
    """A requests adapter that answers every request with one prebuilt 200, without a socket."""

    def __init__(self) -> None:
        super().__init__()
        response = requests.Response()
        response.status_code = 200
        response.reason = "OK"
        response.headers["Content-Type"] = "application/json"
        response._content = b'{"ok": true}'
        self._response = response

    def send(  # type: ignore[override]  # the options requests passes are not needed here
        self, request: requests.PreparedRequest, **options: object
    ) -> requests.Response:
        response = self._response
        response.request = request
        response.url = request.url or ""
        response.connection = self  # type: ignore[assignment]  # typed as requests' HTTPAdapter
        return response

    def close(self) -> None:
        """Nothing to close."""


class CannedTransport(httpx.BaseTransport):
    """An httpx transport that answers every request with a 200, without a socket."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"{}")


class AsyncCannedTransport(httpx.AsyncBaseTransport):
    """`CannedTransport` for `httpx.AsyncClient`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"{}")


class SyncClient(Protocol):
    """What the benchmark uses of a `requests.Session` or an `httpx.Client`."""

    def get(self, url: str) -> Any: ...

    def close(self) -> None: ...


# --- requests under load ---------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Requests: how many succeeded, what the others ended with, how long each took."""

    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.failures.update(other.failures)
        self.latencies.extend(other.latencies)

    def record(self, response: Any, started: float) -> None:
        self.record_status(response.status_code, started)

    def record_status(self, status: int, started: float) -> None:
        """An answer with `status` to a request sent at `started` (aiohttp has no status_code)."""
        self.latencies.append(time.monotonic() - started)
        if status == 200:
            self.ok += 1
        else:
            self.failures[f"HTTP {status}"] += 1

    def record_error(self, exc: Exception, started: float) -> None:
        self.latencies.append(time.monotonic() - started)
        self.failures[type(exc).__name__] += 1

    def send(self, get: Callable[[str], Any], url: str) -> None:
        """One request through `get`, recorded."""
        started = time.monotonic()
        try:
            self.record(get(url), started)
        except Exception as exc:
            self.record_error(exc, started)


def failures_cell(tally: Tally) -> str:
    """The failed requests, and their three most common kinds."""
    failures = tally.failures
    if not failures:
        return "0"
    kinds = ", ".join(f"{kind} ×{count}" for kind, count in failures.most_common(3))
    return f"{failures.total()} ({kinds})"


def latency_cell(tally: Tally) -> str:
    """The median and the largest request latency."""
    latencies = sorted(tally.latencies)
    if not latencies:
        return "—"
    median = latencies[len(latencies) // 2]
    return f"{median * 1000:.0f} / {latencies[-1] * 1000:.0f} ms"


# --- cost per request with a cached token ----------------------------------------------------


@dataclass(slots=True)
class Timings:
    """Seconds per request of each repetition, or why a column has none."""

    seconds: list[float] = field(default_factory=list)
    error: str | None = None


def check_signed(response: Any, expected: str | None = None) -> None:
    """Fail unless the warm-up request went out with a bearer token (the expected one)."""
    sent = response.request.headers.get("Authorization", "")
    if response.status_code != 200 or not sent.startswith("Bearer ") or len(sent) < 8:
        raise RuntimeError(f"warm-up answered {response.status_code}, sent {sent[:7]!r}")
    if expected is not None and sent != f"Bearer {expected}":
        raise RuntimeError("warm-up sent another token than the static baseline")


def rotated(names: list[str], repetition: int) -> list[str]:
    """The order of one repetition: each column takes each position in turn."""
    shift = repetition % len(names) if names else 0
    return names[shift:] + names[:shift]


def time_sync(client: SyncClient, iterations: int) -> float:
    """Seconds per request, over `iterations` requests to `CANNED_URL`."""
    get = client.get
    gc.collect()
    started = time.perf_counter()
    for _ in range(iterations):
        get(CANNED_URL)
    return (time.perf_counter() - started) / iterations


async def time_async(client: httpx.AsyncClient, iterations: int) -> float:
    """`time_sync` for an `httpx.AsyncClient`."""
    get = client.get
    gc.collect()
    started = time.perf_counter()
    for _ in range(iterations):
        await get(CANNED_URL)
    return (time.perf_counter() - started) / iterations


def hot_path_cell(timings: Timings, baseline: Timings) -> str:
    """µs per request, and the ratio to the baseline column."""
    if timings.error is not None:
        return timings.error
    median = statistics.median(timings.seconds)
    if timings is baseline:
        return f"{median * 1e6:.1f} µs"
    if baseline.error is not None or not baseline.seconds:
        return f"{median * 1e6:.1f} µs (no baseline)"
    # Each repetition times the baseline next to the others: the ratio of a pair cancels what
    # the machine did during that repetition; the median of the pairs resists outliers.
    ratios = [mine / base for mine, base in zip(timings.seconds, baseline.seconds, strict=False)]
    return f"{median * 1e6:.1f} µs ({statistics.median(ratios):.2f}×)"


# --- redis-server, on a free loopback port ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running redis-server: its URL, its version, a client to ask it for statistics, and
    its process (to pause it with SIGSTOP)."""

    url: str
    version: str
    client: redis.Redis
    process: subprocess.Popen[bytes]

    def commands_processed(self) -> int:
        """The server's count of commands so far; this call's own INFO is not in it."""
        stats: dict[str, Any] = self.client.info("stats")
        return int(stats["total_commands_processed"])

    def command_calls(self) -> Counter[str]:
        """Calls so far of each command (`set`, `mget`, `eval`, `client|setinfo`, …), from
        `INFO commandstats`; the `INFO`s asked for statistics are left out."""
        stats: dict[str, Any] = self.client.info("commandstats")
        calls: Counter[str] = Counter()
        for name, values in stats.items():
            command = name.removeprefix("cmdstat_")
            if command != "info":
                calls[command] = int(values["calls"])
        return calls


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer | str]:
    """A redis-server without persistence, stopped on exit; or why there is none (a cell)."""
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        binary = None
    if binary is None:
        yield "n/a: no redis-server or redis-py"
        return
    directory.mkdir(mode=0o700)
    port = free_port()
    server = subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(directory)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        yield _ready(client, url, server)
    finally:
        client.close()
        server.send_signal(signal.SIGCONT)  # in case it was left paused
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _ready(client: redis.Redis, url: str, server: subprocess.Popen[bytes]) -> RedisServer | str:
    import redis

    for _ in range(400):  # bounded: each try answers at once or is refused
        try:
            if client.ping():
                info: dict[str, Any] = client.info("server")
                return RedisServer(url, str(info["redis_version"]), client, server)
        except redis.exceptions.ConnectionError:
            time.sleep(0.025)
    return "error: redis-server did not start"


# --- output --------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(str(line[column])) for line in [headers, *rows]) for column in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def header_line(versions: Sequence[str]) -> str:
    """Python, the given "package version" strings, the CPU count and the date."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    packages = " · ".join(versions)
    return f"Python {platform.python_version()} · {packages} · {os.cpu_count()} CPUs · {today}"


def print_part(title: str, part: Callable[[], Sequence[str]]) -> None:
    """Print a section's title and tables; a part that raises prints its error instead."""
    print(f"## {title}")
    try:
        tables = part()
    except Exception as exc:
        tables = [describe(exc)]
    for table in tables:
        print()
        print(table, flush=True)
    print()


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def callgrind_instructions(script: str, arguments: Sequence[str], what: str) -> int:
    """Instructions `python script arguments…` runs under callgrind (hash seed fixed).

    `what` names the run in the error raised when it fails: its last Python line.
    """
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        script,
        *arguments,
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        python_lines = [line for line in done.stderr.splitlines() if not line.startswith("==")]
        raise RuntimeError(f"{what}: {(python_lines or ['failed'])[-1]}")
    return int(found.group(1))


@contextmanager
def counted() -> Iterator[None]:
    """In a worker run by `callgrind_counted`: the block whose instructions are counted.

    It tells the parent on stdout that it is ready, waits for a line on stdin while the parent
    turns callgrind's instrumentation on, and does the same after the block to have it turned
    off. The worker must print nothing else on stdout.
    """
    print("ready", flush=True)
    sys.stdin.readline()
    yield
    print("done", flush=True)
    sys.stdin.readline()


def callgrind_counted(script: str, arguments: Sequence[str], what: str) -> int:
    """Instructions that `python script arguments…` runs inside its `counted()` block.

    Valgrind starts it without instrumentation (`--instr-atstart=no`: start-up and imports
    run several times faster than under `callgrind_instructions`), and `callgrind_control`
    turns instrumentation on when the worker is ready and off when it is done, so start-up,
    warm-up and exit are not counted. The hash seed is fixed. `what` names the run in the
    error raised when it fails: its last Python line.
    """
    command = [
        *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
        *("--callgrind-out-file=/dev/null", sys.executable, script, *arguments),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    worker = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    stdin, stdout = worker.stdin, worker.stdout
    assert stdin is not None  # both piped above
    assert stdout is not None
    switched = True
    for said, switch in (("ready", "on"), ("done", "off")):
        if stdout.readline().strip() != said:
            switched = False
            break
        control = ["callgrind_control", "--instr=" + switch, str(worker.pid)]
        done = subprocess.run(control, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            switched = False
            break
        stdin.write("go\n")
        stdin.flush()
    try:
        _, errors = worker.communicate(timeout=HANG_LIMIT_SECONDS * 5)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, errors = worker.communicate()
    found = _COLLECTED.search(errors)
    if not switched or worker.returncode != 0 or found is None:
        python_lines = [line for line in errors.splitlines() if not line.startswith("==")]
        raise RuntimeError(f"{what}: {(python_lines or ['failed'])[-1]}")
    return int(found.group(1))
