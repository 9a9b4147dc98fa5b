"""The browser's side of a login: the URL shown and opened (`webbrowser`), and the loopback
redirect of a native app (RFC 8252 §7.3), one small HTTP server on `127.0.0.1`, on a port
the system chooses, that waits for the browser's one callback.

It answers the browser with a short page and hands the callback's `code` (or its `error`) to
the thread that waits. A callback whose `state` is not the one sent is refused with a 400
page and its code is dropped: it is never handed over, so it is never exchanged. Nothing here
logs a request line (it would hold the code) or knows what a token is.
"""

from __future__ import annotations

import hmac
import http.server
import logging
import os
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

from .answers import clean_text

__all__ = ["Callback", "LoopbackReceiver", "open_in_browser", "print_url"]

logger = logging.getLogger("renewauth.consent")

_PAGE = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>renewauth</title></head>"
    "<body><p>{}</p></body></html>"
)
_DONE = "Signed in. You may close this window and return to the program."
_DENIED = "The sign-in was not completed. You may close this window."
_REFUSED = "This answer does not belong to the sign-in that is waiting, and was refused."


_IDLE = 5.0  # seconds a connection may send nothing, and the server's thread gets to stop


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a connection still open never holds the program at exit

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a browser that went away: nothing to print (and no request line)


@dataclass(frozen=True, slots=True, kw_only=True)
class Callback:
    """What the browser brought back: a code, or the server's `error` and its description."""

    code: str | None = field(default=None, repr=False)
    error: str | None = None
    error_description: str | None = None


class LoopbackReceiver:
    """A one-callback HTTP server on `127.0.0.1:0`, served by a thread of its own.

    Use as a context manager: `redirect_uri` is known once entered, `wait(timeout)` returns the
    first callback with the right `state` (or `None` after `timeout` seconds), and leaving
    stops the server.
    """

    def __init__(self, path: str, state: str) -> None:
        self._path = "/" + path.strip("/")
        self._state = state
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callback: Callback | None = None
        self.refused = 0  # callbacks refused for their state (the tests read it)
        receiver = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            timeout = _IDLE  # a connection that sends nothing is closed, never waited on

            def do_GET(self) -> None:
                receiver._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                return  # a request line holds the code: never written anywhere

            def log_error(self, format: str, *args: object) -> None:
                return  # nor an error's (a request line cut short)

        # A thread per connection: a browser's idle pre-connection (or any local process)
        # holds only its own thread, never the callback's.
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="renewauth-loopback",
            daemon=True,
        )

    @property
    def redirect_uri(self) -> str:
        """`http://127.0.0.1:PORT/PATH`, the port the system gave."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()  # daemon handler threads are not waited for
        self._thread.join(_IDLE)

    def wait(self, timeout: float) -> Callback | None:
        """The callback with the right `state`, or `None` when none came within `timeout`."""
        self._done.wait(timeout)
        return self._callback

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        if parts.path != self._path or self._done.is_set():
            self._page(handler, 404, _REFUSED)
            return
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if not hmac.compare_digest(query.get("state", "").encode(), self._state.encode()):
            with self._lock:
                self.refused += 1
            self._page(handler, 400, _REFUSED)
            return
        code, error = query.get("code"), query.get("error")
        if error is None and not code:
            self._page(handler, 400, _REFUSED)
            return
        description = query.get("error_description")
        with self._lock:  # one callback is handed over, the first with the right state
            if self._done.is_set():
                self._page(handler, 404, _REFUSED)
                return
            self._callback = Callback(
                code=None if error is not None else code,
                error=None if error is None else clean_text(error),
                error_description=None if description is None else clean_text(description),
            )
            self._done.set()  # before the page: a browser gone meanwhile loses nothing
        self._page(handler, 200 if error is None else 400, _DONE if error is None else _DENIED)

    @staticmethod
    def _page(handler: http.server.BaseHTTPRequestHandler, status: int, text: str) -> None:
        body = _PAGE.format(text).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(body)


def print_url(url: str) -> None:
    """Show a person the URL to log in at, on stderr at once."""
    print(
        f"To log in, open this URL in a browser:\n  {url}",
        file=sys.stderr,
        flush=True,
    )


def open_in_browser(url: str) -> None:
    """Open `url` with the program `BROWSER` (or the desktop) names; the URL is printed
    already, so a machine without a browser only logs that none opened. A Linux session
    without a display and without `BROWSER` opens nothing: `webbrowser` would run a text
    browser in this terminal and wait for it, past the login's timeout."""
    headless = not any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless and not os.environ.get("BROWSER"):
        logger.info("no display: open the printed URL in a browser yourself")
        return
    try:
        opened = webbrowser.open(url)
    except (webbrowser.Error, OSError) as exc:
        opened = False
        logger.debug("no browser opened (%s)", type(exc).__name__)
    if not opened:
        logger.info("no browser opened: open the printed URL yourself")
