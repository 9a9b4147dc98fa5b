"""The base class every renewauth fake shares: lifecycle, counters, controls, clock.

Lives here: ``_BaseFake`` with start/stop, the common counters, the hold gate, failure
injection, the token delay and the token and API bookkeeping each fake builds on. The sockets
live in ``_http`` and the request/reply values and helpers in ``_wire``. Must not live here: a
vendor's dialect (paths, grants, error bodies), imports from the rest of renewauth or from
requests, httpx or pytest. The fakes are the neutral party the library is judged against, so
they share no code with it and run on the standard library alone.

Theory of operation: the handler threads do the socket I/O and call ``_BaseFake._answer``; the
fake keeps every piece of state under one lock. The lock is never held while a request sleeps
(``token_delay``) or waits at the hold gate, so a held request never blocks the API or the test.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Self

from renewauth.testing._http import Server
from renewauth.testing._wire import (
    AccessGrant,
    BodyError,
    ErrorReply,
    OAuthError,
    RecordedTokenRequest,
    RefreshGrant,
    Reply,
    Request,
    json_reply,
    oauth_failure_reply,
    parse_params,
    redirect_reply,
    sniff_content_type,
    step_up_reply,
    unsigned_jwt,
)

RECENT_TOKEN_REQUESTS = 100  # how many calls `recent_token_requests` keeps

_POLL_INTERVAL_SECONDS = 0.02  # how long stop() may wait for serve_forever to notice shutdown


@dataclass(frozen=True, slots=True, kw_only=True)
class _InjectedFailure:
    reply: Reply
    remaining: int  # -1: until clear_failures()


class _BaseFake:
    """Lifecycle, counters and controls shared by every fake; subclasses add a dialect.

    A subclass implements ``_route`` and the ``token_url`` and ``api_url`` properties, and
    answers token calls through ``_serve_token_call`` and API calls through
    ``_serve_protected_api`` so that counters, holds, delays and failures work the same in
    every fake. Public methods are documented here once for all fakes.
    """

    def __init__(
        self,
        *,
        token_lifetime: float,
        token_delay: float,
        clock: Callable[[], float],
    ) -> None:
        if not math.isfinite(token_lifetime) or token_lifetime < 0:
            raise ValueError(f"token_lifetime must be >= 0 seconds, got {token_lifetime!r}")
        self._token_lifetime = float(token_lifetime)
        self._clock = clock
        self._lock = threading.Lock()
        # Wakes wait_for_held_token_requests() whenever the number of held requests changes.
        self._held_changed = threading.Condition(self._lock)
        self._token_delay = 0.0
        self.token_delay = token_delay
        self._access_tokens: dict[str, AccessGrant] = {}
        self._refresh_grants: dict[str, RefreshGrant] = {}
        self._failures: deque[_InjectedFailure] = deque()
        self._token_gate: threading.Event | None = None
        self._held_token_calls = 0
        self._active_token_calls = 0
        self._last_token_request: RecordedTokenRequest | None = None
        self._recent_token_requests: deque[RecordedTokenRequest] = deque(
            maxlen=RECENT_TOKEN_REQUESTS
        )
        self._token_calls = 0
        self._token_calls_by_grant: dict[str, int] = {}
        self._tokens_issued = 0
        self._stale_refresh_tokens = 0
        self._api_ok = 0
        self._api_unauthorized = 0
        self._api_forbidden = 0
        self._max_concurrent_token_calls = 0
        self._servers: list[Server] = [Server(self)]
        self._threads: list[threading.Thread] = []
        self._is_started = False
        self._is_stopped = False

    # -- hooks for subclasses ----------------------------------------------------------------

    # The Date header follows the injected clock, so a client that corrects a JWT's exp for
    # the server's clock (PROVIDERS.md §0) sees the same time as the fake.
    _date_follows_clock = True

    def _date_header_time(self) -> float:
        return self._clock() if self._date_follows_clock else time.time()

    def _route(self, request: Request) -> Reply | None:
        """Answer the fake's own paths; None lets ``_answer`` try the shared test helpers."""
        raise NotImplementedError

    def _reset_own_counters_locked(self) -> None:
        """Zero the counters a subclass adds; called by ``reset_counters()``."""

    def _failure_reply(self, status: int, headers: dict[str, str]) -> Reply:
        """The body an injected failure sends when the test gives none: an RFC 6749 error."""
        return oauth_failure_reply(status, headers)

    def _add_server(self) -> str:
        """Bind one more server that shares this fake's state; returns its "host:port"."""
        server = Server(self)
        self._servers.append(server)
        return f"127.0.0.1:{server.server_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve requests in daemon threads; returns at once, as the sockets already listen.

        Calling it again while running does nothing.

        Raises:
            RuntimeError: If the fake was stopped; build a new one instead.
        """
        with self._lock:
            if self._is_stopped:
                raise RuntimeError(f"this {type(self).__name__} was stopped; build a new one")
            if self._is_started:
                return
            self._is_started = True
            for server in self._servers:
                thread = threading.Thread(
                    target=server.serve_forever,
                    args=(_POLL_INTERVAL_SECONDS,),
                    name=f"{type(self).__name__} http://127.0.0.1:{server.server_port}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving, close open connections and release held token requests.

        Safe to call more than once, and on a fake that was never started.
        """
        with self._lock:
            if self._is_stopped:
                return
            self._is_stopped = True
            threads = list(self._threads)
            gate = self._token_gate
        if gate is not None:
            gate.set()
        if threads:
            for server in self._servers:
                server.shutdown()
            for thread in threads:
                thread.join()
        for server in self._servers:
            server.close_connections()
            server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's origin, such as ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self._servers[0].server_port}"

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
        """API responses with a 2xx status."""
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
    def recent_token_requests(self) -> tuple[RecordedTokenRequest, ...]:
        """The last 100 token-endpoint calls, oldest first, failed ones included: to compare
        what a client sent when it tried again."""
        with self._lock:
            return tuple(self._recent_token_requests)

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
            self._recent_token_requests.clear()
            self._reset_own_counters_locked()

    # -- controls ----------------------------------------------------------------------------

    def revoke_access_tokens(self) -> None:
        """Make the API reject every access token issued so far; refresh tokens stay valid."""
        with self._lock:
            self._access_tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        """Make every refresh token issued so far fail as revoked."""
        with self._lock:
            for token, grant in self._refresh_grants.items():
                self._refresh_grants[token] = replace(grant, is_active=False, is_revoked=True)

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
            body: The response body; by default an error in the fake's dialect matching
                ``status`` (an OAuth ``server_error`` for 5xx, ``slow_down`` for 429, ...).
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
            reply = self._failure_reply(status, extra_headers)
        else:
            if not any(name.lower() == "content-type" for name in extra_headers):
                extra_headers["Content-Type"] = sniff_content_type(body)
            reply = Reply(status=status, body=body, headers=extra_headers)
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

    # Whether a JSON token request must hold only strings (Shopware's does not).
    _strict_json_params = True

    # The Authorization schemes the protected API takes a token in, lower case.
    _token_schemes: tuple[str, ...] = ("bearer",)

    def _answer_token_request(self, request: Request) -> Reply:
        """Decode the token request's form or JSON body and serve it with `_grant_locked`."""
        try:
            params = parse_params(
                request.headers.get("content-type", ""),
                request.body,
                strict_json=self._strict_json_params,
            )
            parse_error: Reply | None = None
        except BodyError as exc:
            params, parse_error = {}, self._bad_token_request(str(exc))
        return self._serve_token_call(
            request,
            grant_type=params.get("grant_type"),
            params=params,
            answer=lambda: self._grant_locked(request.headers, params),
            parse_error=parse_error,
        )

    def _bad_token_request(self, detail: str) -> Reply:
        """The answer to a token request whose body cannot be decoded, in this dialect."""
        return OAuthError(400, "invalid_request", detail).reply

    def _grant_locked(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        """Answer a decoded token request; called with the lock held."""
        raise NotImplementedError

    def _serve_token_call(
        self,
        request: Request,
        *,
        grant_type: str | None,
        params: Mapping[str, str],
        answer: Callable[[], Reply],
        parse_error: Reply | None = None,
    ) -> Reply:
        """Count, record, hold, delay or fail one token call, then ``answer()`` under the lock.

        ``answer`` raises ``ErrorReply`` to refuse; ``parse_error`` answers a body that could
        not be decoded, after the counting, so that such calls are counted like any other.
        """
        recorded = RecordedTokenRequest(
            grant_type=grant_type,
            content_type=request.headers.get("content-type", ""),
            headers=request.headers,
            params=params,
        )
        with self._lock:
            self._token_calls += 1
            grant_key = grant_type or ""
            self._token_calls_by_grant[grant_key] = self._token_calls_by_grant.get(grant_key, 0) + 1
            self._last_token_request = recorded
            self._recent_token_requests.append(recorded)
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
                return parse_error
            with self._lock:
                try:
                    return answer()
                except ErrorReply as exc:
                    return exc.reply
        finally:
            # Decremented before the reply is written: a client that sends its next call only
            # after reading this reply must never see the two calls counted as concurrent.
            with self._lock:
                self._active_token_calls -= 1

    def _take_failure_locked(self) -> Reply | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        if failure.remaining == 1:
            self._failures.popleft()
        elif failure.remaining > 1:
            self._failures[0] = replace(failure, remaining=failure.remaining - 1)
        return failure.reply

    def _mint_access_token_locked(
        self,
        subject: str,
        *,
        claims: Mapping[str, object] | None = None,
        client_id: str = "",
        host: str = "",
        kind: str = "",
    ) -> str:
        """Store and return an unsigned JWT with ``sub``, ``exp``, ``iat`` and ``jti``."""
        now = self._clock()
        expires_at = now + self._token_lifetime
        payload: dict[str, object] = {
            "sub": subject,
            **(claims or {}),
            # Rounded up so that no client reading exp thinks the token expires early.
            "exp": math.ceil(expires_at),
            "iat": math.floor(now),
            "jti": secrets.token_urlsafe(12),
        }
        access_token = unsigned_jwt(payload)
        self._access_tokens[access_token] = AccessGrant(
            subject=subject, expires_at=expires_at, client_id=client_id, host=host, kind=kind
        )
        self._tokens_issued += 1
        return access_token

    def _mint_refresh_token_locked(self, grant: RefreshGrant, token: str | None = None) -> str:
        refresh_token = token or secrets.token_urlsafe(32)
        self._refresh_grants[refresh_token] = grant
        return refresh_token

    def _spend_refresh_token_locked(self, refresh_token: str) -> None:
        grant = self._refresh_grants.get(refresh_token)
        if grant is not None:
            self._refresh_grants[refresh_token] = replace(grant, is_active=False)

    def _lifetime_number(self) -> float:
        """The token lifetime as JSON sends it: an int when whole, else a float."""
        lifetime = self._token_lifetime
        return int(lifetime) if lifetime.is_integer() else lifetime

    # -- protected API -----------------------------------------------------------------------

    def _serve_protected_api(
        self,
        request: Request,
        prefix: str,
        *,
        unauthorized: Callable[[str], Reply],
        forbidden: Callable[[], Reply],
        same_host: bool = False,
    ) -> Reply:
        """Answer a bearer-protected API call under ``prefix``.

        ``{prefix}always-401`` always answers 401, ``{prefix}forbidden`` 403 with a valid
        token, ``{prefix}insufficient-scope`` 401 with a valid token and a challenge naming
        ``error="insufficient_scope"`` (RFC 6750 §3.1), ``{prefix}step-up`` 401 (403 with
        ``?status=403``) with a valid token and an RFC 9470 step-up challenge
        (``error="insufficient_user_authentication"``, ``acr_values`` and ``max_age`` from
        the query when given), ``{prefix}redirect?to=URL`` 307; any other path echoes the
        request. The reason passed to ``unauthorized`` is "missing",
        "unknown", "expired" or "always".
        """
        with self._lock:
            grant, reason = self._check_bearer_locked(request, same_host=same_host)
            if request.path == prefix + "always-401":
                reason = "always"
            if reason or grant is None:
                self._api_unauthorized += 1
                return unauthorized(reason)
            if request.path == prefix + "forbidden":
                self._api_forbidden += 1
                return forbidden()
            if request.path == prefix + "insufficient-scope":
                self._api_unauthorized += 1
                return json_reply(
                    401,
                    {"error": "insufficient_scope"},
                    {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="admin"'},
                )
            if request.path == prefix + "step-up":
                reply = step_up_reply(request.query)
                if reply.status == 403:
                    self._api_forbidden += 1
                else:
                    self._api_unauthorized += 1
                return reply
            if request.path == prefix + "redirect":
                return redirect_reply(request.query)
            self._api_ok += 1
            self._count_api_ok_locked(request)
        return json_reply(
            200,
            {
                "ok": True,
                "method": request.method,
                "path": request.path,
                "body_length": len(request.body),
                "subject": grant.subject,
            },
        )

    def _count_api_ok_locked(self, request: Request) -> None:
        """Hook for fakes that count successful API calls in more detail."""

    def _check_bearer_locked(
        self, request: Request, *, same_host: bool = False
    ) -> tuple[AccessGrant | None, str]:
        """The grant behind the request's bearer token and "" if it is valid, else a reason.

        The reason is "missing" (no bearer token), "unknown" (never issued, revoked, or issued
        by another server when ``same_host``) or "expired".
        """
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in self._token_schemes or not token:
            return None, "missing"
        grant = self._access_tokens.get(token)
        if grant is None or (same_host and grant.host != request.host):
            return None, "unknown"
        if self._clock() >= grant.expires_at:
            return grant, "expired"
        return grant, ""

    # -- routing -----------------------------------------------------------------------------

    def _answer(self, request: Request) -> Reply:
        reply = self._route(request)
        if reply is not None:
            return reply
        if request.path == "/redirect":
            return redirect_reply(request.query)
        if request.path == "/echo-headers":
            return json_reply(200, dict(request.headers))
        return json_reply(404, {"error": "not_found"})
