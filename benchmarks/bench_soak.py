"""Soak: many processes, threads and tasks sharing one credential under a random rain of faults.

Run ``python benchmarks/bench_soak.py`` (about 7 minutes: the fault passes, then the restarts
passes) or ``--quick``; ``--pass faults`` or ``--pass restarts`` runs one kind; ``--seed N``
draws another schedule. It stops by itself.

The fault passes (3 minutes: two of 90 s; ``--minutes M`` sets both together; 20 s each with
``--quick``) run 6 processes × 8 threads (requests and httpx) plus one asyncio process with
50 tasks (httpx.AsyncClient), all with one `OAuth2Password` credential, against the loopback
fake with 2 s tokens and rotating refresh tokens. The first pass shares a `RedisStore` on a
real `redis-server` (append-only file, so a restart keeps its keys), the second a
`FileStore`. Faults follow `FAULTS` below, drawn with a seeded random generator.

The restarts passes (about 4 minutes; ``--processes N``, 40 with ``--quick``) run a
technical user (`OAuth2RefreshToken`) as 200 short-lived processes per store, 4 lanes side
by side, some SIGKILLed, some exiting while the store refuses writes, while a Redis without
persistence restarts or the token file is deleted (see "the restarts pass" below).
``--keep DIR`` keeps every worker's journal and log, ``--report-from DIR`` reports them again.

It prints Markdown tables: what every pass sent and what failed (each failure with its cause,
and whether a fault window explains it), stale refresh tokens presented to the server,
refresh-token chains broken (a refresh grant refused), token calls per token lifetime and
the longest request stall. Nothing here asserts a number; `RESULTS.md` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from pathlib import Path
from typing import Any

from _common import header_line, markdown_table

ROOT = Path(__file__).resolve().parent.parent

# --- the fault schedule ----------------------------------------------------------------------
#
# One row per kind of fault: how often it is drawn (weight), how long it lasts (seconds, drawn
# uniformly), and in which store passes it applies. Between two faults the schedule leaves a
# quiet gap of GAP seconds (drawn uniformly). One worker is SIGKILLed once per pass, at a
# random moment of its middle half, and restarted at once.
#
#   kind            weight  lasts (s)   passes          what happens
FAULTS = [
    ("token-503", 3, (0.5, 3.0), ("redis", "file")),  # every token call answers 503
    ("token-429", 2, (0.5, 2.0), ("redis", "file")),  # 429 with Retry-After: 1
    ("token-reset", 2, (0.5, 2.0), ("redis", "file")),  # connections reset on accept
    ("token-hang", 2, (0.5, 3.0), ("redis", "file")),  # token calls held, then answered
    ("token-garbage", 1, (0.2, 0.8), ("redis", "file")),  # 200 with an HTML page
    ("revoke-access", 2, (0.0, 0.0), ("redis", "file")),  # the API rejects every token so far
    ("redis-restart", 2, (0.2, 1.5), ("redis",)),  # stopped, down this long, restarted
    ("redis-sigstop", 2, (0.5, 2.5), ("redis",)),  # SIGSTOP this long, then SIGCONT
]
GAP = (2.0, 6.0)
TOKEN_FAULTS = {"token-503", "token-429", "token-reset", "token-hang", "token-garbage"}

PROCESSES, THREADS, TASKS = 6, 8, 50
TOKEN_LIFETIME = 2.0
THINK = (0.2, 0.5)  # seconds each caller waits between two requests
# A failure is explained when a token-endpoint fault was active at most this long before it:
# the token lived on for up to one lifetime, and the retries of the renewal that failed ran on.
EXPLAINED_AFTER = TOKEN_LIFETIME + 3.0
REVOKED_AFTER = 1.0  # a 401 this soon after a revocation (once the request ended) is its echo
# The lease outlasts the longest SIGSTOP: a lease shorter than a Redis pause lets a second
# process take the lock while the first one's token call runs (README: choose lease= so).
REDIS_OPTIONS = {"lease": 4.0, "socket_timeout": 0.5, "connect_timeout": 0.5}
USERNAME, PASSWORD = "alice", "alice-password"


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the pass started
    kind: str
    lasts: float


def draw_schedule(rng: random.Random, store: str, seconds: float) -> list[Fault]:
    """The pass's faults, from `FAULTS`, until two gaps before its end (it ends quiet)."""
    rows = [row for row in FAULTS if store in row[3]]
    weights = [row[1] for row in rows]
    faults, at = [], rng.uniform(*GAP)
    while at < seconds - 2 * GAP[1]:
        kind, _, (low, high), _ = rng.choices(rows, weights)[0]
        lasts = rng.uniform(low, high)
        faults.append(Fault(at, kind, lasts))
        at += lasts + rng.uniform(*GAP)
    return faults


def fingerprint(refresh_token: str | None) -> str:
    """What journals record of a refresh token: a short hash, never the token ("-": none)."""
    if not refresh_token:
        return "-"
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:12]


def issued_refresh_token(body: bytes) -> str | None:
    """The refresh token in a token response's JSON body, if there is one."""
    try:
        value = json.loads(body).get("refresh_token")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# --- the fake, in a child process, with a proxy that can reset connections --------------------


class _ResettingProxy:
    """A TCP relay in front of the token endpoint that resets every connection on command."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.resetting = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset_all(self, on: bool) -> None:
        with self._lock:
            self.resetting = on
            if on:
                for connection in list(self._open):
                    _reset(connection)
                self._open.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            with self._lock:
                if self.resetting:
                    _reset(client)
                    continue
                self._open.add(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._target))
        except OSError:
            _reset(client)
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)
        with self._lock:
            self._open.discard(client)


def _reset(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def _host_fake(connection: Connection) -> None:
    """Child process: one fake provider, driven by the parent's commands."""
    from renewauth.testing import FakeOAuth2Provider
    from renewauth.testing._wire import OAuthError

    class SoakFake(FakeOAuth2Provider):
        """Counts refused refresh grants: every one is a broken refresh-token chain. Keeps a
        journal of refresh grants (when, the refresh token presented, what came of it, the
        one issued), fingerprints only: the restarts pass follows the chain through it."""

        refused_refreshes = 0
        last_ok = last_refused = 0.0

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.journal: list[tuple[float, str, str, str]] = []

        def _grant_locked(self, headers: Any, params: Any) -> Any:
            refresh = params.get("grant_type") == "refresh_token"
            presented = fingerprint(params.get("refresh_token"))
            stale = self._stale_refresh_tokens
            try:
                reply = super()._grant_locked(headers, params)
            except OAuthError:
                if refresh:
                    self.refused_refreshes += 1
                    self.last_refused = time.time()
                    outcome = "stale" if self._stale_refresh_tokens > stale else "unknown"
                    self.journal.append((self.last_refused, presented, outcome, "-"))
                raise
            if refresh:
                self.last_ok = time.time()
                issued = fingerprint(issued_refresh_token(reply.body))
                self.journal.append((self.last_ok, presented, "ok", issued))
            return reply

    fake = SoakFake(token_lifetime=TOKEN_LIFETIME, rotate_refresh_tokens=True)
    fake.start()
    proxy = _ResettingProxy(int(fake.base_url.rsplit(":", 1)[1]))
    hold = contextlib.ExitStack()
    connection.send((f"http://127.0.0.1:{proxy.port}/oauth/token", fake.api_url + "items"))
    while True:
        command, argument = connection.recv()
        try:
            reply = _command(fake, proxy, hold, command, argument)
        except Exception as exc:
            reply = exc
        if command == "exit":
            connection.send(None)
            return
        connection.send(reply)


def _command(fake: Any, proxy: _ResettingProxy, hold: Any, command: str, argument: Any) -> Any:
    reply: object = None
    if command == "fail":
        status, body, headers = argument
        fake.fail_token_requests(status, times=-1, body=body, headers=headers)
    elif command == "clear":
        fake.clear_failures()
    elif command == "hold":
        hold.enter_context(fake.hold_token_requests())
    elif command == "release":
        hold.close()
    elif command == "reset":
        proxy.reset_all(bool(argument))
    elif command == "revoke":
        fake.revoke_access_tokens()
    elif command == "counters":
        reply = {
            "token_calls": fake.token_calls,
            "by_grant": fake.token_calls_by_grant,
            "stale": fake.stale_refresh_tokens,
            "refused_refreshes": fake.refused_refreshes,
            "api_ok": fake.api_ok,
            "api_unauthorized": fake.api_unauthorized,
            "max_concurrent": fake.max_concurrent_token_calls,
        }
    elif command == "issue":  # a new refresh token for the restarts pass's technical user
        reply = fake.issue_refresh_token()
    elif command == "chain":
        reply = (fake.last_ok, fake.last_refused)
    elif command == "journal":
        reply = list(fake.journal)
    elif command == "exit":
        hold.close()
        fake.stop()
    return reply


class FakeControl:
    def __init__(self) -> None:
        context = get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_host_fake, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self.token_url, self.api_url = self._connection.recv()

    def __call__(self, command: str, argument: object = None) -> Any:
        self._connection.send((command, argument))
        if not self._connection.poll(60):
            raise TimeoutError(f"the fake did not answer {command!r}")
        reply = self._connection.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self("exit")
        self._process.join(10)


# --- the workers -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    ok: int = 0
    failures: list[tuple[float, str, float]] = field(default_factory=list)  # when, why, took
    longest: float = 0.0

    def record(self, started: float, cause: str | None) -> None:
        took = time.monotonic() - started
        self.longest = max(self.longest, took)
        if cause is None:
            self.ok += 1
        else:
            self.failures.append((time.time(), cause, took))


def _store(spec: tuple[str, str, str]) -> Any:
    import renewauth

    kind, where, prefix = spec
    if kind == "file":
        return renewauth.FileStore(where)
    return renewauth.RedisStore(where, prefix=prefix, **REDIS_OPTIONS)  # type: ignore[arg-type]


def _auth(spec: tuple[str, str, str], token_url: str) -> Any:
    import renewauth

    return renewauth.OAuth2Password(
        token_url,
        "client-id",
        USERNAME,
        PASSWORD,
        client_secret="client-secret",
        store=_store(spec),
    )


def _cause(exc: BaseException) -> str:
    return type(exc).__name__


def _report(out: Connection, tally: Tally, lock: threading.Lock) -> None:
    """Send what happened since the last report: a worker killed later loses only a second."""
    with lock:
        snapshot = (tally.ok, list(tally.failures), tally.longest)
        tally.ok, tally.failures, tally.longest = 0, [], 0.0
    out.send(snapshot)


Job = tuple[tuple[str, str, str], tuple[str, str], int]  # store spec, URLs, seed


def _sync_worker(job: Job, stop: Any, out: Connection) -> None:
    """THREADS threads, half with requests, half with httpx, until `stop` is set.

    `stop` is a lock-free shared flag, and reports go through a pipe of this worker's own: a
    SIGKILLed worker must not leave a lock held that the others need.
    """
    import httpx
    import requests

    spec, (token_url, api_url), seed = job
    auth = _auth(spec, token_url)
    tally, lock = Tally(), threading.Lock()

    def caller(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        session = requests.Session()
        session.trust_env = False
        session.auth = auth
        client = httpx.Client(auth=auth, timeout=60, trust_env=False)
        while not stop.value:
            started = time.monotonic()
            cause = None
            try:
                if index % 2:
                    status = session.get(api_url, timeout=60).status_code
                else:
                    status = client.get(api_url).status_code
                cause = None if status == 200 else f"HTTP {status}"
            except Exception as exc:
                cause = _cause(exc)
            with lock:
                tally.record(started, cause)
            time.sleep(rng.uniform(*THINK))
        client.close()

    auth.get_token()
    out.send(None)  # ready: the pass's clock starts when every worker is
    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    while not stop.value:
        time.sleep(1.0)
        _report(out, tally, lock)
    for thread in threads:
        thread.join(60)
    _report(out, tally, lock)


def _async_worker(job: Job, stop: Any, out: Connection) -> None:
    """TASKS asyncio tasks on one httpx.AsyncClient, until `stop` is set."""
    import httpx

    spec, (token_url, api_url), seed = job
    auth = _auth(spec, token_url)
    tally, lock = Tally(), threading.Lock()

    async def main() -> None:
        limits = httpx.Limits(max_connections=TASKS)
        async with httpx.AsyncClient(auth=auth, timeout=60, limits=limits, trust_env=False) as c:

            async def caller(index: int) -> None:
                rng = random.Random(seed * 1000 + index)
                while not stop.value:
                    started = time.monotonic()
                    try:
                        status = (await c.get(api_url)).status_code
                        cause = None if status == 200 else f"HTTP {status}"
                    except Exception as exc:
                        cause = _cause(exc)
                    with lock:
                        tally.record(started, cause)
                    await asyncio.sleep(rng.uniform(*THINK))

            async def reporter() -> None:
                while not stop.value:
                    await asyncio.sleep(1.0)
                    _report(out, tally, lock)

            await asyncio.gather(reporter(), *(caller(i) for i in range(TASKS)))

    auth.get_token()
    out.send(None)
    asyncio.run(main())
    _report(out, tally, lock)


# --- one pass ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PassResult:
    store: str
    seconds: float
    faults: list[Fault]
    windows: list[tuple[float, float, str]]  # wall-clock start, end, kind
    ok: int = 0
    failures: list[tuple[float, str, float]] = field(default_factory=list)
    longest: float = 0.0
    counters: dict[str, Any] = field(default_factory=dict)
    killed: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load, at start and end

    def why(self, at: float, cause: str, took: float) -> str:
        """Which kind of failure: "fault" (no token could be had), "transit" or "other"."""
        if any(
            kind in TOKEN_FAULTS and start <= at <= end + EXPLAINED_AFTER
            for start, end, kind in self.windows
        ):
            return "fault"
        if cause == "HTTP 401" and any(
            kind == "revoke-access" and start <= at <= end + took + REVOKED_AFTER
            for start, end, kind in self.windows
        ):
            # The API revoked every token so far: a request that another caller's renewal
            # had already answered resends once with that newer token, revoked as well.
            return "revoked"
        if cause == "HTTP 401" and took >= TOKEN_LIFETIME / 2:
            # Slower than a token's remaining life at renewal: it expired on the way, the
            # renewal and the one resend were slow again. The machine's load, not a fault.
            return "transit"
        return "other"


@contextlib.contextmanager
def _redis(directory: Path, *, persistent: bool = True) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    server = RedisServer(directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_pass(store: str, seconds: float, seed: int, directory: Path) -> PassResult:
    """One pass: start the fake, the store and the workers, play the schedule, collect."""
    rng = random.Random(f"{seed}:{store}")
    result = PassResult(store, seconds, draw_schedule(rng, store, seconds), [])
    fake = FakeControl()
    started_load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        stack.callback(fake.close)
        server = None
        if store == "redis":
            (directory / "redis").mkdir()
            server = stack.enter_context(_redis(directory / "redis"))
            spec = ("redis", server.url, f"soak:{os.urandom(4).hex()}:")
        else:
            spec = ("file", str(directory / "tokens"), "")
        workers = _Workers(spec, (fake.token_url, fake.api_url), seed)
        stack.callback(workers.stop, result)
        _play(result, rng, workers, fake, server)
        workers.stop(result)
        result.counters = fake("counters")
    result.load = (started_load, os.getloadavg()[0])
    return result


class _Workers:
    """The worker processes of a pass, each reporting through a pipe of its own."""

    def __init__(self, spec: tuple[str, str, str], urls: tuple[str, str], seed: int) -> None:
        self._context = get_context("spawn")
        self._spec, self._urls, self._seed = spec, urls, seed
        self._stop = self._context.RawValue("b", 0)  # lock-free: a killed worker holds no lock
        self.readers: list[Connection] = []
        self.processes = {f"sync-{i}": self._start(i, _sync_worker) for i in range(PROCESSES)}
        self.processes["async"] = self._start(PROCESSES, _async_worker)
        for reader in self.readers:  # every worker has its first token before the clock starts
            if not reader.poll(120) or reader.recv() is not None:
                raise RuntimeError("a worker did not start")

    def _start(self, index: int, target: Any) -> Any:
        reader, writer = self._context.Pipe(duplex=False)
        job = (self._spec, self._urls, self._seed * 100 + index)
        process = self._context.Process(target=target, args=(job, self._stop, writer))
        process.start()
        writer.close()
        self.readers.append(reader)
        return process

    def kill_one(self, rng: random.Random) -> str:
        victim = rng.choice(sorted(name for name in self.processes if name != "async"))
        os.kill(self.processes[victim].pid, signal.SIGKILL)
        self.processes[victim].join()
        self.processes[victim] = self._start(PROCESSES + 1, _sync_worker)
        return victim

    def stop(self, result: PassResult) -> None:
        if self._stop.value:
            return
        self._stop.value = 1
        deadline = time.monotonic() + 60
        while any(p.is_alive() for p in self.processes.values()) and time.monotonic() < deadline:
            _drain(self.readers, result, block_until=time.monotonic() + 0.2)
        _drain(self.readers, result, block_until=time.monotonic() + 0.5)
        for process in self.processes.values():
            if process.is_alive():
                process.kill()
            process.join(5)


def _play(
    result: PassResult, rng: random.Random, workers: _Workers, fake: FakeControl, server: Any
) -> None:
    """Inflict every fault of the schedule at its time, and kill one worker once."""
    kill_at = rng.uniform(result.seconds / 4, 3 * result.seconds / 4)
    events = sorted([(f.at, f.kind, f) for f in result.faults] + [(kill_at, "kill", None)])
    began = time.monotonic()
    for at, kind, fault in events:
        _drain(workers.readers, result, block_until=began + at)
        print(f"  {result.store} +{at:5.1f} s: {kind}", file=sys.stderr, flush=True)
        if fault is None:
            result.killed = workers.kill_one(rng)
            continue
        started = time.time()
        _inflict(fault, fake, server)
        _drain(workers.readers, result, block_until=time.monotonic() + fault.lasts)
        _heal(fault, fake, server)
        result.windows.append((started, time.time(), fault.kind))
    _drain(workers.readers, result, block_until=began + result.seconds)


def _drain(readers: list[Connection], result: PassResult, *, block_until: float) -> None:
    """Collect the workers' reports until `block_until` (monotonic seconds)."""
    while (left := block_until - time.monotonic()) > 0:
        for ready in connection_wait(list(readers), timeout=min(left, 0.2)):
            assert isinstance(ready, Connection)
            try:
                report = ready.recv()
            except (EOFError, OSError):  # that worker has ended (or was killed)
                readers.remove(ready)
                continue
            if report is None:  # a restarted worker is ready
                continue
            ok, failures, longest = report
            result.ok += ok
            result.failures.extend(failures)
            result.longest = max(result.longest, longest)


def _inflict(fault: Fault, fake: FakeControl, server: Any) -> None:
    kind = fault.kind
    if kind == "token-503":
        fake("fail", (503, None, None))
    elif kind == "token-429":
        fake("fail", (429, None, {"Retry-After": "1"}))
    elif kind == "token-garbage":
        fake("fail", (200, b"<html><body>maintenance</body></html>", None))
    elif kind == "token-hang":
        fake("hold")
    elif kind == "token-reset":
        fake("reset", True)
    elif kind == "revoke-access":
        fake("revoke")
    elif kind == "redis-restart":
        server.stop()
    elif kind == "redis-sigstop":
        server.pause()


def _heal(fault: Fault, fake: FakeControl, server: Any) -> None:
    kind = fault.kind
    if kind in {"token-503", "token-429", "token-garbage"}:
        fake("clear")
    elif kind == "token-hang":
        fake("release")
    elif kind == "token-reset":
        fake("reset", False)
    elif kind == "redis-restart":
        server.start()
    elif kind == "redis-sigstop":
        server.resume()


# --- output ------------------------------------------------------------------------------------


def report(results: list[PassResult], seed: int) -> str:
    titles = {"redis": "RedisStore (redis-server)", "file": "FileStore"}
    headers = ["", *(titles[r.store] for r in results)]

    def row(label: str, cells: list[str]) -> list[str]:
        return [label, *cells]

    def failures(result: PassResult, kind: str) -> str:
        chosen = [c for at, c, took in result.failures if result.why(at, c, took) == kind]
        if not chosen:
            return "0"
        kinds = Counter(chosen).most_common(3)
        return f"{len(chosen)} ({', '.join(f'{k} ×{n}' for k, n in kinds)})"

    def fault_counts(result: PassResult) -> str:
        counts = Counter(f.kind for f in result.faults)
        return ", ".join(f"{kind} ×{n}" for kind, n in sorted(counts.items()))

    rows = [
        row("duration", [f"{r.seconds:.0f} s" for r in results]),
        row("faults drawn", [fault_counts(r) for r in results]),
        row("worker SIGKILLed and restarted", [r.killed or "—" for r in results]),
        row("requests", [str(r.ok + len(r.failures)) for r in results]),
        row(
            "failed, inside a token-endpoint fault window", [failures(r, "fault") for r in results]
        ),
        row(
            "failed, token expired in transit (request slower than 1 s)",
            [failures(r, "transit") for r in results],
        ),
        row(
            "failed, 401 on the one resend right after a revocation",
            [failures(r, "revoked") for r in results],
        ),
        row("failed, any other way", [failures(r, "other") for r in results]),
        row("stale refresh tokens presented", [str(r.counters["stale"]) for r in results]),
        row(
            "refresh-token chains broken (refresh refused)",
            [str(r.counters["refused_refreshes"]) for r in results],
        ),
        row(
            "password logins (cold start, store outages, chains broken)",
            [str(r.counters["by_grant"].get("password", 0)) for r in results],
        ),
        row(
            "token calls per token lifetime",
            [
                f"{r.counters['token_calls'] / (r.seconds / TOKEN_LIFETIME):.2f} "
                f"({r.counters['token_calls']} in {r.seconds:.0f} s)"
                for r in results
            ],
        ),
        row("most token calls at once", [str(r.counters["max_concurrent"]) for r in results]),
        row(
            "API 401s (revocations, then one resend)",
            [str(r.counters["api_unauthorized"]) for r in results],
        ),
        row("longest request stall", [f"{r.longest:.2f} s" for r in results]),
        row(
            "machine load (1 min), start → end",
            [f"{r.load[0]:.1f} → {r.load[1]:.1f}" for r in results],
        ),
    ]
    versions = [f"renewauth {version('renewauth')}", f"redis-py {version('redis')}"]
    lines = [
        header_line(versions),
        "",
        f"Seed {seed}. {PROCESSES} processes × {THREADS} threads (requests and httpx) and one "
        f"asyncio process × {TASKS} tasks share one `OAuth2Password` credential; "
        f"{TOKEN_LIFETIME:g} s tokens, rotating refresh tokens, renewed at half-life.",
        "",
        markdown_table(headers, rows),
        "",
        "A failure is inside a window when a token-endpoint fault (503, 429, reset, hang, "
        f"garbage) was active at most {EXPLAINED_AFTER:g} s before it (a {TOKEN_LIFETIME:g} s "
        "token outlives the fault's start by up to one lifetime, and the failing renewal's "
        "retries run on): no token could be had. Redis restarts, SIGSTOP pauses, revocations "
        "and the killed worker explain no failure. A revocation rejects every token issued "
        "so far: a request whose resend carries a token another caller had just adopted from "
        "the store, itself issued before the revocation, gets the second 401 back (one resend "
        "per request). A 401 after the one resend, on a request "
        f"that took more than {TOKEN_LIFETIME / 2:g} s (the life a token has left when it is "
        "renewed), is a token that expired on its way through a loaded machine; a load far "
        "above the CPU count makes those. Token calls per lifetime: 2 is the ideal "
        "(renewal at half-life); faults add retries and, during store outages, one local "
        "login per process.",
    ]
    return "\n".join(lines)


# --- the restarts pass: a technical user as short-lived processes --------------------------------
#
# A technical user (`OAuth2RefreshToken`: its refresh token is its only credential, and the fake
# rotates it on every use) run as short-lived processes, cron-like: each starts, sends a few
# requests and exits. LANES lanes run side by side, each starting its next process when the one
# before ends, so processes overlap. Each process's fate is drawn with the schedule: most exit
# normally, KILL_SHARE are SIGKILLed at a random moment of their life, REFUSE_SHARE exit while
# the store refuses writes. Meanwhile the store forgets: a Redis without persistence is
# restarted (everything in it is lost), or the token file is deleted. All processes share one
# RENEWAUTH_STATE_DIR (one machine, one spare copy).
#
# Every worker keeps a journal (one line per event, written with os.write, so a SIGKILL loses
# none it finished): what it read from the store and the spare copy, each refresh grant it
# sent ("call", the fingerprint of the refresh token presented) and its answer, each token the
# store or the spare copy took, each write the store refused, each request. The fake keeps a
# journal of the refresh grants it answered. Together they say which refresh token was lost,
# by whom, and whether a SIGKILL explains it (see `analyse_restarts`).

RESTART_PROCESSES, LANES = 200, 4
REQUESTS = (3, 10)  # requests per process, drawn uniformly
RESTART_THINK = (0.05, 0.4)  # seconds between two requests of a process
KILL_SHARE, REFUSE_SHARE = 0.15, 0.08  # of the processes: SIGKILLed; exit while writes refused
REFUSAL_AFTER_EXIT = (0.2, 2.0)  # seconds a write-refusal window stays open after its exit
STORE_FAULT_GAP = (2.0, 8.0)  # seconds between two Redis restarts, or two file deletions
REDIS_DOWN = (0.05, 1.0)  # seconds a restarted Redis is down
PROCESS_LIMIT = 120.0  # a process that runs longer is killed and counted as hung
CHAIN_BROKEN_AFTER = 3.0  # a refused refresh grant with no success this long after: broken
OUTAGE_MARGIN = 2.0  # seconds after Redis is back during which a failure is the outage's
MENDED_MARGIN = 2.0  # seconds after a mend during which a failure is still the broken chain's
LEEWAY = 30.0  # the default: a 2 s token is renewed at half its life
CLIENT_ID, CLIENT_SECRET = "client-id", "client-secret"
RESTART_STORES = {
    "redis": "RedisStore, no persistence (restarted)",
    "file": "FileStore (token file deleted)",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """One short-lived process of the restarts pass, as the schedule drew it."""

    index: int
    lane: int
    client: str  # "requests", "httpx" or "async" (httpx.AsyncClient)
    thinks: tuple[float, ...]  # the pause after each request: one request per entry
    fate: str  # "exit", "kill" or "refuse"
    at: float  # kill: seconds after the process is ready; refuse: the window after its exit


def draw_plans(rng: random.Random, count: int, lanes: int) -> list[Plan]:
    """The pass's processes: their requests, clients and fates, in the order they start."""
    kills, refusals = round(count * KILL_SHARE), round(count * REFUSE_SHARE)
    fates = ["kill"] * kills + ["refuse"] * refusals + ["exit"] * (count - kills - refusals)
    rng.shuffle(fates)
    plans = []
    for index, fate in enumerate(fates):
        thinks = tuple(rng.uniform(*RESTART_THINK) for _ in range(rng.randint(*REQUESTS)))
        client = rng.choice(("requests", "httpx", "async"))
        at = 0.0
        if fate == "kill":  # any moment from its first request to about its planned end
            at = rng.uniform(0.0, sum(thinks) + 0.05 * len(thinks))
        elif fate == "refuse":
            at = rng.uniform(*REFUSAL_AFTER_EXIT)
        plans.append(Plan(index, index % lanes, client, thinks, fate, at))
    return plans


# --- the restarts pass: the worker (a process of its own: `bench_soak.py --worker JOB`) -----------


def restart_worker(job: dict[str, Any]) -> int:
    """One short-lived process: build the auth object, send the planned requests, exit.

    Its journal goes to `job["journal"]`, renewauth's log (DEBUG) to stderr, which the runner
    sends to a file per worker. It says "ready" on stdout once it is about to send.
    """
    import atexit
    import logging

    journal = os.open(job["journal"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(*fields: object) -> None:
        line = "\t".join([f"{time.time():.6f}", *(str(f) for f in fields)]) + "\n"
        with contextlib.suppress(OSError):
            os.write(journal, line.encode())

    # Whether the store refused the last write it was asked, the refresh tokens this process
    # was issued, and when the store last refused a token this process renewed.
    pending: dict[str, Any] = {"refused": False, "issued": set(), "kept_at": 0.0}
    # Registered before renewauth is imported: atexit runs it after renewauth's own handler,
    # which writes a kept token once more or leaves it in the spare copy.
    atexit.register(lambda: note("exited", "refused" if pending["refused"] else "clear"))
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("renewauth").setLevel(logging.DEBUG)

    import renewauth

    flags = Path(job["flags"])
    note("start", os.getpid(), job["client"], len(job["thinks"]), job["fate"])
    store = _journaled_store(job["store"], note, flags, pending)
    auth = renewauth.OAuth2RefreshToken(
        job["token_url"],
        CLIENT_ID,
        job["refresh_token"],
        client_secret=CLIENT_SECRET,
        store=store,
        leeway=LEEWAY,
        on_event=lambda event: note("event", *_event_fields(event)),
    )
    _journal_internals(auth, note, pending["issued"])
    send, current, close = _client(job["client"], auth, job["api_url"] + "items")

    def request() -> None:
        started = time.monotonic()
        try:
            status = send()
            cause = "ok" if status == 200 else f"HTTP {status}"
        except Exception as exc:
            cause = type(exc).__name__
        note("request", cause, f"{time.monotonic() - started:.3f}")

    print("ready", flush=True)
    thinks = job["thinks"]
    for number, think in enumerate(thinks):
        if job["fate"] == "refuse" and number == len(thinks) - 1:
            _refuse_at_exit(current, request, flags / str(job["index"]), note, pending)
        else:
            request()
        time.sleep(think)
    close()
    return 0


def _client(kind: str, auth: Any, api_url: str) -> tuple[Any, Any, Any]:
    """How a worker sends one request (its status), reads its current token and closes, with
    `requests`, `httpx.Client` or `httpx.AsyncClient` (on an event loop of its own)."""
    import httpx
    import requests

    if kind == "requests":
        session = requests.Session()
        session.trust_env = False
        session.auth = auth
        return (
            lambda: session.get(api_url, timeout=60).status_code,
            auth.get_token,
            session.close,
        )
    if kind == "httpx":
        client = httpx.Client(auth=auth, timeout=60, trust_env=False)
        return lambda: client.get(api_url).status_code, auth.get_token, client.close
    loop = asyncio.new_event_loop()
    aclient = httpx.AsyncClient(auth=auth, timeout=60, trust_env=False)

    def close() -> None:
        loop.run_until_complete(aclient.aclose())
        loop.close()

    return (
        lambda: loop.run_until_complete(aclient.get(api_url)).status_code,
        lambda: loop.run_until_complete(auth.aget_token()),
        close,
    )


def _refuse_at_exit(
    current: Any, request: Any, flag: Path, note: Any, pending: dict[str, Any]
) -> None:
    """Open this process's write-refusal window and renew inside it, then return (to exit).

    The process waits until its token is due, opens the window (the flag file) and sends its
    last request, whose renewal the store refuses. Another process may renew first (this one
    then adopts its token): it waits for the next due time and tries again, three times."""
    opened = time.time()
    for attempt in range(3):
        try:
            due = current().renew_at(LEEWAY)
        except Exception as exc:  # no token to wait for (the store is down): send at once
            note("request", type(exc).__name__, "0.000")
            due = time.time()
        time.sleep(max(0.0, due - time.time()) + 0.02)
        if attempt == 0:
            opened = time.time()
            flag.touch()
            note("window", "open")
        request()
        if pending["kept_at"] >= opened:  # the store refused a token this process renewed
            return


def _journaled_store(
    spec: tuple[str, str, str], note: Any, flags: Path, pending: dict[str, Any]
) -> Any:
    """The worker's store: a FileStore or RedisStore whose fenced writes are refused while a
    write-refusal window is open (a file in `flags`), and whose reads and writes go to the
    journal."""
    import renewauth

    kind, where, prefix = spec
    base: Any = renewauth.FileStore if kind == "file" else renewauth.RedisStore

    class Refusing(base):  # type: ignore[misc, valid-type]
        def get_with_generation(self, key: str) -> tuple[Any, int]:
            try:
                token, generation = super().get_with_generation(key)
            except renewauth.StoreError:
                note("read", "store", "failed")
                raise
            note("read", "store", *_token_fields(token), generation)
            return token, generation

        def set_if_generation(self, key: str, token: Any, generation: int) -> int | None:
            if any(flags.iterdir()):
                pending["refused"] = True
                if fingerprint(token.refresh_token) in pending["issued"]:
                    pending["kept_at"] = time.time()
                note("refused", *_token_fields(token), generation)
                raise renewauth.StoreError(
                    "the token store refuses writes (a write-refusal window of the soak)"
                )
            try:
                written = super().set_if_generation(key, token, generation)
            except renewauth.StoreError:
                note("write-failed", *_token_fields(token), generation)
                raise
            if written is not None:
                pending["refused"] = False
            note("stored" if written else "fenced-out", *_token_fields(token), generation, written)
            return written

    if kind == "file":
        return Refusing(where)
    return Refusing(where, prefix=prefix, **REDIS_OPTIONS)


def _journal_internals(auth: Any, note: Any, issued: set[str]) -> None:
    """Journal the token calls and the spare copy of `auth` (renewauth's private parts: the
    manager's sender and spare; instrumentation only, nothing else is changed)."""
    manager = auth._manager
    port = getattr(manager, "_port", None)
    if not hasattr(port, "sender") or getattr(port, "spare", None) is None:
        raise RuntimeError("renewauth's manager changed: update bench_soak._journal_internals")
    port.sender = _JournaledSender(port.sender, note, issued)
    spare = port.spare
    get, put = spare.get, spare.put

    def spare_get(key: str) -> Any:
        token = get(key)
        note("read", "spare", *_token_fields(token))
        return token

    def spare_put(key: str, token: Any) -> Any:
        where = put(key, token)
        note("spared" if where is not None else "spare-failed", *_token_fields(token))
        return where

    spare.get, spare.put = spare_get, spare_put


class _JournaledSender:
    """Wraps the auth object's token sender: a "call" line before each token call (the refresh
    token it presents) and an "answer" line after (the refresh token it brought)."""

    def __init__(self, inner: Any, note: Any, issued: set[str]) -> None:
        self._inner, self._note, self._issued = inner, note, issued

    def _call(self, request: Any) -> None:
        from urllib.parse import parse_qs

        presented = parse_qs(request.body.decode()).get("refresh_token", [None])[0]
        self._note("call", request.grant, fingerprint(presented))

    def _answer(self, reply: Any) -> Any:
        issued = fingerprint(issued_refresh_token(reply.body))
        self._issued.add(issued)
        self._note("answer", reply.status, issued)
        return reply

    def send(self, request: Any, *, timeout: float) -> Any:
        self._call(request)
        try:
            reply = self._inner.send(request, timeout=timeout)
        except Exception as exc:
            self._note("answer", type(exc).__name__, "-")
            raise
        return self._answer(reply)

    async def asend(self, request: Any, *, timeout: float) -> Any:
        self._call(request)
        try:
            reply = await self._inner.asend(request, timeout=timeout)
        except Exception as exc:
            self._note("answer", type(exc).__name__, "-")
            raise
        return self._answer(reply)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _token_fields(token: Any) -> tuple[str, str, str]:
    """A token in a journal: its refresh token's fingerprint, its sequence, seconds left."""
    if token is None:
        return ("-", "-", "-")
    left = "-" if token.expires_at is None else f"{token.expires_at - time.time():.2f}"
    return (fingerprint(token.refresh_token), str(token.sequence), left)


def _event_fields(event: Any) -> tuple[str, ...]:
    name = type(event).__name__
    if name == "Renewed":
        return (name, event.source, str(event.grant))
    if name == "RenewalFailed":
        return (name, event.error, str(event.status))
    if name == "Paused":
        return (name, event.reason, f"{event.until - time.time():.1f}")
    return (name,)


# --- the restarts pass: the runner ---------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What happened to one planned process."""

    plan: Plan
    started: float = 0.0
    ready: float | None = None
    ended: float = 0.0
    killed_at: float | None = None
    hung: bool = False
    returncode: int | None = None
    window_closed: float | None = None
    journal: list[list[str]] = field(default_factory=list)  # [time, event, fields…]


@dataclass(slots=True)
class RestartResult:
    store: str
    seed: int
    lanes: int
    runs: list[Run] = field(default_factory=list)
    store_faults: list[tuple[float, float]] = field(default_factory=list)  # down, up (or deleted)
    reseeds: list[float] = field(default_factory=list)
    grants: list[tuple[float, str, str, str]] = field(default_factory=list)  # the fake's journal
    counters: dict[str, Any] = field(default_factory=dict)
    alive: str = ""
    check: Run | None = None  # the fresh process after the pass
    command: str = ""  # how the pass was run
    header: str = ""  # the versions and the date, as the pass ended
    seconds: float = 0.0
    logs: dict[str, int] = field(default_factory=dict)  # renewauth log lines that matter, counted
    directory: Path = Path()


class _Runner:
    """Starts the planned processes lane by lane, kills the drawn ones, closes the windows."""

    def __init__(self, result: RestartResult, job: dict[str, Any], directory: Path) -> None:
        self.result, self.job, self.directory = result, job, directory
        self.flags = directory / "flags"
        self.flags.mkdir(mode=0o700)
        (directory / "journals").mkdir()
        (directory / "logs").mkdir()
        self.environment = {**os.environ, "RENEWAUTH_STATE_DIR": str(directory / "state")}
        self.environment.pop("XDG_RUNTIME_DIR", None)  # one spare place: the state directory
        self.timers: list[threading.Timer] = []
        self.lock = threading.Lock()

    def launch(self, plan: Plan) -> subprocess.Popen[bytes]:
        job = {
            **self.job,
            "index": plan.index,
            "client": plan.client,
            "thinks": plan.thinks,
            "fate": plan.fate,
            "flags": str(self.flags),
            "journal": str(self.directory / "journals" / f"{plan.index:03d}.tsv"),
        }
        with (self.directory / "logs" / f"{plan.index:03d}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.environment,
                cwd=self.directory,
            )

    def run(self, plan: Plan) -> Run:
        run = Run(plan, started=time.time())
        with self.lock:
            self.result.runs.append(run)
        process = self.launch(plan)
        assert process.stdout is not None
        deadline = time.monotonic() + PROCESS_LIMIT
        ready = select.select([process.stdout], [], [], PROCESS_LIMIT)[0]
        if ready and process.stdout.readline().startswith(b"ready"):
            run.ready = time.time()
        if plan.fate == "kill" and run.ready is not None:
            try:
                process.wait(timeout=plan.at)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                run.killed_at = time.time()
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            run.hung = True
            process.wait()
        run.ended, run.returncode = time.time(), process.returncode
        process.stdout.close()
        if plan.fate == "refuse":
            timer = threading.Timer(plan.at, self.close_window, args=(run,))
            timer.start()
            self.timers.append(timer)
        return run

    def close_window(self, run: Run) -> None:
        (self.flags / str(run.plan.index)).unlink(missing_ok=True)
        run.window_closed = time.time()

    def lane(self, plans: list[Plan]) -> None:
        for plan in plans:
            self.run(plan)

    def finish(self) -> None:
        for timer in self.timers:
            timer.join()


def run_restarts(store: str, count: int, lanes: int, seed: int, directory: Path) -> RestartResult:
    """One restarts pass: the fake, the store, the lanes of processes, the store's faults."""
    import renewauth

    rng = random.Random(f"{seed}:restarts:{store}")
    plans = draw_plans(rng, count, lanes)
    faults_rng = random.Random(f"{seed}:restarts:{store}:store-faults")
    result = RestartResult(store, seed, lanes, directory=directory)
    fake = FakeControl()
    fake_lock = threading.Lock()

    def ask(command: str, argument: object = None) -> Any:
        with fake_lock:
            return fake(command, argument)

    with contextlib.ExitStack() as stack:
        stack.callback(fake.close)
        server = None
        if store == "redis":
            (directory / "redis").mkdir()
            server = stack.enter_context(_redis(directory / "redis", persistent=False))
            spec = ("redis", server.url, f"soak:{os.urandom(4).hex()}:")
            shared: Any = renewauth.RedisStore(server.url, prefix=spec[2], **REDIS_OPTIONS)
        else:
            spec = ("file", str(directory / "tokens"), "")
            shared = renewauth.FileStore(directory / "tokens")
        refresh_token = ask("issue")
        key = renewauth.OAuth2RefreshToken(
            fake.token_url,
            CLIENT_ID,
            refresh_token,
            client_secret=CLIENT_SECRET,
            store=renewauth.MemoryStore(),
        )._manager.key
        job = {
            "store": spec,
            "token_url": fake.token_url,
            "api_url": fake.api_url,
            "refresh_token": refresh_token,
        }
        runner = _Runner(result, job, directory)
        stop = threading.Event()
        began = time.monotonic()
        helpers = [
            threading.Thread(
                target=_store_faults,
                args=(store, faults_rng),
                kwargs={
                    "server": server,
                    "tokens": directory / "tokens",
                    "stop": stop,
                    "log": result.store_faults,
                },
                daemon=True,
            ),
            threading.Thread(
                target=_mend_chain,
                args=(ask, shared, key),
                kwargs={
                    "spare": directory / "state" / "spare",
                    "stop": stop,
                    "log": result.reseeds,
                },
                daemon=True,
            ),
        ]
        lanes_run = [
            threading.Thread(target=runner.lane, args=([p for p in plans if p.lane == lane],))
            for lane in range(lanes)
        ]
        for thread in [*helpers, *lanes_run]:
            thread.start()
        progress = 0
        while any(thread.is_alive() for thread in lanes_run):
            time.sleep(1.0)
            done = sum(1 for run in result.runs if run.ended)
            if done >= progress + 20:
                progress = done
                print(
                    f"  restarts {store} +{time.monotonic() - began:5.0f} s: {done} processes",
                    file=sys.stderr,
                    flush=True,
                )
        runner.finish()
        stop.set()
        for thread in helpers:
            thread.join()
        result.seconds = time.monotonic() - began
        result.alive = _check_alive(runner, ask, count)
        result.counters = ask("counters")
        result.grants = ask("journal")
    for run in result.runs:
        run.journal = _read_journal(directory / "journals" / f"{run.plan.index:03d}.tsv")
    result.logs = _count_logs(directory / "logs")
    result.command = " ".join(["python benchmarks/bench_soak.py", *sys.argv[1:]])
    result.header = header_line(_versions())
    _save(result)
    return result


def _versions() -> list[str]:
    return [f"renewauth {version('renewauth')}", f"redis-py {version('redis')}"]


def _save(result: RestartResult) -> None:
    """The pass beside the journals (pass.json), for a diagnosis after the run (--keep)."""
    runs = [
        {
            "index": run.plan.index,
            "lane": run.plan.lane,
            "client": run.plan.client,
            "fate": run.plan.fate,
            "at": run.plan.at,
            "thinks": run.plan.thinks,
            "started": run.started,
            "ready": run.ready,
            "ended": run.ended,
            "killed_at": run.killed_at,
            "hung": run.hung,
            "returncode": run.returncode,
            "window_closed": run.window_closed,
        }
        for run in _everyone(result)
    ]
    summary = {
        "store": result.store,
        "seed": result.seed,
        "lanes": result.lanes,
        "seconds": result.seconds,
        "command": result.command,
        "header": result.header,
        "runs": runs,
        "store_faults": result.store_faults,
        "mends": result.reseeds,
        "grants": result.grants,
        "counters": result.counters,
        "alive": result.alive,
    }
    (result.directory / "pass.json").write_text(json.dumps(summary, indent=1))


def load_restarts(directory: Path) -> RestartResult:
    """A pass saved by `_save`, with its journals and logs (`--report-from`)."""
    saved = json.loads((directory / "pass.json").read_text())
    result = RestartResult(saved["store"], saved["seed"], saved["lanes"], directory=directory)
    result.seconds, result.counters, result.alive = (
        saved["seconds"],
        saved["counters"],
        saved["alive"],
    )
    result.command, result.header = saved.get("command", ""), saved.get("header", "")
    result.store_faults = [tuple(fault) for fault in saved["store_faults"]]  # type: ignore[misc]
    result.reseeds, result.grants = saved["mends"], [tuple(g) for g in saved["grants"]]  # type: ignore[misc]
    for entry in saved["runs"]:
        plan = Plan(
            entry["index"],
            entry["lane"],
            entry["client"],
            tuple(entry["thinks"]),
            entry["fate"],
            entry["at"],
        )
        run = Run(plan, entry["started"], entry["ready"], entry["ended"], entry["killed_at"])
        run.hung, run.returncode = entry["hung"], entry["returncode"]
        run.window_closed = entry["window_closed"]
        run.journal = _read_journal(directory / "journals" / f"{plan.index:03d}.tsv")
        result.runs.append(run)
    result.check = result.runs.pop()  # the fresh process after the pass was saved last
    result.logs = _count_logs(directory / "logs")
    return result


def _store_faults(
    store: str,
    rng: random.Random,
    *,
    server: Any,
    tokens: Path,
    stop: threading.Event,
    log: list[tuple[float, float]],
) -> None:
    """Restart Redis (no persistence: it comes back empty) or delete the token file, now and
    then, until `stop`."""
    while not stop.wait(rng.uniform(*STORE_FAULT_GAP)):
        if store == "redis":
            down = time.time()
            server.stop()
            time.sleep(rng.uniform(*REDIS_DOWN))
            server.start()
            log.append((down, time.time()))
        else:
            deleted = False
            for file in tokens.glob("*.json"):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
                    deleted = True
            if deleted:
                log.append((time.time(), time.time()))


def _mend_chain(
    ask: Any, store: Any, key: str, *, spare: Path, stop: threading.Event, log: list[float]
) -> None:
    """Stand in for the operator: when the chain has broken (a refused refresh grant and no
    success for CHAIN_BROKEN_AFTER seconds), issue a new refresh token and put it in the store
    and the spare copy, further along than anything there, so the pass goes on. Each mend is
    counted; none is needed when no chain breaks."""
    import renewauth

    while not stop.wait(0.25):
        last_ok, last_refused = ask("chain")
        mended = log[-1] if log else 0.0
        if not (last_refused > max(last_ok, mended)) or time.time() - last_refused < (
            CHAIN_BROKEN_AFTER
        ):
            continue
        spare_store = renewauth.FileStore(spare)
        try:
            with store.lock(key):
                held = [t for t in (store.get(key), spare_store.get(key)) if t is not None]
                now = time.time()
                token = renewauth.Token(
                    access_token="mended",
                    issued_at=now - 2,
                    expires_at=now - 1,  # expired: the next process renews from it at once
                    refresh_token=ask("issue"),
                    sequence=max((t.sequence for t in held), default=0) + 1000,
                )
                store.set(key, token)
                spare_store.set(key, token)
                # The refusal's pause is about the lost token; a newer one is not paused by it,
                # but a pause re-shared without its refresh token is (see README).
                store.delete_pause(key)
        except renewauth.StoreError:
            continue  # Redis is down: next time
        log.append(time.time())
        print(f"  chain broken: mended with a new refresh token at {now:.1f}", file=sys.stderr)


def _check_alive(runner: _Runner, ask: Any, count: int) -> str:
    """A fresh process after the pass, access tokens revoked so that it must renew: it gets
    200, and its refresh token is neither stale nor refused."""
    ask("revoke")
    before = ask("counters")
    run = runner.run(Plan(count, 0, "requests", (0.0,), "exit", 0.0))
    runner.result.runs.remove(run)  # not one of the pass's processes
    runner.result.check = run
    after = ask("counters")
    journal = _read_journal(runner.directory / "journals" / f"{count:03d}.tsv")
    run.journal = journal
    requests_ok = [line for line in journal if line[1] == "request" and line[2] == "ok"]
    renewed = after["by_grant"].get("refresh_token", 0) > before["by_grant"].get("refresh_token", 0)
    stale = after["stale"] - before["stale"]
    refused = after["refused_refreshes"] - before["refused_refreshes"]
    if requests_ok and renewed and not stale and not refused:
        return "yes (200 after a refresh grant, nothing stale)"
    return (
        f"no (request ok: {bool(requests_ok)}, renewed: {renewed}, stale {stale}, "
        f"refused {refused})"
    )


def _read_journal(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split("\t") for line in text.splitlines() if line]


LOG_MARKS = {
    "written again": "store lost the token during a renewal: written again",
    "was written back": "store had lost the token: written back (from the spare copy)",
    "could not be stored": "renewed token kept in memory (store refused it)",
    "is in the store now": "kept token written later by the writer thread",
    "is left in": "kept token left in the spare copy at exit",
    "chain breaks": "ERROR: the chain breaks (nowhere to keep the token)",
    "was refused, but the store holds a newer one": "refused refresh token, continued from a newer",
}


def _count_logs(logs: Path) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        for mark in LOG_MARKS:
            counts[mark] += text.count(mark)
    return dict(counts)


# --- the restarts pass: what the journals say ----------------------------------------------------


@dataclass(slots=True)
class Loss:
    """A refresh token the server issued that nobody presented afterwards: the chain broke."""

    at: float
    parent: str  # the refresh token it replaced (the one everybody still held)
    lost: str
    run: Run | None  # the process that received it, if the journals say which
    inherent: bool
    why: str


@dataclass(slots=True)
class RestartAnalysis:
    losses: list[Loss] = field(default_factory=list)
    stale: Counter[str] = field(default_factory=Counter)  # "inherent" / "other"
    refused: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)  # class → causes
    requests: int = 0
    longest: float = 0.0
    unexplained: list[str] = field(default_factory=list)
    broken: list[tuple[float, float, bool]] = field(default_factory=list)  # from, mended, inherent


def _lines(run: Run, event: str) -> list[list[str]]:
    return [line for line in run.journal if len(line) > 1 and line[1] == event]


def analyse_restarts(result: RestartResult) -> RestartAnalysis:
    """Follow the chain through the fake's journal; name the cause of each loss, each stale
    or refused refresh token and each broken chain.

    A refresh token the fake issued that nobody presented afterwards (but the last), and that
    no journal shows the store or the spare copy taking, is lost. Its receiver is the process
    whose journal shows that answer, or else the one whose call presenting its parent got no
    answer at all. The loss is the inherent one when that process was SIGKILLed after the
    fake rotated the token. A stale or refused refresh grant that presents the parent of such
    a loss, after it, is that loss's echo; any other is unexplained. A chain broke when the
    runner had to mend it; it broke by the inherent loss when every refusal since the mend
    before was such an echo.
    """
    analysis = RestartAnalysis()
    grants = sorted(result.grants)
    everyone = _everyone(result)
    presented = {row[1] for row in grants}
    durable = {
        line[2] for run in everyone for line in _lines(run, "stored") + _lines(run, "spared")
    }
    parents = {row[3]: (row[1], row[0]) for row in grants if row[2] == "ok"}
    oks = [row for row in grants if row[2] == "ok"]
    head = oks[-1][3] if oks else None
    for at, parent, _, issued in oks:
        if issued in presented or issued == head or issued in durable:
            continue
        analysis.losses.append(_loss(result, at, parent, issued))
    refusals: list[tuple[float, bool]] = []
    for at, token, outcome, _ in grants:
        if outcome == "ok":
            continue
        of = [loss for loss in analysis.losses if loss.at <= at and loss.parent == token]
        echo = bool(of) and of[0].inherent
        refusals.append((at, echo))
        kind = "inherent" if echo else "other"
        analysis.refused[kind] += 1
        if outcome == "stale":
            analysis.stale[kind] += 1
        if of and not echo:
            analysis.unexplained.append(
                f"{outcome} refresh token {token} presented at {at:.3f}: the chain's newest "
                f"was lost ({of[0].lost}, below), this is the token before it"
            )
        elif not echo:
            analysis.unexplained.append(_describe_refusal(result, at, token, outcome, parents))
    for loss in analysis.losses:
        if not loss.inherent:
            analysis.unexplained.append(f"lost refresh token {loss.lost}: {loss.why}")
    before = -math.inf
    refused_tokens = {row[0]: row[1] for row in grants if row[2] != "ok"}
    for mended in result.reseeds:
        episode = [(at, echo) for at, echo in refusals if before < at <= mended]
        if episode:
            inherent = all(echo for _, echo in episode)
            broke = episode[0][0]
            analysis.broken.append((broke, mended, inherent))
            lost = any(broke - 10 <= loss.at <= mended for loss in analysis.losses)
            if not inherent and not lost:
                analysis.unexplained.append(
                    _describe_pause(result, broke, mended, refused_tokens[broke])
                )
        before = mended
    for run in result.runs:
        for line in _lines(run, "request"):
            at, cause, took = float(line[0]), line[2], float(line[3])
            analysis.requests += 1
            analysis.longest = max(analysis.longest, took)
            if cause == "ok":
                continue
            kind = _failure_kind(result, (at - took, at), cause, analysis.broken)
            analysis.failures.setdefault(kind, []).append(cause)
            if kind == "other":
                analysis.unexplained.append(
                    f"process {run.plan.index}: request failed at {at:.3f} ({cause}, "
                    f"took {took:.2f} s); log {_log(result, run)}"
                )
    return analysis


def _loss(result: RestartResult, at: float, parent: str, lost: str) -> Loss:
    everyone = _everyone(result)
    answered = [run for run in everyone if any(line[3] == lost for line in _lines(run, "answer"))]
    receiver = answered[0] if answered else None
    if receiver is None:  # killed before it read the answer: its call got none
        for run in everyone:
            calls = [float(line[0]) for line in _lines(run, "call") if line[3] == parent]
            if any(call <= at and _unanswered(run, call) for call in calls):
                receiver = run
    if receiver is None:
        return Loss(at, parent, lost, None, False, "no journal shows who received it")
    kept = {line[2] for line in _lines(receiver, "stored") + _lines(receiver, "spared")}
    killed = receiver.killed_at
    sent = max(
        (float(line[0]) for line in _lines(receiver, "call") if line[3] == parent),
        default=math.inf,
    )
    where = f"process {receiver.plan.index} ({receiver.plan.fate}); log {_log(result, receiver)}"
    from_kept = _kept(receiver, parent, sent)
    if killed is not None and killed >= sent and lost not in kept:
        order = "after" if at > killed else "before"
        why = (
            f"{where}: SIGKILLed {killed - sent:.3f} s after it sent the refresh grant (the "
            f"fake rotated the token {abs(at - killed):.3f} s {order} the kill), before any "
            "copy took it"
        )
        if from_kept:
            why += (
                f"; it had renewed from {parent}, a token kept in memory, whose new token "
                "waits for the writer thread (up to 1 s) before any copy is made"
            )
        return Loss(at, parent, lost, receiver, True, why)
    state = "SIGKILLed" if killed is not None else f"exited ({receiver.returncode})"
    why = f"{where}: {state}; neither the store nor the spare copy ever took it"
    if from_kept:
        why += (
            f". It had renewed from {parent}, a token kept in memory (the store had refused "
            "it), and exited before its writer thread put the new one in the spare copy; at "
            "the exit renewauth wrote it nowhere (its WARNING says that it was left in the "
            "spare copy, which held the token renewed from)"
        )
    return Loss(at, parent, lost, receiver, False, why)


def _unanswered(run: Run, call: float) -> bool:
    """Whether the call at `call` got no answer in `run`'s journal (the next answer line
    after it belongs to a later call, or there is none)."""
    after = [
        line for line in run.journal if float(line[0]) >= call and line[1] in ("call", "answer")
    ]
    return len(after) < 2 or after[1][1] != "answer"


def _failure_kind(
    result: RestartResult,
    span: tuple[float, float],
    cause: str,
    broken: list[tuple[float, float, bool]],
) -> str:
    """What explains a request that failed with `cause` over `span`: a broken chain (a refused
    refresh token while one was broken), a Redis outage, or nothing ("other")."""
    start, end = span
    chain = [
        "broken-inherent" if inherent else "broken-other"
        for broke, mended, inherent in broken
        if broke <= end <= mended + MENDED_MARGIN
    ]
    if chain and cause == "InvalidGrant":
        return chain[0]
    if result.store == "redis" and any(
        start <= up + OUTAGE_MARGIN and down <= end for down, up in result.store_faults
    ):
        return "outage"
    return chain[0] if chain else "other"


def _describe_refusal(
    result: RestartResult,
    at: float,
    token: str,
    outcome: str,
    parents: dict[str, tuple[str, float]],
) -> str:
    """Who presented the refused refresh token `token` at `at`, what it had read, what the
    store and the spare copy held then (by every journal), and who had renewed from it."""
    presenter, call_at = _caller(result, token, at)
    children = {parent: (child, when) for child, (parent, when) in parents.items()}
    depth, newest = 0, token
    while newest in children and children[newest][1] <= at:
        newest, depth = children[newest][0], depth + 1
    text = f"{outcome} refresh token {token} presented at {at:.3f} ({depth} rotations behind)"
    if presenter is None:
        return text + "; no journal shows its call"
    reads = [
        "/".join(line[1:6])
        for line in presenter.journal
        if line[1] == "read" and float(line[0]) <= call_at
    ][-3:]
    text += (
        f" by process {presenter.plan.index} ({presenter.plan.fate}, {presenter.plan.client}),"
        f" which read {reads}; the last token stored before was "
        f"{_last_before(result, 'stored', at)}, the last spared "
        f"{_last_before(result, 'spared', at)}; log {_log(result, presenter)}"
    )
    if token in children:  # another process had renewed from it: how did each get it?
        first, first_at = _caller(result, token, children[token][1])
        kept = [
            f"process {run.plan.index}"
            for run, when in ((first, first_at), (presenter, call_at))
            if run is not None and _kept(run, token, when)
        ]
        if first is not None:
            text += f". Process {first.plan.index} had renewed from it at {first_at:.3f}"
        if kept:
            text += (
                f"; {' and '.join(kept)} renewed from it as a token kept in memory (the "
                "store had refused it): a renewal that takes no lock and reads neither the "
                "store nor the spare copy"
            )
    return text


def _describe_pause(result: RestartResult, broke: float, mended: float, refused: str) -> str:
    """A chain broken although its newest token was kept: who was stopped without a call,
    holding a newer token than the one refused, and who re-wrote the pause beforehand."""
    blocked: set[int] = set()
    holding: str = "-"
    rewrote: tuple[float, int] | None = None
    for run in _everyone(result):
        held: list[str] | None = None  # the furthest token this renewal read
        previous = ""
        for line in run.journal:
            if line[1] == "read" and line[3] != "-":
                if held is None or int(line[4]) > int(held[4]):
                    held = line
            elif line[1] == "event" and line[2] == "Paused" and broke <= float(line[0]) <= mended:
                # Told by the store's pause, without a call of its own ("RenewalFailed" comes
                # first after a call).
                told = previous != "RenewalFailed" and held is not None
                if told and held is not None and held[3] != refused:
                    blocked.add(run.plan.index)
                    holding = f"{held[3]} seq {held[4]}"
                elif told and (rewrote is None or float(line[0]) < rewrote[0]):
                    rewrote = (float(line[0]), run.plan.index)
            if line[1] in ("event", "request"):
                previous = line[2] if line[1] == "event" else ""
                if line[1] == "request":
                    held = None
    text = (
        f"chain broken from {broke:.3f} until the mend at {mended:.3f}, though no token was "
        f"lost: {len(blocked)} processes holding a newer token ({holding}) than the refused "
        f"{refused} were stopped without a token call by the pause that refusal shared"
    )
    if rewrote is not None:
        text += (
            f"; process {rewrote[1]}, which had made no call, had written that pause again at "
            f"{rewrote[0]:.3f}, without the refresh token it was about, so that it stops every "
            "refresh token of the chain"
        )
    return text


def _caller(result: RestartResult, token: str, at: float) -> tuple[Run | None, float]:
    """The process whose last call presenting `token` before `at` was nearest to it."""
    caller, call_at = None, -math.inf
    for run in _everyone(result):
        for line in _lines(run, "call"):
            when = float(line[0])
            if line[3] == token and call_at < when <= at + 0.001:
                caller, call_at = run, when
    return caller, call_at


def _kept(run: Run, token: str, before: float) -> bool:
    """Whether `run` held `token` as a kept token (the store refused it, or Redis was down)
    before `before`: then a renewal from it is one from the kept token."""
    renewed = {line[3] for line in _lines(run, "answer") if line[2] == "200"}
    return token in renewed and any(
        line[2] == token and float(line[0]) < before
        for line in _lines(run, "refused") + _lines(run, "write-failed")
    )


def _exited_holding(run: Run) -> bool:
    """Whether `run` exited holding a token it renewed and the store refused: its last
    refused write of such a token was never followed by the store taking it or a newer one."""
    renewed = {line[3] for line in _lines(run, "answer") if line[2] == "200"}
    held = -1  # the sequence of the newest token held only here, or -1
    for line in run.journal:
        if line[1] == "refused" and line[2] in renewed:
            held = max(held, int(line[3]))
        elif line[1] == "stored" and int(line[3]) >= held:
            held = -1
    return held >= 0 and bool(_lines(run, "exited"))


def _rotation_windows(runs: list[Run]) -> tuple[list[float], list[float]]:
    """Seconds from each renewal's answer to the first copy of its token (the store's or the
    spare's) in the same process, the moments a SIGKILL loses the token: for renewals from a
    token read under the lock, and for renewals from a token kept in memory."""
    read: list[float] = []
    kept: list[float] = []
    for run in runs:
        call: list[str] | None = None
        for answer in run.journal:
            if answer[1] == "call":
                call = answer
            if answer[1] != "answer" or answer[2] != "200" or call is None:
                continue
            at = float(answer[0])
            copies = [
                float(line[0])
                for line in run.journal
                if line[1] in ("stored", "spared") and line[2] == answer[3] and float(line[0]) >= at
            ]
            if copies:
                from_kept = _kept(run, call[3], float(call[0]) + 1e-6)
                (kept if from_kept else read).append(min(copies) - at)
    return read, kept


def _everyone(result: RestartResult) -> list[Run]:
    """The pass's processes and the fresh one after it."""
    return [*result.runs, *([result.check] if result.check else [])]


def _last_before(result: RestartResult, event: str, at: float) -> str:
    best: tuple[float, str] = (-math.inf, "none")
    for run in _everyone(result):
        for line in _lines(run, event):
            when = float(line[0])
            if best[0] < when <= at:
                best = (when, f"{line[2]} seq {line[3]} by process {run.plan.index}")
    return best[1]


def _log(result: RestartResult, run: Run) -> str:
    return str(result.directory / "logs" / f"{run.plan.index:03d}.log")


def restarts_report(results: list[RestartResult], again: str = "") -> str:
    """The restarts passes' table, notes and unexplained events, in Markdown; `again` names
    the `--report-from` directory when a kept run is reported again."""
    analyses = [analyse_restarts(result) for result in results]
    headers = ["", *(RESTART_STORES[r.store] for r in results)]
    pairs = list(zip(results, analyses, strict=True))

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(r, a) for r, a in pairs)]

    def failed(kind: str) -> Any:
        def cell(_: RestartResult, analysis: RestartAnalysis) -> str:
            causes = analysis.failures.get(kind, [])
            if not causes:
                return "0"
            common = Counter(causes).most_common(3)
            return f"{len(causes)} ({', '.join(f'{c} ×{n}' for c, n in common)})"

        return cell

    def exited(r: RestartResult, _: RestartAnalysis) -> str:
        normal = [
            run for run in r.runs if run.killed_at is None and not run.hung and run.returncode == 0
        ]
        return str(len(normal))

    def killed(r: RestartResult, _: RestartAnalysis) -> str:
        drawn = sum(1 for run in r.runs if run.plan.fate == "kill")
        return f"{sum(1 for run in r.runs if run.killed_at is not None)} (of {drawn} drawn)"

    def refused_exits(r: RestartResult, _: RestartAnalysis) -> str:
        held = [run for run in r.runs if run.killed_at is None and _exited_holding(run)]
        own = sum(1 for run in held if run.plan.fate == "refuse")
        return f"{len(held)} ({own} in their own window)"

    def windows(r: RestartResult, _: RestartAnalysis) -> str:
        opened = [run for run in r.runs if _lines(run, "window")]
        renewed = [
            run
            for run in opened
            if any(
                float(line[0]) >= float(_lines(run, "window")[0][0])
                and line[2] in {answer[3] for answer in _lines(run, "answer")}
                for line in _lines(run, "refused")
            )
        ]
        return f"{len(opened)} ({len(renewed)})"

    def forgot(r: RestartResult, _: RestartAnalysis) -> str:
        return f"{len(r.store_faults)} " + ("restarts" if r.store == "redis" else "deletions")

    def losses(inherent: bool) -> Any:
        return lambda _, a: str(sum(1 for loss in a.losses if loss.inherent is inherent))

    def broken(inherent: bool) -> Any:
        return lambda _, a: str(sum(1 for *_, kind in a.broken if kind is inherent))

    def window(kind: int) -> Any:
        def cell(r: RestartResult, _: RestartAnalysis) -> str:
            windows = sorted(_rotation_windows(r.runs)[kind])
            if not windows:
                return "—"
            median = windows[len(windows) // 2]
            return f"{median * 1000:.1f} / {windows[-1] * 1000:.0f} ms ({len(windows)} renewals)"

        return cell

    def logged(mark: str) -> Any:
        return lambda r, _: str(r.logs.get(mark, 0))

    rows = [
        row("processes started (lanes side by side)", lambda r, _: f"{len(r.runs)} ({r.lanes})"),
        row("exited normally", exited),
        row("SIGKILLed at a random moment", killed),
        row(
            "hung (killed by the runner after 120 s)", lambda r, _: str(sum(x.hung for x in r.runs))
        ),
        row("write-refusal windows (the process renewed inside its own)", windows),
        row("exited holding a renewed token the store had refused", refused_exits),
        row("store forgot everything: Redis restarts / token file deletions", forgot),
        row("requests", lambda _, a: str(a.requests)),
        row("failed, while Redis was down (or up to 2 s after)", failed("outage")),
        row("failed, chain broken by a SIGKILL in the rotation window", failed("broken-inherent")),
        row("failed, chain broken any other way", failed("broken-other")),
        row("failed, any other way", failed("other")),
        row(
            "refresh grants (token calls)",
            lambda r, _: str(r.counters["by_grant"].get("refresh_token", 0)),
        ),
        row(
            "stale refresh tokens presented",
            lambda r, _: str(r.counters["stale"]),
        ),
        row(
            "… after a SIGKILL in the rotation window (inherent)",
            lambda _, a: str(a.stale["inherent"]),
        ),
        row("… any other way", lambda _, a: str(a.stale["other"])),
        row(
            "refresh grants refused (SoakFake.refused_refreshes)",
            lambda r, _: str(r.counters["refused_refreshes"]),
        ),
        row(
            "… after a SIGKILL in the rotation window (inherent)",
            lambda _, a: str(a.refused["inherent"]),
        ),
        row("… any other way", lambda _, a: str(a.refused["other"])),
        row("SIGKILLs in a rotation window (newest refresh token lost: inherent)", losses(True)),
        row("refresh tokens lost any other way (never stored, spared or presented)", losses(False)),
        row("chains broken (refused until mended), by an inherent loss", broken(True)),
        row("chains broken any other way", broken(False)),
        row(
            "chain mended with a new refresh token (the operator's part)",
            lambda r, _: str(len(r.reseeds)),
        ),
        row("chain alive at the end", lambda r, _: r.alive),
        *(row(f"log: {text}", logged(mark)) for mark, text in LOG_MARKS.items()),
        row(
            "rotation window (answer → first copy), median / max: renewals under the lock",
            window(0),
        ),
        row("… renewals from a token kept in memory (the store had refused it)", window(1)),
        row("longest request", lambda _, a: f"{a.longest:.2f} s"),
        row("duration", lambda r, _: f"{r.seconds:.0f} s"),
    ]
    first = results[0]
    command = f"`{first.command}`" + (
        f" (reported again by `--report-from {again}`)" if again else ""
    )
    lines = [
        first.header or header_line(_versions()),
        "",
        f"{command} · seed {first.seed} · {_machine_line()}",
        "",
        f"A technical user (`OAuth2RefreshToken`, the fake rotating its refresh token on every "
        f"use, {TOKEN_LIFETIME:g} s access tokens renewed at half-life) as short-lived "
        f"processes: each sends {REQUESTS[0]}–{REQUESTS[1]} requests "
        f"({RESTART_THINK[0]:g}–{RESTART_THINK[1]:g} s apart; requests, httpx or "
        f"httpx.AsyncClient) and exits. {results[0].lanes} lanes side by side, each starting its "
        f"next process when one ends. {KILL_SHARE:.0%} of the processes are SIGKILLed at a "
        f"random moment; {REFUSE_SHARE:.0%} open a write-refusal window (the store's fenced "
        "writes raise `StoreError`, in every process) when their token is due, renew in it and "
        f"exit; the window closes {REFUSAL_AFTER_EXIT[0]:g}–{REFUSAL_AFTER_EXIT[1]:g} s later. "
        f"Every {STORE_FAULT_GAP[0]:g}–{STORE_FAULT_GAP[1]:g} s the store forgets everything: "
        f"a redis-server without persistence is stopped and started "
        f"({REDIS_DOWN[0]:g}–{REDIS_DOWN[1]:g} s down), or the token file is deleted. One "
        "`RENEWAUTH_STATE_DIR` for all (one machine, one spare copy).",
        "",
        markdown_table(headers, rows),
        "",
        "The inherent loss is told apart by journals: each worker writes a line (os.write, so "
        "a SIGKILL loses no finished line) before each refresh grant and after its answer, and "
        "whenever it read a token or the store or the spare copy took one; the fake journals "
        "each refresh grant it answered. A refresh token the fake issued that nobody presented "
        "afterwards and no store or spare copy ever took is lost; the loss is the inherent one "
        "when the process that received it was SIGKILLed after the rotation. Stale or refused "
        "grants presenting the token before a lost one are that loss's echo. A chain is broken "
        f"when a refused refresh grant has no successful one {CHAIN_BROKEN_AFTER:g} s after "
        "it; the runner then mends it as an operator would (a new refresh token in the store "
        "and the spare copy, the refusal's pause record deleted), and the pass goes on. "
        "Failures with `InvalidGrant` while a chain is broken are its own; other failures "
        f"while Redis is down, or within {OUTAGE_MARGIN:g} s of its return, are the outage's "
        "(a refresh-token chain waits for its store). The rotation window runs from a "
        "renewal's answer to the first copy of its token. Log rows count renewauth's own "
        "messages in the workers' logs.",
    ]
    unexplained = [(r, text) for r, a in pairs for text in a.unexplained]
    if unexplained:
        lines += ["", "Not explained by a SIGKILL in the rotation window:", ""]
        for r, text in unexplained[:20]:
            lines.append(f"- {RESTART_STORES[r.store]}: {text}")
        if len(unexplained) > 20:
            lines.append(f"- … and {len(unexplained) - 20} more")
    return "\n".join(lines)


def _machine_line() -> str:
    from run_all import _machine  # beside this script: the machine line RESULTS.md opens with

    return _machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="the fault passes together (two passes)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fault passes of 20 s, restarts of 40 processes"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--pass",
        dest="passes",
        choices=("all", "faults", "restarts"),
        default="all",
        help="which passes to run (all: the fault passes, then the restarts passes)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help=f"restarts: processes per store ({RESTART_PROCESSES}; 40 with --quick)",
    )
    parser.add_argument("--lanes", type=int, default=LANES, help="restarts: lanes side by side")
    parser.add_argument(
        "--store",
        choices=("both", "redis", "file"),
        default="both",
        help="restarts: which store flavours",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="restarts: keep every worker's journal and log in this new directory",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        help="restarts: run nothing, report the passes kept in this --keep directory again",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one process of the restarts pass
    arguments = parser.parse_args()
    if arguments.worker:
        return restart_worker(json.loads(arguments.worker))
    if arguments.report_from is not None:
        kept = [
            arguments.report_from / f"restarts-{store}" / "pass.json"
            for store in RESTART_STORES
            if (arguments.report_from / f"restarts-{store}" / "pass.json").exists()
        ]
        results = [load_restarts(path.parent) for path in kept]
        print(restarts_report(results, again=str(arguments.report_from)))
        return 0
    sections = []
    if arguments.passes in ("all", "faults"):
        seconds = 20.0 if arguments.quick else max(20.0, arguments.minutes * 60 / 2)
        results = []
        with tempfile.TemporaryDirectory(prefix="renewauth-soak-") as temporary:
            for store in ("redis", "file"):
                directory = Path(temporary) / store
                directory.mkdir(mode=0o700)
                results.append(run_pass(store, seconds, arguments.seed, directory))
        sections.append(
            "## Fault soak: RedisStore and FileStore under a seeded schedule of faults\n\n"
            + report(results, arguments.seed)
        )
    if arguments.passes in ("all", "restarts"):
        count = arguments.processes or (40 if arguments.quick else RESTART_PROCESSES)
        stores = ("redis", "file") if arguments.store == "both" else (arguments.store,)
        restarts = []
        with contextlib.ExitStack() as stack:
            if arguments.keep is not None:
                arguments.keep.mkdir(mode=0o700, parents=True)
                top = arguments.keep
            else:
                top = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="renewauth-")))
            for store in stores:
                directory = top / f"restarts-{store}"
                directory.mkdir(mode=0o700)
                restarts.append(
                    run_restarts(store, count, arguments.lanes, arguments.seed, directory)
                )
        sections.append(
            "## Restarts: a technical user as short-lived processes, killed, refused and "
            "forgotten\n\n" + restarts_report(restarts)
        )
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
