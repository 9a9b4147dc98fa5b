"""The `renewauth` command. Only here is logging output configured.

`renewauth demo` shows renewals against the embedded fake provider. `token`, `run` and the
provider set-up steps come with later releases.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="renewauth",
        description="Bearer tokens for requests and httpx, fetched and renewed for you.",
    )
    parser.add_argument("--version", action="version", version=f"renewauth {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show renewauth's DEBUG log (no secrets)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="watch renewals happen against a fake provider on loopback"
    )
    demo.add_argument(
        "--lifetime",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long the fake's access tokens live (default: 2)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.verbose:
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("renewauth").setLevel(logging.DEBUG)
    if arguments.command == "demo":
        if not arguments.lifetime > 0.2:
            parser.error("--lifetime must be more than 0.2 seconds")
        from ._demo import run_demo

        return run_demo(lifetime=arguments.lifetime)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover - `python -m renewauth.cli`
    sys.exit(main())
