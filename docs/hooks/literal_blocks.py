"""MkDocs hook: docstrings end a sentence with `::` before a code block (reStructuredText's
literal-block marker, which the code keeps for readers of `help()`); on the site the code
block already shows it, so the paragraph ends with a single colon."""

from __future__ import annotations

import re
from typing import Any

_MARKER = re.compile(r"(\S)::</p>")


def on_page_content(html: str, **_: Any) -> str:
    """The page's HTML with every paragraph-ending `::` made `:`."""
    return _MARKER.sub(r"\1:</p>", html)
