"""Soak: many processes, threads and tasks sharing one credential under a random rain of faults.

Run ``python benchmarks/bench_soak.py`` (3 minutes: two passes of 90 s) or ``--quick`` (two
passes of 20 s); ``--seed N`` draws another schedule; ``--minutes M`` sets the whole run. It
stops by itself. Each pass runs 6 processes × 8 threads (requests and httpx) plus one asyncio
process with 50 tasks (httpx.AsyncClient), all with one `OAuth2Password` credential, against
the loopback fake with 2 s tokens and rotating refresh tokens. The first pass shares a
`RedisStore` on a real `redis-server` (append-only file, so a restart keeps its keys), the
second a `FileStore`. Faults follow `FAULTS` below, drawn with a seeded random generator.

It prints Markdown tables: what every pass sent and what failed (each failure with its cause,
and whether a fault window explains it), stale refresh tokens presented to the server,
refresh-token chains broken (a refresh grant refused), token calls per token lifetime and
the longest request stall. Nothing here asserts a number; `RESULTS.md` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
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
        """Counts refused refresh grants: every one is a broken refresh-token chain."""

        refused_refreshes = 0

        def _grant_locked(self, headers: Any, params: Any) -> Any:
            try:
                return super()._grant_locked(headers, params)
            except OAuthError:
                if params.get("grant_type") == "refresh_token":
                    self.refused_refreshes += 1
                raise

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
def _redis(directory: Path) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    server = RedisServer(directory)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="the whole run (two passes)")
    parser.add_argument("--quick", action="store_true", help="two passes of 20 s")
    parser.add_argument("--seed", type=int, default=11)
    arguments = parser.parse_args()
    seconds = 20.0 if arguments.quick else max(20.0, arguments.minutes * 60 / 2)
    results = []
    with tempfile.TemporaryDirectory(prefix="renewauth-soak-") as temporary:
        for store in ("redis", "file"):
            directory = Path(temporary) / store
            directory.mkdir(mode=0o700)
            results.append(run_pass(store, seconds, arguments.seed, directory))
    print("## Fault soak: RedisStore and FileStore under a seeded schedule of faults")
    print()
    print(report(results, arguments.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
