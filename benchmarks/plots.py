"""The benchmark plots, drawn from the tables in benchmarks/RESULTS.md and nothing else.

`run_all.py` calls `draw_all()` after writing RESULTS.md, and `run_all.py --plots-only`
draws them again from the RESULTS.md that is there; no number is typed in here. Each PNG
carries a fingerprint of the figures it shows and of this file (PNG metadata), so
`run_all.py --plots-only --check` fails when RESULTS.md changed and the plots were not drawn
again. The plots are found by the tables' titles and first-column labels, and a table that is
missing is an error naming it: a change to a benchmark's output must come with this file's.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = pathlib.Path(__file__).resolve().parent
IMAGES = HERE.parent / "docs" / "img"
LIBRARIES = ("renewauth", "Authlib", "httpx-auth")
COLOURS = {"renewauth": "#2e7d32", "Authlib": "#1565c0", "httpx-auth": "#ef6c00"}
CLIENTS = ("requests", "httpx", "httpx async")


class ResultsError(Exception):
    """RESULTS.md lacks a table or a row that a plot shows."""


@dataclass(frozen=True)
class Table:
    """One Markdown table of RESULTS.md, with the headings it sits under."""

    section: str  # the "## " heading
    subsection: str  # the "### " heading, or ""
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def row(self, label: str) -> dict[str, str]:
        """The row whose first cell starts with `label`, keyed by the header's cells."""
        for row in self.rows:
            if row[0].startswith(label):
                return dict(zip(self.header, row, strict=False))
        raise ResultsError(f"RESULTS.md: table {self.header[0]!r} has no row {label!r}")


def parse_tables(text: str) -> list[Table]:
    """Every table of a Markdown document, in order."""
    tables: list[Table] = []
    section = subsection = ""
    block: list[tuple[str, ...]] = []

    def close() -> None:
        if len(block) >= 2:
            tables.append(Table(section, subsection, block[0], tuple(block[2:])))
        block.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            block.append(tuple(cell.strip() for cell in line.strip().strip("|").split("|")))
            continue
        close()
        if line.startswith("## "):
            section, subsection = line[3:].strip(), ""
        elif line.startswith("### "):
            subsection = line[4:].strip()
    close()
    return tables


def _find(tables: Sequence[Table], section: str, subsection: str, first: str) -> Table:
    for table in tables:
        if (
            table.section.startswith(section)
            and table.subsection.startswith(subsection)
            and table.header[0] == first
        ):
            return table
    raise ResultsError(
        f"RESULTS.md has no table {first!r} under '## {section}…' / '### {subsection}…'"
    )


def number(cell: str) -> float | None:
    """The figure a cell leads with ("1.07 (6 in 5.6 s)" → 1.07); `None` for n/a, —, errors."""
    match = re.match(r"\s*(-?[\d,]+(?:\.\d+)?)", cell)
    if match is None:
        return None
    return float(match.group(1).replace(",", ""))


def ratio(cell: str) -> float | None:
    """The ratio in a cost cell ("101.2 µs (1.02×)" → 1.02); `None` when there is none."""
    match = re.search(r"\(([\d.]+)×\)", cell)
    return float(match.group(1)) if match else None


# --- the figures each plot shows, pulled from the tables ----------------------------------


def token_call_figures(tables: Sequence[Table]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{metric: {client: {library: value}}} for the single-flight plot."""
    metrics = {
        "cold start: token calls": "cold start: token calls",
        "token calls per token lifetime": "steady: token calls per lifetime",
        "failed requests (steady)": "steady: failed requests",
    }
    figures: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name in metrics}
    for client in CLIENTS:
        subsection = "(c)" if client == "httpx async" else "(b)"
        table = _find(tables, "Core", subsection, client)
        for name, label in metrics.items():
            row = table.row(label)
            figures[name][client] = {library: number(row.get(library, "")) for library in LIBRARIES}
    return figures


def cost_figures(tables: Sequence[Table]) -> dict[str, dict[str, float | None]]:
    """{client: {library: ratio to a static header}} for the cost plot, in instructions
    (callgrind repeats to 0.1 %, where time swings by tens of percent on a shared machine)."""
    table = _find(tables, "Cost per request in instructions", "(a)", "client")
    return {
        client: {library: ratio(table.row(client).get(library, "")) for library in LIBRARIES}
        for client in CLIENTS
    }


def store_figures(tables: Sequence[Table]) -> dict[str, dict[str, float | None]]:
    """{metric: {store column: value}} for the stores plot."""
    table = _find(tables, "Stores", "(a)", "6 processes × 8 threads")
    columns = table.header[1:]
    labels = {
        "cold start: token calls": "cold start: token calls",
        "token calls per token lifetime": "steady: token calls per lifetime",
        "stale refresh tokens presented": "stale refresh tokens presented",
    }
    return {
        name: {column: number(table.row(label)[column]) for column in columns}
        for name, label in labels.items()
    }


# --- drawing -------------------------------------------------------------------------------


def _bars(
    axes: Axes,
    groups: dict[str, dict[str, float | None]],
    *,
    log: bool = False,
    label_format: str = "{:g}",
    legend: bool = False,
) -> None:
    """Grouped bars: one group per key of `groups`, one bar per library; n/a is written."""
    width = 0.8 / len(LIBRARIES)
    for g, values in enumerate(groups.values()):
        for i, library in enumerate(LIBRARIES):
            x = g + (i - (len(LIBRARIES) - 1) / 2) * width
            value = values.get(library)
            if value is None:  # written at the foot of the axes, whatever its scale
                axes.text(
                    x,
                    0.01,
                    "n/a",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    transform=axes.get_xaxis_transform(),
                )
                continue
            shown = max(value, 0.5) if log else value  # a zero still shows on a log axis
            axes.bar(x, shown, width * 0.95, color=COLOURS[library])
            axes.text(x, shown, label_format.format(value), ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(groups)), list(groups))
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(color=COLOURS[library], label=library) for library in LIBRARIES]
        axes.legend(handles=handles, frameon=False, fontsize=8, loc="upper left")
    if log:
        axes.set_yscale("log")
    axes.spines[["top", "right"]].set_visible(False)


def _save(figure: Figure, name: str, fingerprint: str) -> pathlib.Path:
    path = IMAGES / name
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, metadata={"Source": fingerprint})
    return path


def _fingerprint(figures: object) -> str:
    digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    digest.update(repr(figures).encode())
    return digest.hexdigest()[:16]


def _draw_token_calls(tables: Sequence[Table], subtitle: str) -> tuple[str, Callable[[], None]]:
    figures = token_call_figures(tables)
    fingerprint = _fingerprint((figures, subtitle))

    def draw() -> None:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 3, figsize=(12, 3.9), dpi=100)
        last = list(figures)[-1]
        for panel, (name, groups) in zip(axes, figures.items(), strict=True):
            _bars(panel, groups, log=name != "failed requests (steady)", legend=name == last)
            panel.set_title(name, fontsize=10)
        figure.suptitle(
            "32 threads (requests, httpx) or 200 asyncio tasks (httpx async) share one client,"
            " 1 s tokens: fewer token calls is better, 1 per lifetime is ideal",
            fontsize=9.5,
        )
        figure.text(0.5, 0.005, subtitle, ha="center", fontsize=7.5, color="#555555")
        _save(figure, "bench-token-calls.png", fingerprint)
        plt.close(figure)

    return fingerprint, draw


def _draw_cost(tables: Sequence[Table], subtitle: str) -> tuple[str, Callable[[], None]]:
    figures = cost_figures(tables)
    fingerprint = _fingerprint((figures, subtitle))

    def draw() -> None:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7.5, 3.6), dpi=100)
        _bars(axes, figures, label_format="{:.2f}×", legend=True)
        axes.axhline(1.0, color="black", lw=0.8)
        axes.axhline(1.03, color="#888888", lw=0.8, ls="--")
        axes.text(-0.45, 1.04, "target ≤ 1.03×", ha="left", va="bottom", fontsize=7.5)
        axes.set_ylabel("instructions per request ÷ a static header")
        axes.set_ylim(0, max(2.0, *(v or 0 for g in figures.values() for v in g.values())) * 1.1)
        axes.set_title("Cost per request with a cached token (1.00 = a static header)", fontsize=10)
        figure.text(0.5, 0.005, subtitle, ha="center", fontsize=7.5, color="#555555")
        _save(figure, "bench-cost-per-request.png", fingerprint)
        plt.close(figure)

    return fingerprint, draw


def _draw_stores(tables: Sequence[Table], subtitle: str) -> tuple[str, Callable[[], None]]:
    figures = store_figures(tables)
    fingerprint = _fingerprint((figures, subtitle))

    def draw() -> None:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
        colours = ["#9e9e9e", "#2e7d32", "#66bb6a"]
        for panel, name in zip(axes, list(figures)[:2], strict=True):
            values = figures[name]
            shown = [values[column] or 0 for column in values]
            labels = [column.replace(", ", ",\n") for column in values]
            panel.bar(range(len(values)), shown, color=colours[: len(values)])
            for x, value in enumerate(shown):
                panel.text(x, value, f"{value:g}", ha="center", va="bottom", fontsize=8)
            panel.set_xticks(range(len(values)), labels, fontsize=8)
            panel.set_title(name, fontsize=10)
            panel.spines[["top", "right"]].set_visible(False)
        stale = figures["stale refresh tokens presented"]
        figure.suptitle(
            "6 processes × 8 threads, 1 s rotating tokens; stale refresh tokens presented: "
            + ", ".join(f"{value:g}" for value in stale.values() if value is not None),
            fontsize=9.5,
        )
        figure.text(0.5, 0.005, subtitle, ha="center", fontsize=7.5, color="#555555")
        _save(figure, "bench-stores.png", fingerprint)
        plt.close(figure)

    return fingerprint, draw


PLOTS = {
    "bench-token-calls.png": _draw_token_calls,
    "bench-cost-per-request.png": _draw_cost,
    "bench-stores.png": _draw_stores,
}


def _subtitle(text: str) -> str:
    """Where the figures come from: the run's line of RESULTS.md ("Written by … on …")."""
    for line in text.splitlines():
        if line.startswith("Written by"):
            return "benchmarks/RESULTS.md: " + line.replace("`", "").rstrip(".")
    return "benchmarks/RESULTS.md"


def plan(results: pathlib.Path) -> dict[str, tuple[str, Callable[[], None]]]:
    """For each plot, its fingerprint and how to draw it, from the RESULTS.md at `results`."""
    text = results.read_text()
    tables = parse_tables(text)
    return {name: make(tables, _subtitle(text)) for name, make in PLOTS.items()}


def draw_all(results: pathlib.Path) -> list[pathlib.Path]:
    """Draw every plot from `results`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    drawn = []
    for name, (_, draw) in plan(results).items():
        draw()
        drawn.append(IMAGES / name)
    return drawn


def stale_plots(results: pathlib.Path) -> list[str]:
    """The plots whose committed PNG does not show the figures of `results`."""
    from PIL import Image

    stale = []
    for name, (fingerprint, _) in plan(results).items():
        path = IMAGES / name
        if not path.exists():
            stale.append(name)
            continue
        with Image.open(path) as image:
            if image.info.get("Source") != fingerprint:
                stale.append(name)
    return stale
