"""One token call: a grant's flow sent to the token endpoint, with its retry policy.

Sans-IO, in the shape of httpx's `Auth.auth_flow`: `TokenEndpoint.call` is a generator that
yields `Send` (a request to send) and `Sleep` (the wait before a retry) and receives what they
give; `_effects.drive` and `adrive` carry them out, for a thread and for a task. So the retry
policy (which answers are retried, how long to wait, when to give up, what the error says) is
written once. The clock and the jitter are injected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from ._effects import HttpReply, Send, Sleep, Steps
from ._retry import backoff_delay, is_retryable_status, retry_after_seconds
from .errors import TokenEndpointUnavailable
from .flows import Flow, Grant, RetryHint, TokenRequest, TokenResponse
from .token import Token

__all__ = ["TokenEndpoint"]

logger = logging.getLogger("renewauth.manager")


class TokenEndpoint:
    """The token endpoint as one grant's renewals see it: tries, waits, and errors.

    Args:
        grant: the flow to run, and (`RetryHint`) how its provider states a wait in a body.
        retries: extra tries of a token request on network errors, 5xx and 429.
        timeout: seconds for each token request.
        clock: seconds since the epoch.
        uniform: the jitter of the waits between tries.
    """

    __slots__ = ("clock", "grant", "grant_used", "retries", "timeout", "uniform")

    def __init__(
        self,
        grant: Grant,
        *,
        retries: int,
        timeout: float,
        clock: Callable[[], float],
        uniform: Callable[[float, float], float],
    ) -> None:
        self.grant = grant
        self.retries = retries
        self.timeout = timeout
        self.clock = clock
        self.uniform = uniform
        self.grant_used: str | None = None  # the grant of the last token request sent

    def call(self, flow: Flow) -> Steps[Token]:
        """Run `flow` (a grant's requests, one after another) to its token."""
        try:
            request = next(flow)
            while True:
                response = yield from self.exchange(request)
                request = flow.send(response)
        except StopIteration as done:
            return cast(Token, done.value)
        finally:
            flow.close()

    def exchange(self, request: TokenRequest) -> Steps[TokenResponse]:
        """Send `request` until an answer that is not retried, or no try is left."""
        attempt = 0
        while True:
            sent_at = self.clock()
            try:
                reply = yield Send(request, self.timeout)
            except TokenEndpointUnavailable as exc:
                failure, retry_after = exc, None
            else:
                response = self._response(request, cast(HttpReply, reply), sent_at)
                if not request.retryable or not is_retryable_status(response.status):
                    return response
                failure, retry_after = self._unavailable(response)
            yield Sleep(self._next_delay(request, attempt, failure, retry_after))
            request = request.retry()
            attempt += 1

    def _response(self, request: TokenRequest, reply: HttpReply, sent_at: float) -> TokenResponse:
        self.grant_used = request.grant
        return reply.answer(request, sent_at, self.clock())

    def _unavailable(
        self, response: TokenResponse
    ) -> tuple[TokenEndpointUnavailable, float | None]:
        retry_after = retry_after_seconds(response.headers, self.clock())
        if retry_after is None and isinstance(self.grant, RetryHint):
            # A provider may say it in the body (Shopware: "Auth throttled for 30 seconds.").
            retry_after = self.grant.retry_after(response)
        failure = TokenEndpointUnavailable(
            f"token endpoint {response.origin} is unavailable (HTTP {response.status}) after "
            f"{self.retries + 1} tries; it may be overloaded or down: try again later, or "
            "raise retries=",
            status=response.status,
            origin=response.origin,
            retry_after=retry_after,
        )
        return failure, retry_after

    def _next_delay(
        self,
        request: TokenRequest,
        attempt: int,
        failure: TokenEndpointUnavailable,
        retry_after: float | None,
    ) -> float:
        """The wait before the next try, or raise `failure` when no try is left."""
        delay = backoff_delay(attempt, retry_after, self.uniform)
        if attempt >= self.retries or delay is None:
            raise failure
        logger.debug(
            "token request to %s failed (%s); try %d of %d in %.2f s",
            request.origin,
            failure.status or "network error",
            attempt + 2,
            self.retries + 1,
            delay,
        )
        return delay
