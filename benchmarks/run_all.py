"""Run every benchmark and write their tables to benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # full runs, ~28 minutes on 2 cores (3: the soak)
    python benchmarks/run_all.py --quick    # short runs, noisier

Each benchmark runs in its own process, one after the other, so they never share the CPU.
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
    ("Cost per request in instructions (callgrind) and time", "bench_cost.py"),
    ("Stores: many processes sharing a FileStore or RedisStore", "bench_stores.py"),
    ("Soak: faults of the store, the lease, the network and the token endpoint", "bench_soak.py"),
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
    arguments = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
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
    status = 0
    for title, script in BENCHMARKS:
        print(f"running {script} …", flush=True)
        command = [sys.executable, str(HERE / script), *(["--quick"] if arguments.quick else [])]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        sections += [f"## {title}", "", f"`{script}`", ""]
        if result.returncode != 0:
            status = 1
            sections += ["```", result.stderr.strip()[-2000:], "```", ""]
            continue
        body = result.stdout.strip().replace("\n## ", "\n### ")
        sections += [body, ""]
    (HERE / "RESULTS.md").write_text("\n".join(sections))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
