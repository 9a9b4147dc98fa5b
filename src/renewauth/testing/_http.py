"""The loopback HTTP/1.1 server under every fake: threads, keep-alive, chunked bodies.

Lives here: the ``ThreadingHTTPServer`` subclass that tracks open connections so a fake can
close them on stop, and the handler that frames bodies (Content-Length or chunked) and hands a
``Request`` to the fake. Must not live here: routing or state; those belong to the fake.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from renewauth.testing._wire import Reply, Request, json_reply

_MAX_LINE_BYTES = 65536


class _Answerer(Protocol):
    def _answer(self, request: Request) -> Reply: ...

    def _date_header_time(self) -> float: ...


class _MalformedRequestError(Exception):
    """The request body could not be framed; the connection cannot be reused."""


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, fake: _Answerer) -> None:
        self.fake = fake
        # Open connections, so stop() can end keep-alive connections that idle in readline.
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, address = self.socket.accept()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        # A client that hangs up, or stop() closing a connection, is not worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "renewauth-fake/1"
    # Headers and body leave in two writes; with Nagle on, a keep-alive client waits out the
    # peer's delayed ACK (~40 ms) on every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean: no access log on stderr."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, by the fake's clock: clients correct ``exp`` by it."""
        if timestamp is None:
            server = self.server
            assert isinstance(server, Server)
            timestamp = server.fake._date_header_time()
        return super().date_time_string(timestamp)

    def _handle(self) -> None:
        server = self.server
        assert isinstance(server, Server)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body = self._read_body()
        except _MalformedRequestError as exc:
            self.close_connection = True
            reply = json_reply(400, {"error": "invalid_request", "error_description": str(exc)}, {})
        else:
            path, _, query = self.path.partition("?")
            request = Request(
                method=self.command,
                path=path,
                query=query,
                headers=headers,
                body=body,
                host=f"127.0.0.1:{server.server_port}",
            )
            reply = server.fake._answer(request)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    # http.server dispatches on these names; every method gets the same routing.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle  # noqa: N815

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _MalformedRequestError("invalid Content-Length") from None
        if length < 0:
            raise _MalformedRequestError("invalid Content-Length")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _MalformedRequestError("body shorter than Content-Length")
        return body

    def _read_chunked_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(_MAX_LINE_BYTES)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _MalformedRequestError("invalid chunk size") from None
            if size < 0:
                raise _MalformedRequestError("invalid chunk size")
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_MAX_LINE_BYTES).strip():
                raise _MalformedRequestError("truncated chunk")
            chunks.append(chunk)
        while self.rfile.readline(_MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields: read and ignore
        return b"".join(chunks)
