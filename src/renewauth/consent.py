"""Credentials that start with a person's consent, then live as a refresh-token chain.

`OAuth2AuthorizationCode`: the authorization code flow of a native app (RFC 8252) with PKCE
(S256), a random `state` and a loopback redirect served here for the one callback.
`OAuth2DeviceCode`: the device flow (RFC 8628) for a machine without a browser.

`login()` runs the consent once; its first token is stored under the store's lock by the
usual renewal path, and from then on the credential renews with its refresh token exactly as
`OAuth2RefreshToken` does (rotated tokens written before use, a durable store by default).
Used before any login, a request raises `LoginRequired` and no token call is made. Nothing
secret (code, verifier, device code, tokens) is printed, logged or shown in a `repr`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, Unpack
from urllib.parse import parse_qsl, urlencode

from ._arguments import client_for, header_table, require_text, scope_text
from ._consent import (
    DEVICE_CODE,
    ConsentGrant,
    DeviceAuthorization,
    LoginOutcome,
    authorization_url,
    new_state,
    new_verifier,
    parse_device_authorization,
    poll_outcome,
)
from ._loopback import LoopbackReceiver, open_in_browser, print_url
from ._urls import origin_of, require_secure_url
from .answers import parse_token_response
from .auth import AuthOptions, TokenAuth
from .discovery import DiscoveredGrant, ServerMetadata, discover
from .errors import (
    AccessDenied,
    ConfigurationError,
    ConsentError,
    ConsentExpired,
    TokenEndpointUnavailable,
)
from .flows import Flow, Grant, TokenRequest, TokenResponse
from .oauth2 import Client, ClientAuth
from .token import Token

__all__ = ["DevicePrompt", "OAuth2AuthorizationCode", "OAuth2DeviceCode"]

logger = logging.getLogger(__name__)

_PATH = re.compile(r"/?[A-Za-z0-9._~!$&'()*+,;=:@/-]*")  # RFC 3986 path characters
_TURNS = 5  # renewals a login waits through for its own before it gives up
_LOGIN_HOW = (
    "run `renewauth login --config FILE NAME` for its configuration entry, or call .login() "
    "on this object in Python"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePrompt:
    """What a person needs for the device flow: meant to be shown, holds no secret.

    Attributes:
        verification_uri: where to go.
        user_code: what to enter there.
        verification_uri_complete: a URL with the code in it, when the server gives one.
        expires_in: seconds the code stays valid.
    """

    verification_uri: str
    user_code: str
    verification_uri_complete: str | None
    expires_in: float


def _print_device(prompt: DevicePrompt) -> None:
    lines = [f"To log in, visit {prompt.verification_uri} and enter the code {prompt.user_code}"]
    if prompt.verification_uri_complete:
        lines.append(f"  (or open {prompt.verification_uri_complete})")
    minutes = max(1, round(prompt.expires_in / 60))
    lines.append(f"The code is valid for about {minutes} minute{'s' if minutes > 1 else ''}.")
    print("\n".join(lines), file=sys.stderr, flush=True)


class _ConsentAuth(TokenAuth):
    """What both consent credentials share: the grant, the endpoints, the handover."""

    _flow = ""  # the grant's flow name, set by each class
    _consent_key = ""  # the metadata field of the endpoint a person's consent starts at
    _consent_arg = ""  # the constructor's argument for that endpoint

    def __init__(  # noqa: PLR0917 - one private call site per class
        self,
        client_id: str,
        consent_url: str | None,
        token_url: str | None,
        issuer: str | None,
        client_secret: str | None,
        scope: str | Sequence[str] | None,
        client_auth: ClientAuth,
        token_headers: Mapping[str, str] | None,
        options: AuthOptions,
    ) -> None:
        name = type(self).__name__
        if issuer is not None:
            if consent_url is not None or token_url is not None:
                raise ConfigurationError(
                    f"{name}: give either issuer= or {self._consent_arg}= and token_url=, not both"
                )
            require_text("issuer", issuer)
        elif consent_url is None or token_url is None:
            raise ConfigurationError(
                f"{name} needs issuer= (its endpoints read from the issuer's metadata) or "
                f"both {self._consent_arg}= and token_url="
            )
        insecure = bool(options.get("allow_insecure_http", False))
        if consent_url is not None:
            require_secure_url(
                consent_url,
                what=self._consent_arg,
                allow_insecure_http=insecure,
            )
        if client_auth not in ("body", "basic"):
            raise ConfigurationError(
                f"{name} takes client_auth='body' (the default, also for a public client "
                f"without a secret) or 'basic', got {client_auth!r}"
            )
        template = ConsentGrant(
            token_url=require_text("token_url", token_url if issuer is None else issuer),
            client=client_for(
                client_id,
                client_secret,
                client_auth,
                "form",
                None,
                None,
                options,
                headers=header_table("token_headers", token_headers),
            ),
            flow=self._flow,
            scope=scope_text(scope),
            how_to_login=_LOGIN_HOW,
        )
        grant: Grant = template
        if issuer is not None:
            grant = DiscoveredGrant(issuer=issuer, template=template, allow_insecure_http=insecure)
        self._consent = template
        self._consent_url = consent_url
        self._issuer = issuer
        self._insecure = insecure
        super().__init__(grant, **options)

    def _describe(self) -> str:
        return f"{super()._describe()} client_id={self._consent.client.client_id!r}"

    # --- the login's own requests, through this object's sender ----------------------------

    def _send(self, request: TokenRequest) -> TokenResponse:
        manager = self._manager
        sent_at = manager.clock()
        reply = manager.sender.send(request, timeout=manager.timeout)
        return reply.answer(request, sent_at, manager.clock())

    def _drive(self, flow: Generator[TokenRequest, TokenResponse, Any]) -> Any:
        try:
            request = next(flow)
            while True:
                request = flow.send(self._send(request))
        except StopIteration as stop:
            return stop.value

    def _endpoints(self) -> tuple[str, str]:
        """The endpoint the consent starts at and the token endpoint, discovered if need be."""
        if self._issuer is None:
            assert self._consent_url is not None  # checked by the constructor
            return self._consent_url, self._consent.token_url
        metadata: ServerMetadata = self._drive(discover(self._issuer))
        start = getattr(metadata, self._consent_key)
        if not isinstance(start, str):
            raise ConfigurationError(
                f"the metadata of issuer {self._issuer!r} lists no {self._consent_key}; "
                f"this server does not offer {type(self).__name__}'s flow (or give "
                f"{self._consent_arg}= and token_url=)"
            )
        require_secure_url(start, what=self._consent_key, allow_insecure_http=self._insecure)
        require_secure_url(
            metadata.token_endpoint, what="token_endpoint", allow_insecure_http=self._insecure
        )
        return start, metadata.token_endpoint

    def _keep(self, first: Callable[[str, Client], Flow]) -> Token:
        """Store the login's first token through the renewal path (under the store's lock,
        written before use, `on_token` called) and return it.

        Whichever renewal runs the login's flow (this thread's, or a request's that led the
        flight first), its outcome is recorded: a failure is raised here, and until the flow
        has run (another object of the same store may lead a renewal of its own in between)
        the token is expired and renewed again. One login at a time per object.
        """
        handoff = self._consent.handoff
        ran = LoginOutcome()
        with handoff.turn:
            handoff.put(ran.recording(first))
            try:
                for _ in range(_TURNS):
                    if ran.done:
                        break
                    self._manager.invalidate()  # a token held before this login is replaced
                    if not ran.done:
                        self._manager.token_for_request()
                else:
                    raise ConsentError(
                        f"the login at {origin_of(self.token_url)} could not be stored: other "
                        f"renewals of this credential took its turn {_TURNS} times; run the "
                        "login again"
                    )
            finally:
                handoff.put(None)
        if ran.error is not None:
            raise ran.error
        token = self._manager.token_for_request()  # the login's, or a renewal of its chain
        if token.refresh_token is None:
            logger.warning(
                "the login at %s brought no refresh token: requests work until the access "
                "token expires, then need a new login (ask for scope offline_access, or allow "
                "the client the refresh_token grant)",
                origin_of(self.token_url),
            )
        return token


class OAuth2AuthorizationCode(_ConsentAuth):
    """A person's login in a browser (RFC 6749 §4.1 as RFC 8252 says a native app does it):
    PKCE with S256, a random `state`, a loopback redirect `http://127.0.0.1:PORT/PATH`.

    Run `login()` once (or `renewauth login --config FILE NAME`); the refresh token it brings
    is then renewed and rotated in the store like `OAuth2RefreshToken`'s. Example::

        auth = OAuth2AuthorizationCode("my-cli", issuer="https://idp.example.com",
                                       scope="openid offline_access api")
        auth.login()          # once: a browser opens, the person consents
        session.auth = auth   # from then on, in this and later runs

    Args:
        client_id: the client registered with the loopback redirect URI.
        issuer: the issuer whose metadata names `authorization_endpoint` and `token_endpoint`;
            or give both of:
        authorization_url: the authorization endpoint.
        token_url: the token endpoint.
        client_secret: the client's secret, for a confidential client.
        scope: what to ask for; include `offline_access` where the server wants it for a
            refresh token.
        client_auth: `"body"` (the default) or `"basic"`.
        redirect_path: the path of the loopback redirect URI (`/callback`).
        token_headers: headers for every token request only (an API gateway's key), never
            for the API's requests.
        **options: the options of `TokenAuth` (store, leeway, verify, …).
    """

    _flow = "authorization_code"
    _consent_key = "authorization_endpoint"
    _consent_arg = "authorization_url"

    def __init__(
        self,
        client_id: str,
        *,
        issuer: str | None = None,
        authorization_url: str | None = None,
        token_url: str | None = None,
        client_secret: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        redirect_path: str = "/callback",
        token_headers: Mapping[str, str] | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        if not isinstance(redirect_path, str) or not _PATH.fullmatch(redirect_path):
            raise ConfigurationError(
                f"redirect_path= must be a plain path such as /callback (no query, fragment "
                f"or spaces), got {redirect_path!r}"
            )
        self._redirect_path = redirect_path
        super().__init__(
            client_id,
            authorization_url,
            token_url,
            issuer,
            client_secret,
            scope,
            client_auth,
            token_headers,
            options,
        )

    @classmethod
    def from_issuer(cls, issuer: str, client_id: str, **kwargs: Any) -> Self:
        """As the constructor with `issuer=`: the endpoints read from its metadata."""
        return cls(client_id, issuer=issuer, **kwargs)

    def login(
        self,
        show: Callable[[str], object] | None = None,
        *,
        open_browser: bool = True,
        timeout: float = 300.0,
        acr_values: Sequence[str] = (),
        max_age: int | None = None,
    ) -> Token:
        """Ask a person to consent in a browser, and store the chain it starts.

        The authorization URL goes to `show` (by default printed on stderr) and, with
        `open_browser`, to Python's `webbrowser` (the `BROWSER` variable chooses the
        program). A loopback server waits `timeout` seconds for the browser's callback; one
        whose `state` is not this login's is refused with a 400 page and its code dropped.

        After an API asked for a stronger login (`events.StepUpRequired`), pass its
        `acr_values` and `max_age`: the URL asks the server for that login (OpenID Connect
        `acr_values`, `max_age`), and the new chain replaces the old one.

        Returns:
            The first token (already in the store).

        Raises:
            AccessDenied: the person declined (`error=access_denied` in the callback).
            ConsentError: the callback carried another error.
            ConsentExpired: no callback within `timeout`.
            TokenRequestError: the code exchange was refused.
        """
        acr = () if isinstance(acr_values, str) else tuple(acr_values)
        if isinstance(acr_values, str) or not all(
            isinstance(v, str) and v and not any(c.isspace() for c in v) for v in acr
        ):
            raise ConfigurationError(
                "acr_values= takes a sequence of names without spaces, as "
                "StepUpRequired.acr_values holds"
            )
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0
        ):
            raise ConfigurationError(f"max_age= takes whole seconds >= 0, got {max_age!r}")
        start, _ = self._endpoints()
        verifier, state = new_verifier(), new_state()
        client = self._consent.client
        with LoopbackReceiver(self._redirect_path, state) as receiver:
            redirect_uri = receiver.redirect_uri
            url = authorization_url(
                start,
                client.client_id,
                redirect_uri,
                state,
                verifier,
                self._consent.scope,
                acr_values=acr,
                max_age=max_age,
            )
            (show or print_url)(url)
            if open_browser:
                open_in_browser(url)
            callback = receiver.wait(timeout)
        origin = origin_of(start)
        if callback is None:
            raise ConsentExpired(
                f"no answer from the browser within {timeout:g} s (login at {origin}); run "
                "the login again, or raise timeout=",
                origin=origin,
            )
        if callback.error is not None or callback.code is None:
            kind = AccessDenied if callback.error == "access_denied" else ConsentError
            raise kind(
                f"the login at {origin} ended with {callback.error}; run the login again and "
                "approve it",
                error=callback.error,
                error_description=callback.error_description,
                origin=origin,
            )
        code = callback.code

        def exchange(token_url: str, client: Client) -> Flow:
            params = {"code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
            response = yield client.request(token_url, "authorization_code", params)
            return parse_token_response(
                response,
                grant="authorization_code",
                fix="run the login again (the code was refused: spent, expired, or for "
                "another redirect URI)",
                client_fix="check client_id= and client_secret=",
            )

        return self._keep(exchange)


class OAuth2DeviceCode(_ConsentAuth):
    """A person's login from another device (RFC 8628): for a machine without a browser.

    `login()` shows a URL and a short code; the person enters the code there, and this
    object polls the token endpoint until they have consented. The refresh token it brings is
    then renewed and rotated in the store like `OAuth2RefreshToken`'s.

    Args:
        client_id: the client allowed the device flow.
        issuer: the issuer whose metadata names `device_authorization_endpoint` and
            `token_endpoint`; or give both of:
        device_authorization_url: the device authorization endpoint.
        token_url: the token endpoint.
        client_secret: the client's secret, for a confidential client.
        scope: what to ask for (`offline_access` where the server wants it).
        client_auth: `"body"` (the default) or `"basic"`.
        token_headers: headers for every request to the device authorization and token
            endpoints only (an API gateway's key), never for the API's requests.
        **options: the options of `TokenAuth` (store, leeway, verify, …); `dpop` is not
            offered for this flow yet.
    """

    _flow = "device_code"
    _consent_key = "device_authorization_endpoint"
    _consent_arg = "device_authorization_url"

    def __init__(
        self,
        client_id: str,
        *,
        issuer: str | None = None,
        device_authorization_url: str | None = None,
        token_url: str | None = None,
        client_secret: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        token_headers: Mapping[str, str] | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        if options.get("dpop"):
            raise ConfigurationError(
                "OAuth2DeviceCode does not offer dpop=True yet; leave it out (or use "
                "OAuth2AuthorizationCode)"
            )
        super().__init__(
            client_id,
            device_authorization_url,
            token_url,
            issuer,
            client_secret,
            scope,
            client_auth,
            token_headers,
            options,
        )

    @classmethod
    def from_issuer(cls, issuer: str, client_id: str, **kwargs: Any) -> Self:
        """As the constructor with `issuer=`: the endpoints read from its metadata."""
        return cls(client_id, issuer=issuer, **kwargs)

    def login(
        self,
        show: Callable[[DevicePrompt], object] | None = None,
        *,
        sleep: Callable[[float], object] = time.sleep,
    ) -> Token:
        """Ask a person to consent from another device, and store the chain it starts.

        The verification URI and user code go to `show` (by default printed on stderr, at
        once); then the token endpoint is polled every `interval` seconds (5 unless the
        server says), 5 s more after each `slow_down`, until the person consents, declines,
        or the code expires.

        Args:
            show: receives the `DevicePrompt` to present.
            sleep: waits between polls (`time.sleep`); tests inject their own.

        Returns:
            The first token (already in the store).

        Raises:
            AccessDenied: the person declined (`access_denied`).
            ConsentExpired: the code expired (`expired_token`, or its `expires_in` passed).
            TokenRequestError: the device authorization or a poll was refused otherwise (a
                network error, 5xx or 429 while polling is tried again at the next interval).
        """
        start, token_url = self._endpoints()
        client = self._consent.client
        params = {"scope": self._consent.scope} if self._consent.scope else {}
        asked = client.request(start, "device_code", params)
        # The device authorization request carries no grant_type (RFC 8628 §3.1).
        body = {**_form(asked.body), "client_id": client.client_id}
        body.pop("grant_type", None)
        request = TokenRequest(
            url=start,
            body=urlencode(body).encode(),
            headers=asked.headers,
            grant="device_authorization",
        )
        answer = self._send(request)
        found = parse_device_authorization(answer)
        deadline = answer.received_at + found.expires_in  # its life runs from the answer
        (show or _print_device)(
            DevicePrompt(
                verification_uri=found.verification_uri,
                user_code=found.user_code,
                verification_uri_complete=found.verification_uri_complete,
                expires_in=found.expires_in,
            )
        )
        token = self._poll(found, token_url, sleep, deadline)

        def given(token_url: str, client: Client) -> Flow:
            return token
            yield  # a flow that sends nothing: the token came from the polls

        return self._keep(given)

    def _poll(
        self,
        found: DeviceAuthorization,
        token_url: str,
        sleep: Callable[[float], object],
        deadline: float,
    ) -> Token:
        """Poll until the person decides or the code's life (until `deadline`) runs out.

        A network error, 5xx or 429 ends no login: the next poll waits at least twice as long
        (RFC 8628 §3.5, at most a minute) and at least what `Retry-After` says; if the last
        polls all failed when the code's life ran out, that failure is raised, not the expiry.
        """
        clock = self._manager.clock
        client = self._consent.client
        interval = wait = found.interval
        failed: TokenEndpointUnavailable | None = None
        failures = 0
        while True:
            sleep(max(0.0, min(wait, deadline - clock())))  # never sooner, never past the end
            if clock() >= deadline:
                if failed is not None:
                    raise failed
                raise ConsentExpired(
                    f"the device code expired after {found.expires_in:g} s before anyone "
                    "approved it; run the login again and enter the new code sooner",
                    origin=origin_of(token_url),
                )
            request = client.request(token_url, DEVICE_CODE, {"device_code": found.device_code})
            try:
                response = self._send(request)
                outcome = poll_outcome(response, interval, client_fix="check client_id=")
            except TokenEndpointUnavailable as exc:
                failed, failures = exc, failures + 1
                log = logger.warning if failures == _WARN_AFTER else logger.info
                log(
                    "polling %s for the login failed %d time%s (HTTP %s); trying again",
                    exc.origin,
                    failures,
                    "" if failures == 1 else "s",
                    exc.status or "-",
                )
                wait = max(min(wait * 2, _MAX_BACKOFF), interval, exc.retry_after or 0.0)
                continue
            if isinstance(outcome, Token):
                return outcome
            failed, failures = None, 0
            interval = wait = outcome


_WARN_AFTER = 3  # failed polls in a row before a WARNING (the first ones are at INFO)
_MAX_BACKOFF = 60.0  # seconds between polls after failures, at most (Retry-After may ask more)


def _form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode()))
