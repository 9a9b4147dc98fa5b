"""Benchmarks: a fleet sharing one credential in one RedisStore, and what the store pays.

Run ``python benchmarks/bench_fleet.py`` (about 2 minutes) or ``--quick`` (about 1¼
minutes). It starts its own ``redis-server`` on a free loopback port, without persistence, and
prints one Markdown table:

- P = 8, 24 and 48 processes (8 and 24 with ``--quick``), each with one auth object over its
  own `RedisStore` client, all for one credential (client credentials, 2 s tokens), each
  calling `auth.get_token()` every 10 ms for a few token lifetimes;
- a simulated fleet of 1 000 managers: 4 processes × 250 threads, each thread with its own
  auth object and its own `RedisStore` (its own connection pool), each calling
  `get_token()` every 100 ms;

per row: Redis commands per process (per manager) per token lifetime, from redis-server's
``INFO commandstats`` before and after, by command; token calls per renewal; the slowest
`get_token()`; and the same fleet against tokens that outlive the run (nothing to renew: what
the fleet costs the store when nothing renews).

Nothing here asserts a timing: the numbers are for people to read. `README.md` in this folder
says what each row means. The fake token server runs in a child process of its own, as in
`bench_core.py`; the processes are spawned and released together by a barrier.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from urllib.parse import urlsplit

from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    HANG_LIMIT_SECONDS,
    LONG_LIFETIME_SECONDS,
    FakeHost,
    RedisServer,
    describe,
    header_line,
    markdown_table,
    package_version,
    print_part,
    redis_server,
)

import renewauth

TOKEN_LIFETIME_SECONDS = 2.0
# A token that lives less than twice the leeway is renewed at half its life: every 1 s here.
LEEWAY_SECONDS = 1.0
RENEWAL_PERIOD_SECONDS = TOKEN_LIFETIME_SECONDS - LEEWAY_SECONDS
TOKEN_DELAY_SECONDS = 0.05
GRACE_SECONDS = 10.0  # how long past the end a caller still inside get_token() is waited for
WARM_UP_LIMIT_SECONDS = 180.0  # every manager of a process fetches or reads its first token


@dataclass(frozen=True, slots=True)
class Fleet:
    """A row: `processes` processes of `managers` threads, each thread with its own auth
    object and store, calling `get_token()` every `interval` seconds."""

    processes: int
    managers: int
    interval: float

    @property
    def label(self) -> str:
        every = f"every {self.interval * 1000:.0f} ms"
        if self.managers == 1:
            return f"P = {self.processes} ({every})"
        total = self.processes * self.managers
        return f"{total:,} managers: {self.processes} processes × {self.managers} ({every})"

    @property
    def callers(self) -> int:
        return self.processes * self.managers


@dataclass(frozen=True, slots=True)
class Settings:
    """The fleets, and how long each phase runs: the full run, or `--quick`."""

    fleets: tuple[Fleet, ...]
    lifetimes: float  # the renewal phase, in token lifetimes
    baseline_seconds: float  # the no-renewal phase


SIMULATED = Fleet(processes=4, managers=250, interval=0.1)
FULL = Settings(
    fleets=(Fleet(8, 1, 0.01), Fleet(24, 1, 0.01), Fleet(48, 1, 0.01), SIMULATED),
    lifetimes=5,
    baseline_seconds=4.0,
)
QUICK = Settings(
    fleets=(Fleet(8, 1, 0.01), Fleet(24, 1, 0.01), SIMULATED),
    lifetimes=3,
    baseline_seconds=3.0,
)


def caveats(settings: Settings) -> tuple[str, ...]:
    """Printed under the table: how each figure was made, and what else it depends on."""
    return (
        "Every auth object is `OAuth2ClientCredentials(token_url, client_id, client_secret, "
        f"leeway={LEEWAY_SECONDS:g}, store=RedisStore(url, prefix=…))`, one credential for the "
        f"whole fleet; {TOKEN_LIFETIME_SECONDS:g} s tokens are renewed at half their life, "
        f"every {RENEWAL_PERIOD_SECONDS:g} s; the token endpoint answers in "
        f"{TOKEN_DELAY_SECONDS * 1000:.0f} ms.",
        "Redis commands, from the release of the callers to the end of the last one, divided "
        "by the callers (processes, or managers in the simulated fleet) and by the token "
        "lifetimes the phase lasted: **sent** by the clients, as redis-server's MONITOR "
        "stream shows them (a transaction's MULTI, commands and EXEC each count; the stream "
        "is only counted, never kept: it shows the tokens), and in brackets **all run**, "
        "redis-server's own `INFO commandstats`, which also counts each command a Lua script "
        "runs (a lock release is an EVAL and the GET and DEL inside it).",
        "Token calls per renewal: the fake's token calls in the phase divided by the renewals "
        f"due in it (its seconds ÷ {RENEWAL_PERIOD_SECONDS:g} s); 1.00 is one token call per "
        "renewal for the whole fleet.",
        "No renewal: the same processes, new auth objects and a new key prefix, against a "
        f"fake whose tokens outlive the phase: {settings.baseline_seconds:g} s of calls, "
        f"normalised by the same {TOKEN_LIFETIME_SECONDS:g} s lifetime. It runs first.",
        "Slowest get_token(): the longest call in the phase, with the 99th percentile; a call "
        f"still running {GRACE_SECONDS:g} s after the phase's end counts with the time it had "
        "taken then (≥). The processes and redis-server share the machine's CPUs, so the "
        "slowest call also shows the machine's queue: compare it with the no-renewal column.",
        "Each manager fetches or reads its first token before the phase starts, one after "
        "another in its process (not counted).",
        f"The simulated fleet's {SIMULATED.managers} managers of a process share its CPU "
        "time and its GIL: a manager that waits by polling Redis takes CPU from the others "
        "in its process, where a real pod would have its own. Its figures show the trend, "
        "not what 1 000 pods would see.",
    )


# --- the worker processes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a fleet's run: the fake's token URL, a fresh key prefix, its length."""

    name: str
    token_url: str
    prefix: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker process needs to know: picklable, for the spawned processes."""

    redis_url: str
    managers: int
    interval: float
    phases: tuple[Phase, ...]


@dataclass(slots=True)
class Calls:
    """One caller's `get_token()` calls: how long each took, and what the failures were."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    in_flight_since: float | None = None  # the start of a call that has not returned

    def add(self, other: Calls) -> None:
        self.latencies.extend(other.latencies)
        self.failures.update(other.failures)


@dataclass(slots=True)
class Report:
    """A worker process's calls in one phase, or why it could not run it."""

    phase: str
    calls: Calls = field(default_factory=Calls)
    stuck: int = 0  # calls still inside get_token() when the process gave up waiting
    errors: list[str] = field(default_factory=list)


def _auth(phase: Phase, redis_url: str) -> renewauth.OAuth2ClientCredentials:
    return renewauth.OAuth2ClientCredentials(
        phase.token_url,
        CLIENT_ID,
        CLIENT_SECRET,
        leeway=LEEWAY_SECONDS,
        store=renewauth.RedisStore(redis_url, prefix=phase.prefix),
    )


def _ask(
    auth: renewauth.OAuth2ClientCredentials,
    first: float,
    interval: float,
    until: float,
    calls: Calls,
) -> None:
    """Call `auth.get_token()` at `first`, then every `interval` s until `until` (a call that
    returns late is followed by the next one at once, not by a burst)."""
    due = first
    while True:
        time.sleep(max(0.0, due - time.monotonic()))
        started = time.monotonic()
        if started >= until:
            return
        calls.in_flight_since = started
        try:
            auth.get_token()
        except Exception as exc:
            calls.failures[type(exc).__name__] += 1
        ended = time.monotonic()
        calls.in_flight_since = None
        calls.latencies.append(ended - started)
        due = max(due + interval, ended)


def _run_phase(job: Job, phase: Phase, barrier: Barrier, report: Report) -> None:
    auths = [_auth(phase, job.redis_url) for _ in range(job.managers)]
    for auth in auths:  # one after another: the first token of each, before the window
        auth.get_token()
    barrier.wait(WARM_UP_LIMIT_SECONDS)  # 1: every process warmed up; the parent counts
    barrier.wait(HANG_LIMIT_SECONDS)  # 2: released
    start = time.monotonic()
    until = start + phase.seconds
    callers = [Calls() for _ in auths]
    threads = [
        threading.Thread(
            target=_ask,
            # Spread over one interval: the managers of a process do not call in step.
            args=(auth, start + index * job.interval / len(auths), job.interval, until, calls),
            daemon=True,
        )
        for index, (auth, calls) in enumerate(zip(auths, callers, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, until + GRACE_SECONDS - time.monotonic()))
    now = time.monotonic()
    for calls in callers:
        since = calls.in_flight_since
        if since is not None:  # still inside get_token(): counted with the time it took so far
            report.stuck += 1
            calls.latencies.append(now - since)
        report.calls.add(calls)
    barrier.wait(HANG_LIMIT_SECONDS)  # 3: over; the parent counts again


def _worker(job: Job, barrier: Barrier, reports: Queue[Report]) -> None:
    """Child process: each phase in turn, one report per phase."""
    for phase in job.phases:
        report = Report(phase.name)
        try:
            _run_phase(job, phase, barrier, report)
        except Exception as exc:
            barrier.abort()  # the others stop waiting at once
            report.errors.append(describe(exc))
            reports.put(report)
            return
        reports.put(report)
        gc.collect()  # the phase's auth objects and their connections go


# --- the commands the clients send, through MONITOR ---------------------------------------


class Monitor:
    """Counts the commands redis-server receives, by name, from `start()` to `stop()`.

    It reads the server's MONITOR stream in a thread; commands that a Lua script runs (`[0
    lua]`) are counted apart from those the clients sent. Only the names are kept: MONITOR
    shows every argument, tokens among them.
    """

    def __init__(self, server: RedisServer) -> None:
        self._server = server
        self._marker = f"bench-fleet-{os.urandom(4).hex()}".encode()
        self._done = threading.Event()
        self.sent: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()

    def start(self) -> Monitor:
        address = urlsplit(self._server.url)
        self._socket = socket.create_connection(
            (address.hostname, address.port), timeout=HANG_LIMIT_SECONDS
        )
        self._socket.sendall(b"MONITOR\r\n")
        self._lines = self._socket.makefile("rb")
        if not self._lines.readline().startswith(b"+OK"):
            raise RuntimeError("redis-server refused MONITOR")
        self._thread = threading.Thread(target=self._read, name="bench monitor", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        with suppress(OSError, ValueError):
            for line in self._lines:
                where, found, command = line.partition(b"] ")
                if not found or not command.startswith(b'"'):
                    continue
                name = command[1 : command.index(b'"', 1)].decode("ascii", "replace").lower()
                if name == "echo" and self._marker in command:
                    self._done.set()
                    return
                if name not in {"info", "monitor"}:
                    (self.in_scripts if where.endswith(b" lua") else self.sent)[name] += 1

    def stop(self) -> None:
        """Count up to now: the stream is read until an ECHO sent after this call comes by."""
        try:
            self._server.client.echo(self._marker)
            if not self._done.wait(HANG_LIMIT_SECONDS):
                raise TimeoutError("MONITOR did not catch up with redis-server")
        finally:
            self._socket.close()
            self._thread.join(HANG_LIMIT_SECONDS)


# --- the parent: a fleet's run -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    """One phase of a fleet, as redis-server, the fake and the workers saw it."""

    sent: Counter[str]  # by the clients (MONITOR)
    executed: Counter[str]  # by redis-server, inside scripts too (INFO commandstats)
    token_calls: int
    seconds: float
    calls: Calls
    stuck: int


def _commands(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter(
        {name: after[name] - before[name] for name in after if after[name] > before[name]}
    )


def run_fleet(
    host: FakeHost, server: RedisServer, fleet: Fleet, settings: Settings
) -> dict[str, Measured] | str:
    """The no-renewal phase, then the renewal phase, with the same processes."""
    context = get_context("spawn")
    barrier = context.Barrier(fleet.processes + 1)  # + 1: this process
    reports: Queue[Report] = context.Queue()
    run = os.urandom(4).hex()
    renewal_seconds = settings.lifetimes * TOKEN_LIFETIME_SECONDS
    with (
        host.provider(token_lifetime=LONG_LIFETIME_SECONDS) as steady,
        host.provider(token_lifetime=TOKEN_LIFETIME_SECONDS) as renewing,
    ):
        phases = (
            Phase("baseline", steady.token_url, f"bench:{run}:b:", settings.baseline_seconds),
            Phase("renewal", renewing.token_url, f"bench:{run}:r:", renewal_seconds),
        )
        fakes = {"baseline": steady, "renewal": renewing}
        job = Job(server.url, fleet.managers, fleet.interval, phases)
        processes = [
            context.Process(
                target=_worker,
                args=(job, barrier, reports),
                name=f"bench fleet {number}",
                daemon=True,
            )
            for number in range(fleet.processes)
        ]
        for process in processes:
            process.start()
        measured: dict[str, Measured] = {}
        try:
            for phase in phases:
                fake = fakes[phase.name]
                barrier.wait(WARM_UP_LIMIT_SECONDS)  # 1
                monitor = Monitor(server).start()
                before = server.command_calls()
                fake.reset_counters()
                barrier.wait(HANG_LIMIT_SECONDS)  # 2
                started = time.monotonic()
                barrier.wait(phase.seconds + GRACE_SECONDS + HANG_LIMIT_SECONDS)  # 3
                seconds = time.monotonic() - started
                executed = _commands(server.command_calls(), before)
                token_calls = fake.counters().token_calls
                monitor.stop()
                calls, stuck = Calls(), 0
                for _ in processes:
                    report = reports.get(timeout=HANG_LIMIT_SECONDS)
                    if report.errors:
                        return report.errors[0]
                    calls.add(report.calls)
                    stuck += report.stuck
                measured[phase.name] = Measured(
                    monitor.sent, executed, token_calls, seconds, calls, stuck
                )
        except Exception as exc:
            return _first_error(reports) or describe(exc)
        finally:
            for process in processes:
                process.join(HANG_LIMIT_SECONDS if process.exitcode is None else 0)
                if process.is_alive():
                    process.kill()
                    process.join()
    return measured


def _first_error(reports: Queue[Report]) -> str | None:
    """The error a worker reported, if one did: it says more than the broken barrier."""
    with suppress(Exception):
        while True:
            report = reports.get(timeout=1)
            for error in report.errors:
                if "BrokenBarrierError" not in error:
                    return error
    return None


# --- the table ---------------------------------------------------------------------------


def _per_caller_lifetime(count: int, fleet: Fleet, measured: Measured) -> float:
    return count / fleet.callers / (measured.seconds / TOKEN_LIFETIME_SECONDS)


def _commands_cell(fleet: Fleet, measured: Measured) -> str:
    sent, executed = measured.sent.total(), measured.executed.total()
    per_sent = _per_caller_lifetime(sent, fleet, measured)
    per_executed = _per_caller_lifetime(executed, fleet, measured)
    return f"{per_sent:.1f} ({per_executed:.1f}; {sent:,} sent)"


def _by_command_cell(fleet: Fleet, measured: Measured) -> str:
    parts = [
        f"{name.upper()} {_per_caller_lifetime(count, fleet, measured):.2f}"
        for name, count in measured.sent.most_common(6)
        if _per_caller_lifetime(count, fleet, measured) >= 0.005
    ]
    return " · ".join(parts) or "—"


def _token_calls_cell(measured: Measured) -> str:
    renewals = measured.seconds / RENEWAL_PERIOD_SECONDS
    calls = measured.token_calls
    return f"{calls / renewals:.2f} ({calls} in {measured.seconds:.1f} s)"


def _calls_cell(measured: Measured) -> str:
    calls = measured.calls
    failed = calls.failures.total()
    if not failed:
        return f"{len(calls.latencies):,} (0 failed)"
    kinds = ", ".join(f"{kind} ×{count}" for kind, count in calls.failures.most_common(2))
    return f"{len(calls.latencies):,} ({failed} failed: {kinds})"


def _seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


def _slowest_cell(measured: Measured) -> str:
    latencies = sorted(measured.calls.latencies)
    if not latencies:
        return "—"
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    stuck = f", {measured.stuck} still waiting" if measured.stuck else ""
    at_least = "≥ " if measured.stuck else ""
    return f"{at_least}{_seconds(latencies[-1])} (p99 {_seconds(p99)}{stuck})"


HEADERS = (
    "fleet",
    "get_token() calls",
    "Redis commands per process per lifetime: sent (all run)",
    "sent, by command, per process per lifetime",
    "token calls per renewal",
    "slowest get_token()",
    "no renewal: Redis commands per process per lifetime: sent (all run)",
    "no renewal: slowest get_token()",
)


def _row(fleet: Fleet, result: dict[str, Measured] | str) -> list[str]:
    if isinstance(result, str):
        return [fleet.label, *[result] * (len(HEADERS) - 1)]
    renewal, baseline = result["renewal"], result["baseline"]
    return [
        fleet.label,
        _calls_cell(renewal),
        _commands_cell(fleet, renewal),
        _by_command_cell(fleet, renewal),
        _token_calls_cell(renewal),
        _slowest_cell(renewal),
        _commands_cell(fleet, baseline),
        _slowest_cell(baseline),
    ]


def fleet_table(host: FakeHost, server: RedisServer | str, settings: Settings) -> str:
    rows = []
    for fleet in settings.fleets:
        result: dict[str, Measured] | str
        if isinstance(server, str):
            result = server
        else:
            try:
                result = run_fleet(host, server, fleet, settings)
            except Exception as exc:
                result = describe(exc)
        rows.append(_row(fleet, result))
    return markdown_table(HEADERS, rows)


# --- output --------------------------------------------------------------------------------


@contextmanager
def _redis() -> Iterator[RedisServer | str]:
    with (
        tempfile.TemporaryDirectory(prefix="renewauth-bench-") as name,
        redis_server(Path(name) / "redis") as server,
    ):
        yield server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer fleets, shorter phases")
    settings = QUICK if parser.parse_args(argv).quick else FULL
    with _redis() as server, FakeHost(token_delay=TOKEN_DELAY_SECONDS) as host:
        server_version = server.version if isinstance(server, RedisServer) else "not running"
        versions = [f"{name} {package_version(name)}" for name in ("renewauth", "redis")]
        print(header_line([*versions, f"redis-server {server_version}"]))
        print()
        print_part(
            f"A fleet sharing one credential in one RedisStore: {TOKEN_LIFETIME_SECONDS:g} s "
            f"tokens, {settings.lifetimes:g} lifetimes of get_token() calls; no renewal: "
            f"{settings.baseline_seconds:g} s against tokens that outlive them",
            lambda: [fleet_table(host, server, settings)],
        )
    print("Caveats:")
    for caveat in caveats(settings):
        print(f"- {caveat}")


if __name__ == "__main__":
    main()
