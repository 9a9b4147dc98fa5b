"""aiohttp: signing as a client middleware (aiohttp >= 3.12), `ClientSession(middlewares=(auth,))`.

aiohttp itself is never imported here: the middleware only uses what the request and the
handler aiohttp hands it offer, so renewauth does not need aiohttp installed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, ClassVar

from ..dpop import DpopKey
from ..manager import TokenManager

__all__ = ["AiohttpSigning"]


class AiohttpSigning:
    """The aiohttp middleware side of every renewauth auth object."""

    _manager: TokenManager
    _retry_statuses: Collection[int]
    _api_headers: Mapping[str, str]
    _home_origin: str | None
    _dpop: DpopKey | None = None
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset()

    def _middleware(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Awaitable[Any]:
        """The coroutine of one request through this middleware (aiohttp awaits it)."""
        raise NotImplementedError
