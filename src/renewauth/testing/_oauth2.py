"""A fake OAuth2 provider with a bearer-protected API, served on loopback for tests.

Lives here: the HTTP server, its token endpoint (RFC 6749 §4.3 password, §4.4 client
credentials, §6 refresh), the protected API (RFC 6750) and the controls a test uses to expire,
revoke, rotate, fail and hold. Must not live here: imports from the rest of renewauth or from
requests, httpx or pytest. The fake is the neutral party the library is judged against, so it
shares no code with the library and runs on the standard library alone.

Theory of operation: the handler threads do the socket I/O and call into the provider, which
keeps every piece of state under one lock. The lock is never held while a request sleeps
(``token_delay``) or waits at the hold gate, so a held request never blocks the API or the test.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType

_TOKEN_PATH = "/oauth/token"
_API_PREFIX = "/api/"
_FORM_TYPE = "application/x-www-form-urlencoded"
_JSON_TYPE = "application/json"
_POLL_INTERVAL_SECONDS = 0.02  # how long stop() may wait for serve_forever to notice shutdown
_MAX_LINE_BYTES = 65536
_DEFAULT_CLIENTS: Mapping[str, str | None] = MappingProxyType({"client-id": "client-secret"})
_DEFAULT_USERS: Mapping[str, str] = MappingProxyType({"alice": "alice-password"})

# RFC 6749 §5.2 error codes that an injected failure sends when the test gives no body.
_DEFAULT_FAILURE_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    403: "unauthorized_client",
    429: "slow_down",
    503: "temporarily_unavailable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedTokenRequest:
    """What the fake's token endpoint received in one call, for assertions.

    Read it from ``FakeOAuth2Provider.last_token_request`` to check how a client authenticated
    (body or HTTP Basic) and which parameters it sent.

    Args:
        grant_type: The ``grant_type`` parameter, or None when the client sent none.
        content_type: The request's ``Content-Type`` header, as sent ("" when absent).
        headers: Request headers with lower-case names; repeated headers joined by ", ".
        params: The decoded form or JSON body (empty when it could not be decoded).
    """

    grant_type: str | None
    content_type: str
    headers: Mapping[str, str] = field(repr=False)
    params: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


@dataclass(frozen=True, slots=True, kw_only=True)
class _AccessGrant:
    subject: str
    expires_at: float  # exact issue time + lifetime; the JWT carries a rounded-up copy


@dataclass(frozen=True, slots=True, kw_only=True)
class _RefreshGrant:
    subject: str
    client_id: str
    is_active: bool = True  # False once spent by rotation or revoked


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class _InjectedFailure:
    reply: _Reply
    remaining: int  # -1: until clear_failures()


class _OAuthError(Exception):
    """An RFC 6749 §5.2 error response, raised inside the token endpoint."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.reply = _json_reply(
            status, {"error": error, "error_description": description}, headers or {}
        )


class _MalformedRequestError(Exception):
    """The request body could not be framed; the connection cannot be reused."""


class FakeOAuth2Provider:
    """An OAuth2 authorization server and a bearer-protected API on ``127.0.0.1``.

    Use it to test code that fetches and renews tokens against a real socket: it issues
    unsigned JWT access tokens, checks them on ``api_url``, rotates and revokes refresh tokens,
    fails or delays the token endpoint on command and counts every call. Time comes from
    ``clock``, so a test moves a fake clock past expiry instead of sleeping.

    The socket is bound when the provider is built, so ``base_url`` is known before ``start()``.
    A stopped provider cannot be started again; build a new one.

    Args:
        token_lifetime: Seconds an access token stays valid after it is issued.
        refresh_tokens: Issue refresh tokens with the password grant (and with client
            credentials when ``refresh_on_client_credentials`` is set).
        refresh_on_client_credentials: Also issue a refresh token for client credentials.
        rotate_refresh_tokens: Each refresh returns a new refresh token and spends the old
            one. When False the response carries no ``refresh_token`` (RFC 6749 §6 lets the
            server omit it) and the old one keeps working.
        include_expires_in: Send ``expires_in``; when False only the JWT's ``exp`` tells.
        expires_in_as_string: Send ``expires_in`` as a JSON string, as some servers do.
        token_type: The ``token_type`` value in token responses, such as "bearer".
        clients: Client id to secret; None marks a public client.
        users: Username to password, for the password grant.
        token_delay: Seconds the token endpoint waits before answering; settable later.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        ValueError: If ``token_lifetime`` or ``token_delay`` is negative or not finite.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        refresh_tokens: bool = True,
        refresh_on_client_credentials: bool = False,
        rotate_refresh_tokens: bool = True,
        include_expires_in: bool = True,
        expires_in_as_string: bool = False,
        token_type: str = "Bearer",  # noqa: S107  # a token type, not a secret
        clients: Mapping[str, str | None] = _DEFAULT_CLIENTS,
        users: Mapping[str, str] = _DEFAULT_USERS,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not math.isfinite(token_lifetime) or token_lifetime < 0:
            raise ValueError(f"token_lifetime must be >= 0 seconds, got {token_lifetime!r}")
        self._token_lifetime = float(token_lifetime)
        self._refresh_tokens = refresh_tokens
        self._refresh_on_client_credentials = refresh_on_client_credentials
        self._rotate_refresh_tokens = rotate_refresh_tokens
        self._include_expires_in = include_expires_in
        self._expires_in_as_string = expires_in_as_string
        self._token_type = token_type
        self._clients: dict[str, str | None] = dict(clients)
        self._users: dict[str, str] = dict(users)
        self._clock = clock

        self._lock = threading.Lock()
        # Wakes wait_for_held_token_requests() whenever the number of held requests changes.
        self._held_changed = threading.Condition(self._lock)
        self._token_delay = 0.0
        self.token_delay = token_delay
        self._access_tokens: dict[str, _AccessGrant] = {}
        self._refresh_grants: dict[str, _RefreshGrant] = {}
        self._failures: deque[_InjectedFailure] = deque()
        self._token_gate: threading.Event | None = None
        self._held_token_calls = 0
        self._active_token_calls = 0
        self._last_token_request: RecordedTokenRequest | None = None
        self._token_calls = 0
        self._token_calls_by_grant: dict[str, int] = {}
        self._tokens_issued = 0
        self._stale_refresh_tokens = 0
        self._api_ok = 0
        self._api_unauthorized = 0
        self._api_forbidden = 0
        self._max_concurrent_token_calls = 0

        self._server = _Server(self)
        self._thread: threading.Thread | None = None
        self._is_stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve requests in a daemon thread; returns at once, as the socket already listens.

        Calling it again while running does nothing.

        Raises:
            RuntimeError: If the provider was stopped; build a new one instead.
        """
        with self._lock:
            if self._is_stopped:
                raise RuntimeError("this FakeOAuth2Provider was stopped; build a new one")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                args=(_POLL_INTERVAL_SECONDS,),
                name=f"FakeOAuth2Provider {self.base_url}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving, close open connections and release held token requests.

        Safe to call more than once, and on a provider that was never started.
        """
        with self._lock:
            if self._is_stopped:
                return
            self._is_stopped = True
            thread = self._thread
            gate = self._token_gate
        if gate is not None:
            gate.set()
        if thread is not None:
            self._server.shutdown()
            thread.join()
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> FakeOAuth2Provider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's origin, such as ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def token_url(self) -> str:
        """The token endpoint, ``{base_url}/oauth/token``."""
        return self.base_url + _TOKEN_PATH

    @property
    def api_url(self) -> str:
        """The root of the bearer-protected API, ``{base_url}/api/``."""
        return self.base_url + _API_PREFIX

    # -- counters ----------------------------------------------------------------------------

    @property
    def token_calls(self) -> int:
        """POSTs to the token endpoint, including refused and injected failures."""
        with self._lock:
            return self._token_calls

    @property
    def token_calls_by_grant(self) -> dict[str, int]:
        """A copy of token-endpoint POSTs per ``grant_type``; "" counts calls without one."""
        with self._lock:
            return dict(self._token_calls_by_grant)

    @property
    def tokens_issued(self) -> int:
        """Successful token responses."""
        with self._lock:
            return self._tokens_issued

    @property
    def stale_refresh_tokens(self) -> int:
        """Refresh grants that presented a refresh token already spent or revoked."""
        with self._lock:
            return self._stale_refresh_tokens

    @property
    def api_ok(self) -> int:
        """API responses with status 200."""
        with self._lock:
            return self._api_ok

    @property
    def api_unauthorized(self) -> int:
        """API responses with status 401."""
        with self._lock:
            return self._api_unauthorized

    @property
    def api_forbidden(self) -> int:
        """API responses with status 403."""
        with self._lock:
            return self._api_forbidden

    @property
    def max_concurrent_token_calls(self) -> int:
        """The most token requests ever handled at once; 1 proves a client's single flight."""
        with self._lock:
            return self._max_concurrent_token_calls

    @property
    def last_token_request(self) -> RecordedTokenRequest | None:
        """The most recent token-endpoint call, or None before the first."""
        with self._lock:
            return self._last_token_request

    @property
    def token_delay(self) -> float:
        """Seconds the token endpoint waits before answering; tests may change it any time."""
        with self._lock:
            return self._token_delay

    @token_delay.setter
    def token_delay(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"token_delay must be >= 0 seconds, got {seconds!r}")
        with self._lock:
            self._token_delay = float(seconds)

    def reset_counters(self) -> None:
        """Zero every counter and forget ``last_token_request``; tokens stay valid."""
        with self._lock:
            self._token_calls = 0
            self._token_calls_by_grant.clear()
            self._tokens_issued = 0
            self._stale_refresh_tokens = 0
            self._api_ok = 0
            self._api_unauthorized = 0
            self._api_forbidden = 0
            self._max_concurrent_token_calls = self._active_token_calls
            self._last_token_request = None

    # -- controls ----------------------------------------------------------------------------

    def issue_refresh_token(self, username: str = "alice", client_id: str = "client-id") -> str:
        """Mint a valid refresh token without a token call, to test the refresh grant alone.

        Args:
            username: The subject of the tokens the refresh token will yield.
            client_id: The client that must present it.

        Returns:
            The new refresh token.
        """
        with self._lock:
            return self._mint_refresh_token_locked(username, client_id)

    def revoke_access_tokens(self) -> None:
        """Make the API reject every access token issued so far; refresh tokens stay valid."""
        with self._lock:
            self._access_tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        """Make every refresh token issued so far fail with ``invalid_grant``."""
        with self._lock:
            for token, grant in self._refresh_grants.items():
                self._refresh_grants[token] = replace(grant, is_active=False)

    def fail_token_requests(
        self,
        status: int,
        *,
        times: int = 1,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` token calls with ``status`` instead of a token.

        Failures queue in the order they are added; each applies to the calls that arrive
        while it is at the head of the queue.

        Args:
            status: The HTTP status to answer with, such as 503 or 429.
            times: How many calls fail; -1 fails every call until ``clear_failures()``.
            body: The response body; by default a JSON OAuth error matching ``status``
                (``server_error`` for 5xx, ``slow_down`` for 429, ...).
            headers: Extra response headers, such as ``{"Retry-After": "1"}``.

        Raises:
            ValueError: If ``times`` is 0 or below -1, or ``status`` is not 100-599.
        """
        if times == 0 or times < -1:
            raise ValueError(f"times must be >= 1 or -1 (until clear_failures()), got {times}")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        extra_headers = dict(headers or {})
        if body is None:
            default_error = "server_error" if status >= 500 else "invalid_request"
            error = _DEFAULT_FAILURE_ERRORS.get(status, default_error)
            reply = _json_reply(
                status, {"error": error, "error_description": "injected failure"}, extra_headers
            )
        else:
            if not any(name.lower() == "content-type" for name in extra_headers):
                extra_headers["Content-Type"] = _sniff_content_type(body)
            reply = _Reply(status=status, body=body, headers=extra_headers)
        with self._lock:
            self._failures.append(_InjectedFailure(reply=reply, remaining=times))

    def clear_failures(self) -> None:
        """Drop every queued failure; token calls succeed again."""
        with self._lock:
            self._failures.clear()

    @contextlib.contextmanager
    def hold_token_requests(self) -> Iterator[None]:
        """Hold token requests that arrive inside the block; release them all on exit.

        Together with ``wait_for_held_token_requests`` this keeps a race window open for as
        long as the test needs, without sleeping.

        Yields:
            None.

        Raises:
            RuntimeError: If token requests are already being held.
        """
        gate = threading.Event()
        with self._lock:
            if self._token_gate is not None:
                raise RuntimeError("token requests are already held; exit the other block first")
            self._token_gate = gate
        try:
            yield
        finally:
            with self._lock:
                self._token_gate = None
            gate.set()

    def wait_for_held_token_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` token requests are held by ``hold_token_requests()``.

        Args:
            n: How many held requests to wait for.
            timeout: Seconds to wait at most.

        Returns:
            True once ``n`` requests are held, False if ``timeout`` passed first.
        """
        with self._held_changed:
            return self._held_changed.wait_for(lambda: self._held_token_calls >= n, timeout)

    # -- token endpoint ----------------------------------------------------------------------

    def _answer_token_request(self, headers: Mapping[str, str], body: bytes) -> _Reply:
        content_type = headers.get("content-type", "")
        try:
            params = _parse_token_params(content_type, body)
            parse_error: _OAuthError | None = None
        except _OAuthError as exc:
            params, parse_error = {}, exc
        grant_type = params.get("grant_type")
        recorded = RecordedTokenRequest(
            grant_type=grant_type, content_type=content_type, headers=headers, params=params
        )
        with self._lock:
            self._token_calls += 1
            grant_key = grant_type or ""
            self._token_calls_by_grant[grant_key] = self._token_calls_by_grant.get(grant_key, 0) + 1
            self._last_token_request = recorded
            self._active_token_calls += 1
            self._max_concurrent_token_calls = max(
                self._max_concurrent_token_calls, self._active_token_calls
            )
            # The failure is chosen on arrival, so queued failures meet calls in arrival order
            # even when a hold or a delay lets later calls finish first.
            failure = self._take_failure_locked()
            gate = self._token_gate
            if gate is not None:
                self._held_token_calls += 1
                self._held_changed.notify_all()
        try:
            if gate is not None:
                # The gate was read under the lock, so a release that happens before this
                # wait() has already set it: no lost wake-up.
                gate.wait()
                with self._lock:
                    self._held_token_calls -= 1
                    self._held_changed.notify_all()
            delay_seconds = self.token_delay
            if delay_seconds > 0:
                time.sleep(delay_seconds)
            if failure is not None:
                return failure
            if parse_error is not None:
                return parse_error.reply
            with self._lock:
                try:
                    return self._grant_locked(headers, params)
                except _OAuthError as exc:
                    return exc.reply
        finally:
            # Decremented before the reply is written: a client that sends its next call only
            # after reading this reply must never see the two calls counted as concurrent.
            with self._lock:
                self._active_token_calls -= 1

    def _take_failure_locked(self) -> _Reply | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        if failure.remaining == 1:
            self._failures.popleft()
        elif failure.remaining > 1:
            self._failures[0] = replace(failure, remaining=failure.remaining - 1)
        return failure.reply

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> _Reply:
        client_id, is_confidential = self._authenticate_client_locked(headers, params)
        grant_type = params.get("grant_type")
        scope = params.get("scope")
        if grant_type == "client_credentials":
            if not is_confidential:
                raise _OAuthError(
                    400, "unauthorized_client", "Public client not allowed to use this grant"
                )
            with_refresh = self._refresh_tokens and self._refresh_on_client_credentials
            return self._issue_tokens_locked(client_id, client_id, scope, with_refresh)
        if grant_type == "password":
            username = _require(params, "username")
            password = _require(params, "password")
            expected = self._users.get(username)
            if expected is None or not _equal_secrets(password, expected):
                raise _OAuthError(400, "invalid_grant", "Invalid user credentials")
            return self._issue_tokens_locked(username, client_id, scope, self._refresh_tokens)
        if grant_type == "refresh_token":
            refresh_token = _require(params, "refresh_token")
            grant = self._refresh_grants.get(refresh_token)
            if grant is None or grant.client_id != client_id:
                raise _OAuthError(400, "invalid_grant", "Token is not active")
            if not grant.is_active:
                self._stale_refresh_tokens += 1
                raise _OAuthError(400, "invalid_grant", "Token is not active")
            if self._rotate_refresh_tokens:
                self._refresh_grants[refresh_token] = replace(grant, is_active=False)
            return self._issue_tokens_locked(
                grant.subject, client_id, scope, self._rotate_refresh_tokens
            )
        if grant_type is None:
            raise _OAuthError(400, "unsupported_grant_type", "Missing parameter: grant_type")
        raise _OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def _authenticate_client_locked(
        self, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Return the client id and whether it is confidential (RFC 6749 §2.3.1)."""
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        challenge: dict[str, str] = {}
        client_id: str | None
        secret: str | None
        if scheme.lower() == "basic":
            challenge = {"WWW-Authenticate": "Basic"}
            basic = _decode_basic_credentials(credentials.strip())
            if basic is None or params.get("client_id", basic[0]) != basic[0]:
                raise _invalid_client(challenge)
            client_id, secret = basic
        else:
            client_id, secret = params.get("client_id"), params.get("client_secret")
        if client_id is None or client_id not in self._clients:
            raise _invalid_client(challenge)
        expected = self._clients[client_id]
        if expected is None:
            if secret:
                raise _invalid_client(challenge)
            return client_id, False
        if secret is None or not _equal_secrets(secret, expected):
            raise _invalid_client(challenge)
        return client_id, True

    def _issue_tokens_locked(
        self, subject: str, client_id: str, scope: str | None, with_refresh_token: bool
    ) -> _Reply:
        now = self._clock()
        expires_at = now + self._token_lifetime
        claims: dict[str, object] = {
            "sub": subject,
            "azp": client_id,
            # Rounded up so that no client reading exp thinks the token expires early.
            "exp": math.ceil(expires_at),
            "iat": math.floor(now),
            "jti": secrets.token_urlsafe(12),
        }
        access_token = ".".join(
            (
                _base64url_json({"alg": "none", "typ": "JWT"}),
                _base64url_json(claims),
                secrets.token_urlsafe(32),
            )
        )
        self._access_tokens[access_token] = _AccessGrant(subject=subject, expires_at=expires_at)
        payload: dict[str, object] = {"access_token": access_token, "token_type": self._token_type}
        if self._include_expires_in:
            lifetime = self._token_lifetime
            expires_in: float = int(lifetime) if lifetime.is_integer() else lifetime
            payload["expires_in"] = str(expires_in) if self._expires_in_as_string else expires_in
        if with_refresh_token:
            payload["refresh_token"] = self._mint_refresh_token_locked(subject, client_id)
        if scope is not None:
            payload["scope"] = scope
        self._tokens_issued += 1
        return _json_reply(200, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _mint_refresh_token_locked(self, subject: str, client_id: str) -> str:
        refresh_token = secrets.token_urlsafe(32)
        self._refresh_grants[refresh_token] = _RefreshGrant(subject=subject, client_id=client_id)
        return refresh_token

    # -- protected API -----------------------------------------------------------------------

    def _answer_api_request(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body_length: int
    ) -> _Reply:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        with self._lock:
            grant = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
            is_valid = grant is not None and self._clock() < grant.expires_at
            if path == "/api/always-401" or grant is None or not is_valid:
                self._api_unauthorized += 1
                return _json_reply(
                    401,
                    {"error": "invalid_token"},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            if path == "/api/forbidden":
                self._api_forbidden += 1
                return _json_reply(
                    403,
                    {"error": "insufficient_scope"},
                    {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
                )
            if path == "/api/redirect":
                return _redirect_reply(query)
            self._api_ok += 1
        return _json_reply(
            200,
            {
                "ok": True,
                "method": method,
                "path": path,
                "body_length": body_length,
                "subject": grant.subject,
            },
        )

    def _answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        path, _, query = target.partition("?")
        if path == _TOKEN_PATH:
            if method != "POST":
                return _json_reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
            return self._answer_token_request(headers, body)
        if path.startswith(_API_PREFIX):
            return self._answer_api_request(method, path, query, headers, len(body))
        if path == "/redirect":
            return _redirect_reply(query)
        if path == "/echo-headers":
            return _json_reply(200, dict(headers))
        return _json_reply(404, {"error": "not_found"})


# -- HTTP plumbing -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, provider: FakeOAuth2Provider) -> None:
        self.provider = provider
        # Open connections, so stop() can end keep-alive connections that idle in readline.
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "renewauth-fake/1"
    # Headers and body leave in two writes; with Nagle on, a keep-alive client waits out the
    # peer's delayed ACK (~40 ms) on every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean: no access log on stderr."""

    def _handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body = self._read_body()
        except _MalformedRequestError as exc:
            self.close_connection = True
            reply = _json_reply(
                400, {"error": "invalid_request", "error_description": str(exc)}, {}
            )
        else:
            reply = server.provider._answer(self.command, self.path, headers, body)
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


# -- helpers -------------------------------------------------------------------------------------


def _json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Reply:
    merged = {"Content-Type": _JSON_TYPE, **(headers or {})}
    return _Reply(status=status, body=json.dumps(payload).encode(), headers=merged)


def _redirect_reply(query: str) -> _Reply:
    targets = urllib.parse.parse_qs(query).get("to")
    if not targets:
        return _json_reply(
            400, {"error": "invalid_request", "error_description": "Missing parameter: to"}
        )
    return _Reply(status=307, headers={"Location": targets[0]})


def _invalid_client(challenge: Mapping[str, str]) -> _OAuthError:
    return _OAuthError(
        401, "invalid_client", "Invalid client or Invalid client credentials", challenge
    )


def _require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _OAuthError(400, "invalid_request", f"Missing parameter: {name}")
    return value


def _equal_secrets(presented: str, expected: str) -> bool:
    return secrets.compare_digest(presented.encode(), expected.encode())


def _decode_basic_credentials(credentials: str) -> tuple[str, str] | None:
    """Decode HTTP Basic client credentials, form-decoding each half (RFC 6749 §2.3.1)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        return None
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _parse_token_params(content_type: str, body: bytes) -> dict[str, str]:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == _FORM_TYPE:
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=bool(body)
            )
        except (UnicodeDecodeError, ValueError):
            raise _OAuthError(400, "invalid_request", "Malformed form body") from None
        params = dict(pairs)
        if len(params) != len(pairs):  # RFC 6749 §3.2: parameters must not repeat
            raise _OAuthError(400, "invalid_request", "Repeated parameter")
        return params
    if media_type == _JSON_TYPE:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise _OAuthError(400, "invalid_request", "Malformed JSON body") from None
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise _OAuthError(400, "invalid_request", "JSON body must map names to strings")
        return {str(name): str(value) for name, value in document.items()}
    raise _OAuthError(400, "invalid_request", f"Content-Type must be {_FORM_TYPE} or {_JSON_TYPE}")


def _base64url_json(payload: Mapping[str, object]) -> str:
    encoded = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


def _sniff_content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return "text/plain; charset=utf-8"
    return _JSON_TYPE
