"""Draw docs/img/token-timeline.png: a token's life, as renewauth lives it.

    python docs/figures/timeline.py           # write the figure
    python docs/figures/timeline.py --check   # exit 1 if the committed figure is not current

The windows come from renewauth's own rule, `Token.renew_at(leeway)`, for three 60 s tokens
with a 15 s leeway (the ratio of the default 30 s leeway to a 120 s token): a cold start in
which three callers make one token call, a 401 after a server-side revocation that is renewed
and resent, and a renewal in the soft window while the other callers keep sending. Token calls
are drawn longer than they are (milliseconds) so that they can be seen.

The figure carries a fingerprint of this script and of the windows it drew in its PNG
metadata; `--check` recomputes it, so CI fails when the script or the rule changed and the
figure was not drawn again (the pixels themselves differ between matplotlib versions).
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys
from typing import TYPE_CHECKING

from renewauth import Token

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HERE = pathlib.Path(__file__).resolve().parent
OUTPUT = HERE.parent / "img" / "token-timeline.png"

LIFETIME = 60.0
LEEWAY = 15.0
CALL = 1.6  # how long a token call is drawn (seconds of the axis; really milliseconds)
END = 96.0

FRESH, SOFT, HARD = "#4caf50", "#ffb300", "#e53935"
REQUEST, REJECTED, CALL_COLOUR, WAIT = "#1e88e5", "#e53935", "#6d4c41", "#9e9e9e"


def _token(sent_at: float) -> Token:
    return Token(access_token="drawn", issued_at=sent_at, expires_at=sent_at + LIFETIME)


def story() -> dict[str, object]:
    """Every interval and event the figure shows, computed from `Token.renew_at`."""
    first = _token(0.0)  # cold start: the one token call is sent at 0
    revoked_at = 24.0
    rejected_at = 27.0  # caller B's request is answered 401: renewed and resent
    second = _token(rejected_at)
    soft_caller_at = second.renew_at(LEEWAY) + 1.5  # the first request in the soft window
    third = _token(soft_caller_at)
    tokens = []
    for name, token, replaced_at in (
        ("token #1", first, rejected_at + CALL),
        ("token #2", second, soft_caller_at + CALL),
        ("token #3", third, END),
    ):
        issued = float(token.issued_at or 0.0)
        renew_at = token.renew_at(LEEWAY)
        expires = float(token.expires_at or 0.0)
        tokens.append(
            {
                "name": name,
                "valid_from": issued + CALL,
                "fresh": (issued + CALL, renew_at),
                "soft": (renew_at, expires),
                "hard": (expires, END),
                "replaced_at": replaced_at,
            }
        )
    requests_a = [CALL, 8, 16, 30, 40, 52, 62, soft_caller_at + 0.6, 86, 93]
    requests_b = [CALL, 11, 20, 34, 46, 56, 66, soft_caller_at + 0.9, 82, 90]
    requests_c = [CALL, 5, 14, 22, 37, 49, 59, 69, 79, 88]
    return {
        "tokens": tokens,
        "revoked_at": revoked_at,
        "rejected_at": rejected_at,
        "soft_caller_at": soft_caller_at,
        "requests": {"caller A": requests_a, "caller B": requests_b, "caller C": requests_c},
        "token_calls": [0.0, rejected_at, soft_caller_at],
        "renew_at_2": second.renew_at(LEEWAY),
    }


def fingerprint(data: dict[str, object]) -> str:
    """What the figure depends on: this script and the windows it computed."""
    digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    digest.update(repr(data).encode())
    return digest.hexdigest()[:16]


def draw(data: dict[str, object], output: pathlib.Path) -> None:
    """Draw the figure to `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = data["tokens"]
    assert isinstance(tokens, list)
    requests = data["requests"]
    assert isinstance(requests, dict)
    lanes = [t["name"] for t in tokens] + list(requests) + ["token endpoint"]
    y = {name: len(lanes) - 1 - i for i, name in enumerate(lanes)}

    figure, axes = plt.subplots(figsize=(11, 4.8), dpi=110)
    height = 0.5
    for token in tokens:
        row = y[token["name"]] - height / 2
        for (start, end), colour in (
            (token["fresh"], FRESH),
            (token["soft"], SOFT),
            (token["hard"], HARD),
        ):
            if end > start:
                axes.broken_barh([(start, end - start)], (row, height), color=colour, alpha=0.85)
        replaced = token["replaced_at"]
        if replaced < END:  # after its successor arrived the token is no longer sent
            axes.broken_barh([(replaced, END - replaced)], (row, height), color="white", alpha=0.75)
            axes.plot([replaced, replaced], [row, row + height], color="black", lw=1)

    # Cold start: no token yet (hard), three callers, one token call, two waiters.
    call_row = y["token endpoint"]
    for start in data["token_calls"]:  # type: ignore[attr-defined]
        axes.broken_barh([(start, CALL)], (call_row - 0.2, 0.4), color=CALL_COLOUR)
    for name in ("caller B", "caller C"):
        axes.plot([0, CALL], [y[name], y[name]], color=WAIT, lw=2, ls=(0, (2, 1)))
    axes.broken_barh([(-1.5, 1.5 + CALL)], (y["caller C"] - 0.3, 2.6), color=HARD, alpha=0.25)

    rejected_at = float(data["rejected_at"])  # type: ignore[arg-type]
    soft_caller_at = float(data["soft_caller_at"])  # type: ignore[arg-type]
    for name, times in requests.items():
        lane = y[name]
        for t in times:
            axes.plot(t, lane, "o", color=REQUEST, ms=5)
    # The 401 and its resend, on caller B.
    axes.plot(rejected_at, y["caller B"], "X", color=REJECTED, ms=10)
    axes.plot([rejected_at, rejected_at + CALL], [y["caller B"]] * 2, color=WAIT, lw=2)
    axes.plot(rejected_at + CALL, y["caller B"], "o", color=REQUEST, ms=7, mec="black")
    # The soft window's one renewal, on caller C.
    axes.plot(soft_caller_at, y["caller C"], "o", color=SOFT, ms=8, mec="black")

    _notes(axes, data, y)

    axes.set_yticks([y[name] for name in lanes], lanes)
    axes.set_xlim(-2, END)
    axes.set_ylim(-0.7, len(lanes) - 0.3)
    axes.set_xlabel(
        f"seconds: {LIFETIME:.0f} s tokens, leeway {LEEWAY:.0f} s (token calls drawn wider)"
    )
    axes.spines[["top", "right", "left"]].set_visible(False)
    axes.tick_params(axis="y", length=0)
    axes.set_title("A token's life: every caller always holds a valid token", loc="left")
    _legend(axes)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, metadata={"Source": fingerprint(data)})
    plt.close(figure)


def _notes(axes: Axes, data: dict[str, object], y: dict[str, int]) -> None:
    rejected_at = float(data["rejected_at"])  # type: ignore[arg-type]
    soft_caller_at = float(data["soft_caller_at"])  # type: ignore[arg-type]

    def note(x: float, lane: str, text: str, dy: float = 0.42, ha: str = "center") -> None:
        axes.annotate(text, (x, y[lane] + dy), ha=ha, va="bottom", fontsize=8.5)

    revoked_at = float(data["revoked_at"])  # type: ignore[arg-type]
    axes.axvline(revoked_at, color=REJECTED, lw=1, ls=":")
    note(revoked_at - 0.6, "token #2", "the server revokes\nevery token", dy=-0.25, ha="right")
    note(
        -1.2, "token #3", "cold start (hard): 3 callers,\n1 token call, 2 wait", dy=-0.3, ha="left"
    )
    note(rejected_at + 0.6, "caller B", "401 → renewed,\nresent once → 200", dy=-0.95, ha="left")
    note(
        soft_caller_at - 0.5,
        "caller C",
        "soft window: C starts the renewal\nin the background; all keep sending",
        dy=-0.95,
        ha="right",
    )
    renew_at_2 = float(data["renew_at_2"])  # type: ignore[arg-type]
    axes.annotate(
        f"renew_at = expiry − leeway ({LEEWAY:.0f} s)",
        xy=(renew_at_2, y["token #2"] - 0.25),
        xytext=(renew_at_2 - 14, y["token #3"] - 0.1),
        ha="center",
        va="center",
        fontsize=8.5,
        arrowprops={"arrowstyle": "->", "lw": 0.8},
    )


def _legend(axes: Axes) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    legend = [
        Patch(color=FRESH, label="fresh: cached, no lock, no I/O"),
        Patch(color=SOFT, label="soft window: renewed in the background"),
        Patch(color=HARD, label="hard: callers wait for the one renewal"),
        Patch(color=CALL_COLOUR, label="token call"),
        Patch(color=FRESH, alpha=0.25, label="pale: replaced, no longer sent"),
        Line2D([], [], marker="o", color=REQUEST, ls="", label="request → 200"),
        Line2D([], [], marker="X", color=REJECTED, ls="", ms=8, label="401"),
        Line2D([], [], color=WAIT, lw=2, ls=(0, (2, 1)), label="waiting"),
    ]
    axes.legend(
        handles=legend,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=4,
        frameon=False,
        fontsize=8.5,
    )


def committed_fingerprint(path: pathlib.Path) -> str | None:
    """The fingerprint stored in a PNG by `draw`, or `None`."""
    if not path.exists():
        return None
    from PIL import Image

    with Image.open(path) as image:
        value = image.info.get("Source")
    return value if isinstance(value, str) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check, do not draw")
    arguments = parser.parse_args()
    data = story()
    if arguments.check:
        if committed_fingerprint(OUTPUT) != fingerprint(data):
            print(
                f"{OUTPUT.relative_to(HERE.parent.parent)} is not what "
                "docs/figures/timeline.py draws: run it and commit the figure",
                file=sys.stderr,
            )
            return 1
        print(f"{OUTPUT.name} is current")
        return 0
    draw(data, OUTPUT)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
