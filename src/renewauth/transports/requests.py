"""requests: signing through `AuthBase.__call__` and a response hook, as `HTTPDigestAuth` does.

`__call__` sets the header and registers a hook; the hook sees the answer and, when it means
"token rejected", renews, rewinds the body and resends the prepared request once through the
same adapter, appending the rejected answer to `history`. Per-request state (which token was
sent, whether this is the resend) lives on the prepared request, never on the shared auth
object. A redirect creates a new prepared request without that state, so an answer from a
redirect target never triggers a renewal; a deep copy or a pickle of the prepared request
keeps it (see `_Signature`).

The header value is a `_Signature`, a `str` that also remembers its token. A request signed
now may wait in urllib3's pool (`pool_block=True`) longer than a short token lives, so the
token is checked again when the header is written: http.client calls `encode()` on every
header value as it writes the request, after urllib3 handed it a connection, and
`_Signature.encode` writes the token that is current then. An adapter that never writes
through http.client (a mock, a canned answer) reads the value as the plain string it is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.cookies import extract_cookies_to_jar
from requests.utils import rewind_body

from .._urls import origin_of
from ..dpop import DpopKey
from ..manager import TokenManager
from ..token import Token
from ._signing import (
    STEP_UP_STATUSES,
    is_https_upgrade,
    needs_dpop_nonce,
    report_step_up,
    routed_url,
    should_resend,
)

__all__ = ["RequestsSigning", "is_replayable"]

logger = logging.getLogger(__name__)

_STATE = "_renewauth_signature"


def _carried(token: Token) -> Token:
    """`token` as a pickled request carries it: what its header and its 401 need (the access
    token, the public fields). The other secrets (the `repr=False` fields: the refresh
    token, the raw response) never leave this process in a request."""
    kept = {
        item.name: getattr(token, item.name)
        for item in dataclasses.fields(token)
        if item.init and (item.repr or item.name == "access_token")
    }
    return Token(**kept)


class _Signature(str):
    """The `Authorization` value renewauth sets, and what the request carries with it.

    Attributes: `token`, the token the header holds (replaced when it is written, if it
    aged meanwhile); `url`, where the request goes after routing; `addressed`, the URL the
    caller addressed; `resent`, whether this is the one resend.

    A request that is deep-copied or pickled (a cache, a recorder, a retry library) keeps
    its signature, so its 401 renews and resends as the original's would. A deep copy asks
    the same manager when it leaves; an unpickled one has none (the manager, with its
    locks, stays in its process) and leaves with the token it carries.
    """

    token: Token
    url: str
    addressed: str
    resent: bool = False
    _manager: TokenManager | None = None

    def __reduce__(self) -> tuple[object, ...]:
        state = {name: value for name, value in vars(self).items() if name != "_manager"}
        state["token"] = _carried(self.token)
        return _Signature, (str(self),), state

    def __deepcopy__(self, memo: dict[int, object]) -> _Signature:
        copied = _Signature(self)
        copied.__dict__.update(vars(self))  # frozen values, and the manager is shared
        return copied

    def leaving(self) -> Token:
        """The token the request leaves with: the one signed, unless it aged meanwhile."""
        if self._manager is None:  # unpickled: no manager to ask
            return self.token
        token = self._manager.token_at_departure(self.token)
        if token is not self.token:
            logger.debug("token replaced as the request left: it aged while queued")
            self.token = token
        return token

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """The header as it is written: with the token that is current now."""
        return self.leaving().authorization.encode(encoding, errors)


class _Proof(str):
    """The `DPoP` header value: a proof for the token of its `_Signature`, made anew when it
    is written if that token was replaced as the request left (`ath` names the token)."""

    signature: _Signature
    token: Token
    method: str
    key: DpopKey | None = None

    def __reduce__(self) -> tuple[object, ...]:
        # As `_Signature`: the key stays in this process, and the unpickled proof is written
        # as it is (its signature has no manager, so its token never changes).
        state = {name: value for name, value in vars(self).items() if name != "key"}
        state["token"] = _carried(self.token)
        return _Proof, (str(self),), state

    def __deepcopy__(self, memo: dict[int, object]) -> _Proof:
        copied = _Proof(self)
        copied.__dict__.update(vars(self))  # the key is shared: one key per auth object
        copied.signature = copy.deepcopy(self.signature, memo)  # the header's copy
        return copied

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        token = self.signature.leaving()
        if token is self.token or self.key is None:
            return str.encode(self, encoding, errors)
        proof = self.key.proof(self.method, self.signature.url, access_token=token.access_token)
        return proof.encode(encoding, errors)


def _proof(key: DpopKey, signature: _Signature, method: str) -> _Proof:
    token = signature.token
    proof = _Proof(key.proof(method, signature.url, access_token=token.access_token))
    proof.signature, proof.token, proof.method, proof.key = signature, token, method, key
    return proof


def _signature(
    manager: TokenManager, token: Token, url: str, addressed: str, *, resent: bool = False
) -> _Signature:
    signature = _Signature(token.authorization)
    signature._manager, signature.token, signature.url = manager, token, url
    signature.addressed = addressed
    if resent:
        signature.resent = True
    return signature


def is_replayable(request: requests.PreparedRequest) -> bool:
    """Whether requests can send `request`'s body again (for a resend after a renewal)."""
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return True
    # A file-like body whose start position requests recorded can be rewound; a generator
    # or a stream without `tell` cannot.
    return isinstance(getattr(request, "_body_position", None), int)


class RequestsSigning(requests.auth.AuthBase):
    """The `requests.auth.AuthBase` side of every renewauth auth object."""

    _manager: TokenManager
    _retry_statuses: Collection[int]
    _api_headers: Mapping[str, str]
    _home_origin: str | None
    _dpop: DpopKey | None = None
    # What this transport keeps on the auth object for this process only, which a pickled
    # or copied auth object leaves behind (`TokenAuth.__reduce__`): nothing, as per-request
    # state lives on the prepared request.
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._manager.token_for_request()
        addressed = request.url or ""
        self._sign_prepared(request, addressed, token)
        # Appended directly (`register_hook` checks against an ABC on every request), and
        # once: a prepared request sent again is signed again, not hooked twice.
        hooks = request.hooks["response"]
        if self._on_response not in hooks:
            hooks.append(self._on_response)
        return request

    def _sign_prepared(
        self,
        request: requests.PreparedRequest,
        addressed: str,
        token: Token,
        *,
        resent: bool = False,
    ) -> _Signature:
        if self._api_headers:
            request.headers.update(self._api_headers)
        if token.api_origin is not None:
            target = routed_url(addressed, self._home_origin, token.api_origin)
            if target is not None:
                request.url = target
        signature = _signature(self._manager, token, request.url or "", addressed, resent=resent)
        request.headers["Authorization"] = signature
        if self._dpop is not None:
            request.headers["DPoP"] = _proof(self._dpop, signature, request.method or "GET")
        setattr(request, _STATE, signature)
        return signature

    def _drop_api_headers_across_origins(
        self, response: requests.Response, *, also: requests.PreparedRequest | None = None
    ) -> None:
        # requests drops Authorization on a redirect to another origin, but not an API key:
        # take it off the request it is about to copy for the redirect.
        source = urlsplit(response.request.url or "")
        target = urlsplit(urljoin(source.geturl(), response.headers.get("location", "")))
        try:  # requests keeps the token on an http -> https upgrade, and the key goes too
            upgrade = source.hostname == target.hostname and is_https_upgrade(
                source.scheme, source.port, target.scheme, target.port
            )
        except ValueError:  # a Location with a port that is no number: not an upgrade
            upgrade = False
        if not upgrade and origin_of(target.geturl()) != origin_of(source.geturl()):
            names = [*self._api_headers, "DPoP"] if self._dpop is not None else self._api_headers
            for request in (response.request, also):
                for name in names:
                    if request is not None:
                        request.headers.pop(name, None)

    def _on_response(self, response: requests.Response, **send_options: Any) -> requests.Response:
        if self._dpop is not None and needs_dpop_nonce(
            self._dpop, response.request.url or "", response.status_code, response.headers
        ):
            signature: _Signature | None = getattr(response.request, _STATE, None)
            if signature is not None and not signature.resent and is_replayable(response.request):
                logger.debug("the API asked for a DPoP nonce; resending once with it")
                return self._resend(response, signature, signature.token, send_options)
        if response.status_code not in self._retry_statuses:  # the common case, decided first
            if self._manager.unproven is not None and response.status_code < 500:
                accepted: _Signature | None = getattr(response.request, _STATE, None)
                if accepted is not None:
                    self._manager.confirm(accepted.token)
            if response.status_code in STEP_UP_STATUSES:
                self._report_step_up_requests(response)
            if (self._api_headers or self._dpop is not None) and response.is_redirect:
                self._drop_api_headers_across_origins(response)
            return response
        request = response.request
        signature = getattr(request, _STATE, None)
        if signature is None or not should_resend(
            response.status_code,
            self._retry_statuses,
            can_renew=self._manager.grant.can_renew,
            signed_url=signature.url,
            answered_url=request.url or "",
            carried_token=request.headers.get("Authorization") is signature,
            already_resent=signature.resent,
            challenge=response.headers.get("WWW-Authenticate"),
            replayable=is_replayable(request),
            log=logger,
            on_event=self._manager.on_event,
        ):
            return response
        try:
            token = self._manager.renew_rejected(signature.token)
        except BaseException:
            response.close()  # release the rejected answer's connection
            raise
        if token is None:
            return response  # renewing again so soon would not help: the 401 goes back
        logger.debug("%d from the API; renewed and resending once", response.status_code)
        return self._resend(response, signature, token, send_options)

    def _report_step_up_requests(self, response: requests.Response) -> None:
        """Report an answer that asks for a stronger login (`report_step_up`); it goes back
        to the caller as it is. No hook sees the answer to a resend, so that one is reported
        here too."""
        request = response.request
        signature: _Signature | None = getattr(request, _STATE, None)
        if signature is not None:
            report_step_up(
                response.status_code,
                response.headers.get("WWW-Authenticate"),
                signed_url=signature.url,
                answered_url=request.url or "",
                carried_token=request.headers.get("Authorization") is signature,
                on_event=self._manager.on_event,
                log=logger,
            )

    def _resend(
        self,
        response: requests.Response,
        signature: _Signature,
        token: Token,
        send_options: Mapping[str, Any],
    ) -> requests.Response:
        """Send the request of `response` once more, signed with `token`."""
        request = response.request
        # Read and release the rejected answer: its connection carries the resend.
        response.content  # noqa: B018
        response.close()
        if request.body is not None and not isinstance(request.body, bytes | str):
            rewind_body(request)

        resend = request.copy()
        jar = resend._cookies  # type: ignore[attr-defined]  # requests keeps the jar private
        extract_cookies_to_jar(jar, request, response.raw)  # type: ignore[no-untyped-call]
        resend.prepare_cookies(jar)  # as HTTPDigestAuth does
        resent = self._sign_prepared(resend, signature.addressed, token, resent=True)
        # requests follows a redirect of the resend from the *original* prepared request:
        # give it the new token too, or a same-origin redirect would carry the rejected one;
        # as a signature of its own, not yet resent, for a caller who sends it again.
        original = _signature(self._manager, token, signature.url, signature.addressed)
        request.headers["Authorization"] = original
        setattr(request, _STATE, original)
        retried: requests.Response = response.connection.send(resend, **send_options)
        self._manager.resent(origin_of(str(resend.url)), response.status_code)
        retried.history.append(response)
        retried.request = resend
        if retried.status_code not in self._retry_statuses and retried.status_code < 500:
            self._manager.confirm(resent.token)
        if retried.status_code in STEP_UP_STATUSES:
            self._report_step_up_requests(retried)
        if (self._api_headers or self._dpop is not None) and retried.is_redirect:
            # That redirect is built from the original request, whose headers hold the key.
            self._drop_api_headers_across_origins(retried, also=request)
        return retried
