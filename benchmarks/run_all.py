"""Run every benchmark, write their tables to benchmarks/RESULTS.md and draw the plots.

    python benchmarks/run_all.py                       # full runs, ~43 minutes (7: the soak)
    python benchmarks/run_all.py --quick               # short runs, noisier
    python benchmarks/run_all.py --only bench_clients.py  # one benchmark's section again
    python benchmarks/run_all.py --plots-only          # draw the plots from RESULTS.md again
    python benchmarks/run_all.py --plots-only --check  # fail if the plots do not show it

Each benchmark runs in its own process, one after the other, so they never share the CPU.
The plots (docs/img/bench-*.png, see plots.py) are drawn from RESULTS.md alone, after it is
written, so they always show the tables beside them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys

HERE = pathlib.Path(__file__).parent
BENCHMARKS = [
    ("Core: cost per request, single flight, event loop", "bench_core.py"),
    ("Arrival: saturated connection pools, 1 s tokens", "bench_arrival.py"),
    ("Two clients, one auth object: the idle one beside a saturated one", "bench_two_clients.py"),
    ("httpx2 and aiohttp: renewauth beside their peers and a static header", "bench_clients.py"),
    ("Cost per request in instructions (callgrind) and time", "bench_cost.py"),
    ("Stores: many processes sharing a FileStore or RedisStore", "bench_stores.py"),
    (
        "Slow token endpoint and stalled Redis: does a request wait for a renewal?",
        "bench_slow_endpoint.py",
    ),
    ("Fleet: processes and managers sharing one credential in Redis", "bench_fleet.py"),
    (
        "Soak: faults of the store, the lease, the network and the token endpoint",
        "bench_soak.py --pass faults",
    ),
    (
        "Soak: restarts, a technical user as short-lived processes",
        "bench_soak.py --pass restarts",
    ),
    ("DPoP: what a proof adds to each request", "bench_dpop.py"),
]


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} CPUs{memory}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument(
        "--plots-only", action="store_true", help="run nothing: draw the plots from RESULTS.md"
    )
    parser.add_argument(
        "--check", action="store_true", help="with --plots-only: check the plots, draw nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCRIPT",
        choices=[script for _, script in BENCHMARKS],
        help="run this benchmark alone (repeatable) and replace its section in RESULTS.md",
    )
    arguments = parser.parse_args()
    if arguments.plots_only:
        return _plots(check=arguments.check)
    if arguments.check:
        parser.error("--check goes with --plots-only")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if arguments.only:
        return _only(arguments.only, quick=arguments.quick, now=now)
    header = [
        "# Benchmark results",
        "",
        f"Written by `python benchmarks/run_all.py{' --quick' if arguments.quick else ''}` on "
        f"{now}.",
        "",
        f"- Machine: {_machine()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        "- Each section's first line gives the library versions it measured.",
        "- Figures from a shared machine: read ratios and counts, not absolute times.",
        "",
    ]
    status, sections = 0, []
    for title, script in BENCHMARKS:
        ok, section = _section(title, script, quick=arguments.quick)
        status |= 0 if ok else 1
        sections.append(section)
    return _write(header, sections, status)


def _section(title: str, script: str, *, quick: bool) -> tuple[bool, str]:
    """Run one benchmark in a process of its own: whether it succeeded, and its section."""
    print(f"running {script} …", flush=True)
    name, *options = script.split()
    command = [sys.executable, str(HERE / name), *options]
    command += ["--quick"] if quick else []
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [f"## {title}", "", f"`{script}`", ""]
    if result.returncode != 0:
        return False, "\n".join([*lines, "```", result.stderr.strip()[-2000:], "```", ""])
    body = ("\n" + result.stdout.strip()).replace("\n## ", "\n### ").lstrip("\n")
    return True, "\n".join([*lines, body, ""])


def _write(header: list[str], sections: list[str], status: int) -> int:
    (HERE / "RESULTS.md").write_text("\n".join([*header, *sections]))
    print(f"wrote {HERE / 'RESULTS.md'}")
    if status == 0:
        status = _plots(check=False)
    return status


def _only(scripts: list[str], *, quick: bool, now: str) -> int:
    """Run `scripts` alone and put their sections in RESULTS.md in place of the old ones (or
    where BENCHMARKS puts them), the others kept as they were; the header says so."""
    text = (HERE / "RESULTS.md").read_text()
    head, *parts = text.split("\n## ")
    old = {part.split("\n", 1)[0]: "## " + part for part in parts}
    header = head.rstrip("\n").split("\n")
    status, sections = 0, []
    for title, script in BENCHMARKS:
        if script in scripts:
            ok, section = _section(title, script, quick=quick)
            status |= 0 if ok else 1
            flags = "--only --quick" if quick else "--only"
            note = f"- `{script}` run alone (`{flags}`) on {now}."
            header = [line for line in header if not line.startswith(f"- `{script}` run alone")]
            header.append(note)
            sections.append(section)
        elif title in old:
            sections.append(old[title].rstrip("\n") + "\n")
    return _write([*header, ""], sections, status)


def _plots(*, check: bool) -> int:
    """Draw the plots from RESULTS.md, or with `check` say which ones do not show it."""
    import plots  # beside this script; needs matplotlib (the bench extra)

    results = HERE / "RESULTS.md"
    try:
        if check:
            stale = plots.stale_plots(results)
            for name in stale:
                print(
                    f"docs/img/{name} does not show benchmarks/RESULTS.md: run "
                    "python benchmarks/run_all.py --plots-only and commit it",
                    file=sys.stderr,
                )
            if not stale:
                print("the benchmark plots show benchmarks/RESULTS.md")
            return 1 if stale else 0
        for path in plots.draw_all(results):
            print(f"wrote {path}")
    except plots.ResultsError as error:
        print(f"{error}: update benchmarks/plots.py with the benchmark", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
